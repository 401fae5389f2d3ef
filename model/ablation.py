"""The objective ablation: pairwise vs distill vs full, several seeds each, with intervals.

    omniretriever ablation --data data --seed 0 --seed 1 --seed 2 --steps 300 --report docs/RESULTS.md

Trains and evaluates every (objective, seed) under OUT_DIR (a finished run is reused, an interrupted
one resumed), then writes a markdown report: AVG-single/dual/all and per-direction R@1 as mean and
95% t-interval over seeds.

A run that fails (its training diverges, or its embeddings are not finite) is never a score: it is
recorded in RUN/failed.json with its reason, the other runs go on, the report lists it, and the means
are over the runs that finished ("2 of 3"); an objective none of whose runs finished says so instead of
numbers. A recorded failure is reused like a finished run: remove RUN to try it again.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.config import load_config
from model.defaults import BATCH_SIZE, TOKEN_KEEP, UNMASKED_STEPS
from model.errors import TrainingDiverged
from model.evaluate import evaluate
from model.modalities import DIRECTION_NAMES
from model.store import latest_checkpoint
from model.train import train
from model.train_config import OBJECTIVES, TrainConfig

FAILED_RECORD = "failed.json"  # in a run directory: why the run has no score
AVERAGES = ("AVG-single", "AVG-dual", "AVG-all")

# two-sided 97.5% quantiles of Student's t by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width nan for a single value."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    t = _T975.get(len(v) - 1, 1.96)
    return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v)))


def _changed_architecture(run: Path, config: str) -> list[str]:
    """Fields of the architecture `config` names today that differ from the one `run` was trained
    with (a packaged config such as tiny can change between releases). vocab_size is set by the run's
    tokenizer, so it is not compared."""
    saved = run / "model" / "config.json"
    if not saved.exists():
        return []  # an interrupted run: resuming checks the architecture against its checkpoint
    then, now = json.loads(saved.read_text()), load_config(config).to_dict()
    fields = sorted({*then, *now} - {"vocab_size"})
    return [f"architecture {k}" for k in fields if then.get(k) != now.get(k)]


def failed(result: dict) -> bool:
    """Whether a run_one result is a failure record rather than a score."""
    return "failed" in result


def _recipe(cfg: TrainConfig) -> dict:
    """What makes two runs the same experiment (not where or how fast they decode)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("workers", "cache_dir")}


