"""The objective ablation: pairwise vs distill vs full, several seeds each, with intervals.

    omniretriever ablation --data data --seed 0 --seed 1 --seed 2 --steps 300 --report docs/RESULTS.md

Trains and evaluates every (objective, seed) under OUT_DIR (a finished run is reused, an interrupted
one resumed), then writes a markdown report: AVG-single/dual/all and per-direction R@1 as mean and
95% t-interval over seeds.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from model.config import load_config
from model.defaults import BATCH_SIZE, TOKEN_KEEP, UNMASKED_STEPS
from model.evaluate import evaluate
from model.losses import OBJECTIVES
from model.modalities import DIRECTION_NAMES
from model.store import latest_checkpoint
from model.train import TrainConfig, train

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


def run_one(data: Path, out_dir: Path, objective: str, seed: int, steps: int, config: str, workers: int | None) -> dict:
    run = out_dir / f"{objective}-seed{seed}"
    results_path = run / "results.json"
    cfg = TrainConfig(data=data, out=run, config=config, objective=objective, steps=steps, seed=seed, workers=workers)
    checkpoint = latest_checkpoint(run)
    if checkpoint is not None:  # a finished or interrupted run is reused only if it follows this recipe
        earlier = json.loads((checkpoint / "state.json").read_text()).get("train_config", {})
        recipe = {k: v for k, v in cfg.to_dict().items() if k not in ("workers", "cache_dir")}
        changed = sorted(k for k, v in recipe.items() if earlier.get(k) != v) + _changed_architecture(run, config)
        if changed:
            raise FileExistsError(f"{run} was trained with a different recipe ({', '.join(changed)} differ): "
                                  "choose another --out or remove it")
    if results_path.exists():
        return json.loads(results_path.read_text())
    started = time.perf_counter()
    if not (run / "model" / "config.json").exists():
        train(cfg, resume=checkpoint is not None)
    results = evaluate(run, data, "test", results_path, workers=workers)
    results["wall_seconds"] = time.perf_counter() - started
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def fmt(values: list[float]) -> str:
    m, h = mean_ci(values)
    return f"{m:.2f}" if np.isnan(h) else f"{m:.2f} ± {h:.2f}"


def render(table: dict[str, list[dict]], meta: dict) -> str:
    lines = [
        "# Results: objective ablation",
        "",
        f"Produced by `{meta['command']}` on {meta['when']} ({meta['machine']}, {meta['threads']} CPU threads, "
        f"torch {meta['torch']}; {meta['recipe']}). Each cell is the mean over seeds {meta['seeds']} ± the half-width of a 95% "
        "t-interval over seeds; R@1 in percent on the test split "
        f"({meta['n_items']} items, chance {100 / meta['n_items']:.2f}).",
        "",
        "| objective | AVG-single | AVG-dual | AVG-all | train+eval min/run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for objective, runs in table.items():
        lines.append(f"| {objective} | {fmt([r['AVG-single'] for r in runs])} | {fmt([r['AVG-dual'] for r in runs])} | "
                     f"{fmt([r['AVG-all'] for r in runs])} | {np.mean([r.get('wall_seconds', np.nan) for r in runs]) / 60:.1f} |")
    lines += ["", "Per direction, R@1:", "", "| objective | " + " | ".join(DIRECTION_NAMES) + " |",
              "| --- |" + " --- |" * len(DIRECTION_NAMES)]
    for objective, runs in table.items():
        cells = [fmt([r["directions"][d]["R@1"] for r in runs]) for d in DIRECTION_NAMES]
        lines.append(f"| {objective} | " + " | ".join(cells) + " |")
    lines += ["", "Per-run results (results.json and results.png) are under `" + meta["out_dir"] + "`. Wall times are as "
              "measured, including decoding and any other load on the machine at the time; `bench/train.py` is the "
              "controlled side-by-side step-time comparison.", ""]
    return "\n".join(lines)


def run_ablation(data: Path, out_dir: Path, report: Path, seeds: list[int], steps: int, config: str = "tiny",
                 objectives: tuple[str, ...] = OBJECTIVES, workers: int | None = None, command: str = "") -> dict:
    table = {o: [run_one(data, out_dir, o, s, steps, config, workers) for s in seeds] for o in objectives}
    meta = {"command": command or f"omniretriever ablation --seeds {' '.join(map(str, seeds))} --steps {steps}",
            "when": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "seeds": seeds, "n_items": next(iter(table.values()))[0]["n_items"],
            "out_dir": str(out_dir),
            "recipe": f"batch {BATCH_SIZE}, {TOKEN_KEEP:g} of the video and audio tokens kept per view, "
                      f"all of them in the last {UNMASKED_STEPS:.0%} of the steps"}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(table, meta))
    summary = {o: {k: mean_ci([r[k] for r in runs]) for k in ("AVG-single", "AVG-dual", "AVG-all")} for o, runs in table.items()}
    (out_dir / "ablation.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=2) + "\n")
    return summary
