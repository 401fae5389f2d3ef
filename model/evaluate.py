"""OmniRetriever-Bench evaluation: embed the six views of every item once, score all 12 directions.

results.json:
    {"directions": {"t2v": {"R@1", "R@5", "R@10", "R@1_ci95", "MdR", "MnR", "MRR", "NDCG@10", ...}, ...},
     "AVG-single": mean R@1 of the 6 single directions, "AVG-dual": of the 6 dual, "AVG-all": their mean,
     "nonfinite_rows": {view: how many of its embeddings hold a NaN or inf}, "split", "n_items", "model", "data"}
Beside it results.png (R@k heatmap and R@1 bars with 95% intervals), and a console table.

A non-finite embedding (a diverged model) ranks last wherever it is the query or the gold, and never
beats another item's gold (model/metrics.py), so it can only lower a score. Every view with such rows
is counted in "nonfinite_rows" and named in a warning on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from model.data import ClipBank, load_bank, make_batch
from model.manifest import existing_split
from model.metrics import direction_metrics, finite_rows
from model.modalities import (BENCH_VIEWS, DIRECTION_NAMES, DIRECTIONS, DUAL_DIRECTIONS, MODALITIES, SINGLE_DIRECTIONS,
                              VIEWS)
from model.store import LoadedModel, load_model


@torch.no_grad()
def embed_views(model: LoadedModel, bank: ClipBank, views: tuple[str, ...] = BENCH_VIEWS,
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """view -> (N, E) embeddings; each view of each item embedded exactly once."""
    model.encoder.eval()
    out: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    for start in range(0, len(bank), batch_size):
        idx = list(range(start, min(start + batch_size, len(bank))))
        batch = make_batch(bank, idx, model.tokenizer)
        needed = tuple(m for m in MODALITIES if any(m in VIEWS[v] for v in views))
        tokens = model.encoder.tokenize(batch, needed)  # once per batch, shared by every view
        for view in views:
            out[view].append(model.encoder.fuse(tokens, VIEWS[view]))
    return {v: torch.cat(chunks) for v, chunks in out.items()}


def nonfinite_rows(emb: dict[str, torch.Tensor]) -> dict[str, int]:
    """view -> how many of its embeddings hold a NaN or inf (they rank last, see model/metrics.py)."""
    return {view: int((~finite_rows(z)).sum()) for view, z in emb.items()}


def warn_nonfinite(counts: dict[str, int], n_items: int) -> None:
    """One warning on stderr per view with non-finite rows."""
    for view, bad in counts.items():
        if bad:
            print(f"warning: {bad} of {n_items} rows of view {view!r} are not finite (NaN or inf): they rank last",
                  file=sys.stderr)


def score_embeddings(emb: dict[str, torch.Tensor], n_boot: int = 1000, seed: int = 0) -> dict:
    """All 12 directions plus AVG-single, AVG-dual, AVG-all from per-view embeddings, and how many
    rows of each view are not finite."""
    directions = {name: direction_metrics(emb[DIRECTIONS[name].query], emb[DIRECTIONS[name].gallery],
                                          n_boot=n_boot, seed=seed) for name in DIRECTION_NAMES}
    single = float(np.mean([directions[d]["R@1"] for d in SINGLE_DIRECTIONS]))
    dual = float(np.mean([directions[d]["R@1"] for d in DUAL_DIRECTIONS]))
    return {"directions": directions, "AVG-single": single, "AVG-dual": dual, "AVG-all": (single + dual) / 2,
            "nonfinite_rows": nonfinite_rows(emb)}


def print_results(results: dict, console: Console | None = None, title: str = "OmniRetriever-Bench") -> None:
    table = Table(title=f"{title}: {results.get('n_items', '?')} items, chance R@1 "
                        f"{next(iter(results['directions'].values()))['chance_R@1']:.2f}")
    for col in ("dir", "R@1", "95% CI", "R@5", "R@10", "MdR", "MnR", "MRR", "NDCG@10"):
        table.add_column(col, justify="left" if col == "dir" else "right", no_wrap=True)
    for name in DIRECTION_NAMES:
        m = results["directions"][name]
        lo, hi = m["R@1_ci95"]
        table.add_row(name, f"{m['R@1']:.2f}", f"{lo:.1f}-{hi:.1f}", f"{m['R@5']:.2f}", f"{m['R@10']:.2f}",
                      f"{m['MdR']:.1f}", f"{m['MnR']:.1f}", f"{m['MRR']:.3f}", f"{m['NDCG@10']:.3f}",
                      end_section=name == SINGLE_DIRECTIONS[-1])
    table.caption = (f"AVG-single {results['AVG-single']:.2f}   AVG-dual {results['AVG-dual']:.2f}   "
                     f"AVG-all {results['AVG-all']:.2f}")
    (console or Console()).print(table)


def plot_results(results: dict, path: Path) -> Path:
    """A heatmap of R@1/5/10 per direction and R@1 bars with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(DIRECTION_NAMES)
    grid = np.array([[results["directions"][d][k] for d in names] for k in ("R@1", "R@5", "R@10")])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1, 1.4]})
    im = ax1.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax1.set_xticks(range(12), names)
    ax1.set_yticks(range(3), ["R@1", "R@5", "R@10"])
    for (i, j), v in np.ndenumerate(grid):
        ax1.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
    fig.colorbar(im, ax=ax1, label="%")
    r1 = grid[0]
    ci = np.array([results["directions"][d]["R@1_ci95"] for d in names])
    colors = ["tab:blue"] * 6 + ["tab:orange"] * 6
    ax2.bar(range(12), r1, yerr=[r1 - ci[:, 0], ci[:, 1] - r1], color=colors, capsize=3)
    ax2.axhline(results["directions"][names[0]]["chance_R@1"], color="grey", ls=":", label="chance")
    ax2.set_xticks(range(12), names)
    ax2.set_ylabel("R@1 (%) with 95% CI")
    ax2.set_title(f"AVG-single {results['AVG-single']:.1f} (blue)   AVG-dual {results['AVG-dual']:.1f} (orange)   "
                  f"AVG-all {results['AVG-all']:.1f}")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON atomically (a temp file beside it, then renamed): readers see the
    old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def evaluate(model_path: str | Path, data: str | Path, split: str = "test", out: str | Path | None = None, *,
             cache_dir: Path | None = None, workers: int | None = None, limit: int | None = None,
             progress: bool = True, n_boot: int = 1000) -> dict:
    """Score a saved model on a split; writes results.json and results.png when `out` is given.

    The model and the split's manifest are checked before anything is decoded. Views with non-finite
    embeddings are counted in results["nonfinite_rows"] and warned about on stderr; those rows rank
    last, so they never raise a score."""
    model = load_model(model_path)
    existing_split(data, split)
    bank = load_bank(data, split, model.config, cache_dir=cache_dir, workers=workers, limit=limit, progress=progress)
    results = score_embeddings(embed_views(model, bank), n_boot=n_boot)
    results.update(split=split, n_items=len(bank), model=str(model.path), data=str(data))
    warn_nonfinite(results["nonfinite_rows"], len(bank))
    if out is not None:
        out = write_json(out, results)
        results["plot"] = str(plot_results(results, out.with_suffix(".png")))
    return results