def _record_failure(run: Path, cfg: TrainConfig, reason: str) -> dict:
    record = {"objective": cfg.objective, "seed": cfg.seed, "failed": reason, "train_config": _recipe(cfg)}
    run.mkdir(parents=True, exist_ok=True)
    (run / FAILED_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _nonfinite_views(results: dict) -> str | None:
    bad = {view: n for view, n in results.get("nonfinite_rows", {}).items() if n}
    if not bad:
        return None
    views = ", ".join(f"view {view!r} {n} of {results['n_items']} rows" for view, n in bad.items())
    return f"the trained model's test embeddings are not finite ({views})"


def _check_recipe(run: Path, cfg: TrainConfig) -> None:
    """A finished, interrupted or failed run is reused only if it follows this recipe."""
    checkpoint, failure = latest_checkpoint(run), run / FAILED_RECORD
    if checkpoint is not None:
        earlier = json.loads((checkpoint / "state.json").read_text()).get("train_config", {})
    elif failure.exists():  # it may have failed before its first checkpoint
        earlier = json.loads(failure.read_text()).get("train_config", {})
    else:
        return
    changed = sorted(k for k, v in _recipe(cfg).items() if earlier.get(k) != v) + _changed_architecture(run, cfg.config)
    if changed:
        raise FileExistsError(f"{run} was trained with a different recipe ({', '.join(changed)} differ): "
                              "choose another --out or remove it")


def run_one(data: Path, out_dir: Path, objective: str, seed: int, steps: int, config: str, workers: int | None) -> dict:
    """Train and evaluate one (objective, seed): its results, or its failure record
    {"objective", "seed", "failed": reason, "train_config"} (also in RUN/failed.json)."""
    run = out_dir / f"{objective}-seed{seed}"
    results_path = run / "results.json"
    cfg = TrainConfig(data=data, out=run, config=config, objective=objective, steps=steps, seed=seed, workers=workers)
    _check_recipe(run, cfg)
    for done in (run / FAILED_RECORD, results_path):  # a failure stands even beside the results that showed it
        if done.exists():
            return json.loads(done.read_text())
    started = time.perf_counter()
    if not (run / "model" / "config.json").exists():
        try:
            train(cfg, resume=latest_checkpoint(run) is not None)
        except TrainingDiverged as exc:
            return _record_failure(run, cfg, str(exc))
    results = evaluate(run, data, "test", results_path, workers=workers)
    reason = _nonfinite_views(results)
    if reason is not None:
        return _record_failure(run, cfg, reason)
    results["wall_seconds"] = time.perf_counter() - started
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def fmt(values: list[float]) -> str:
    m, h = mean_ci(values)
    return f"{m:.2f}" if np.isnan(h) else f"{m:.2f} ± {h:.2f}"


def _row(objective: str, runs: list[dict], cells: int, cell: Callable[[list[dict]], list[str]]) -> str:
    """One table row: `cell(finished runs)` as its `cells` cells, or, when no run finished, a row saying so."""
    ok = [r for r in runs if not failed(r)]
    if not ok:
        return f"| {objective} | 0 of {len(runs)} | all {len(runs)} runs failed |" + " – |" * (cells - 1)
    return f"| {objective} | {len(ok)} of {len(runs)} | " + " | ".join(cell(ok)) + " |"


def _failures(table: dict[str, list[dict]]) -> list[str]:
    rows = [r for runs in table.values() for r in runs if failed(r)]
    if not rows:
        return []
    lines = ["", "Failed runs (not in the means above):", "", "| objective | seed | reason |", "| --- | --- | --- |"]
    return lines + [f"| {r['objective']} | {r['seed']} | {r['failed'].replace('|', '/')} |" for r in rows]


def render(table: dict[str, list[dict]], meta: dict) -> str:
    n_items = meta["n_items"]
    gallery = f"{n_items} items, chance {100 / n_items:.2f}" if n_items else "no run finished"
    lines = [
        "# Results: objective ablation",
        "",
        f"Produced by `{meta['command']}` on {meta['when']} ({meta['machine']}, {meta['threads']} CPU threads, "
        f"torch {meta['torch']}; {meta['recipe']}). Each cell is the mean over the seeds {meta['seeds']} whose runs "
        "finished (column runs) ± the half-width of a 95% t-interval over them; R@1 in percent on the test split "
        f"({gallery}).",
        "",
        "| objective | runs | AVG-single | AVG-dual | AVG-all | train+eval min/run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for objective, runs in table.items():
        lines.append(_row(objective, runs, 4, lambda ok: [fmt([r[k] for r in ok]) for k in AVERAGES]
                          + [f"{np.mean([r.get('wall_seconds', np.nan) for r in ok]) / 60:.1f}"]))
    lines += ["", "Per direction, R@1:", "", "| objective | runs | " + " | ".join(DIRECTION_NAMES) + " |",
              "| --- | --- |" + " --- |" * len(DIRECTION_NAMES)]
    for objective, runs in table.items():
        lines.append(_row(objective, runs, len(DIRECTION_NAMES),
                          lambda ok: [fmt([r["directions"][d]["R@1"] for r in ok]) for d in DIRECTION_NAMES]))
    lines += _failures(table)
    lines += ["", "Per-run results (results.json and results.png, or failed.json) are under `" + meta["out_dir"] + "`. "
              "Wall times are as measured, including decoding and any other load on the machine at the time; "
              "`bench/train.py` is the controlled side-by-side step-time comparison.", ""]
    return "\n".join(lines)


def summarize(runs: list[dict]) -> dict:
    """How many of an objective's runs finished, and (mean, half-width) of each average over those
    (None when none did)."""
    ok = [r for r in runs if not failed(r)]
    means = {k: mean_ci([r[k] for r in ok]) if ok else None for k in AVERAGES}
    return {"runs": len(runs), "finished": len(ok), **means}


def run_ablation(data: Path, out_dir: Path, report: Path, seeds: list[int], steps: int, config: str = "tiny",
                 objectives: tuple[str, ...] = OBJECTIVES, workers: int | None = None, command: str = "") -> dict:
    """Every (objective, seed) run, the report and OUT_DIR/ablation.json; returns objective -> summarize().
    Failed runs are in the report and in ablation.json's "failed", never in the means."""
    table = {o: [run_one(data, out_dir, o, s, steps, config, workers) for s in seeds] for o in objectives}
    scored = [r for runs in table.values() for r in runs if not failed(r)]
    meta = {"command": command or f"omniretriever ablation --seeds {' '.join(map(str, seeds))} --steps {steps}",
            "when": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "seeds": seeds, "n_items": scored[0]["n_items"] if scored else None,
            "out_dir": str(out_dir),
            "recipe": f"batch {BATCH_SIZE}, {TOKEN_KEEP:g} of the video and audio tokens kept per view, "
                      f"all of them in the last {UNMASKED_STEPS:.0%} of the steps"}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(table, meta))
    summary = {o: summarize(runs) for o, runs in table.items()}
    failures = [{k: v for k, v in r.items() if k != "train_config"}
                for runs in table.values() for r in runs if failed(r)]
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "summary": summary, "failed": failures}
    (out_dir / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    return summary
