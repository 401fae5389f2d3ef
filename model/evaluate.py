"""OmniRetriever-Bench evaluation: embed the six views of every item once, score all 12 directions.

results.json:
    {"directions": {"t2v": {"R@1", "R@5", "R@10", "R@1_ci95", "MdR", "MnR", "MRR", "NDCG@10", ...}, ...},
     "AVG-single": mean R@1 of the 6 single directions, "AVG-dual": of the 6 dual, "AVG-all": their mean,
     "nonfinite_rows": {view: how many of its embeddings hold a NaN or inf}, "split", "n_items", "model", "data"}
Beside it results.png (R@k heatmap and R@1 bars with 95% intervals), and a console table.

Items without video or without audio (public benchmarks bring them) are scored honestly: a direction
queries only the items holding both of its views and ranks them against every item holding the gallery
view ("n" and "n_gallery" per direction); no item is embedded with the modality it lacks. A direction
nothing can be queried in is not scored ("unscored") and the averages are over those that are.

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

from model.benchmarks import BENCHMARKS
from model.data import ClipBank, load_bank, make_batch
from model.manifest import existing_split
from model.metrics import direction_metrics, direction_metrics_multi, finite_rows
from model.modalities import (BENCH_VIEWS, DIRECTION_NAMES, DIRECTIONS, DUAL_DIRECTIONS, MODALITIES, SINGLE_DIRECTIONS,
                              VIEWS, T)
from model.store import LoadedModel, load_model


@torch.no_grad()
def embed_views(model: LoadedModel, bank: ClipBank, views: tuple[str, ...] = BENCH_VIEWS,
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """view -> (N, E) embeddings; each view of each item embedded exactly once. An item without one of a
    view's modalities (bank.has(view) False) is not embedded in that view: its row is NaN."""
    rows = {view: bank.has(view) for view in views}
    picked = embed_rows(model, bank, {view: [VIEWS[view] if ok else () for ok in rows[view].tolist()] for view in views},
                        batch_size)
    return {view: picked[view] for view in views}


@torch.no_grad()
def embed_rows(model: LoadedModel, bank: ClipBank, plan: dict[str, list[tuple[str, ...]]],
               batch_size: int = 256) -> dict[str, torch.Tensor]:
    """key -> (N, E): row i embedded from the modalities plan[key][i] in one joint forward (NaN where they
    are empty: the row is not embedded). Rows of one batch that share a modality set share a forward; each
    batch is tokenised once for every key."""
    model.encoder.eval()
    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(bank), batch_size):
        idx = list(range(start, min(start + batch_size, len(bank))))
        batch = make_batch(bank, idx, model.tokenizer)
        needed = tuple(m for m in MODALITIES if any(m in mods for p in plan.values() for mods in p[start: idx[-1] + 1]))
        tokens = model.encoder.tokenize(batch, needed) if needed else {}  # once per batch, shared by every key
        for key, mods_of in plan.items():
            groups: dict[tuple[str, ...], list[int]] = {}
            for j, i in enumerate(idx):
                groups.setdefault(mods_of[i], []).append(j)
            for mods, js in groups.items():
                if not mods:
                    continue
                whole = len(js) == len(idx)
                sub = tokens if whole else {m: tuple(t[js] for t in tokens[m]) for m in mods}
                z = model.encoder.fuse(sub, mods)
                if key not in out:
                    out[key] = torch.full((len(bank), z.shape[1]), float("nan"), dtype=z.dtype)
                out[key][torch.as_tensor(js) + start] = z
    dim = next(iter(out.values())).shape[1] if out else model.config.embed_dim
    return {key: out.get(key, torch.full((len(bank), dim), float("nan"))) for key in plan}


@torch.no_grad()
def embed_captions(model: LoadedModel, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """(len(texts), E): each caption's text embedding (view t), as embed_views embeds an item's main caption."""
    model.encoder.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids, mask = model.tokenizer(texts[start: start + batch_size])
        tokens = model.encoder.tokenize({"text_ids": ids, "text_mask": mask}, (T,))
        chunks.append(model.encoder.fuse(tokens, (T,)))
    return torch.cat(chunks)


def caption_embeddings(model: LoadedModel, bank: ClipBank, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(every caption's embedding (C, E), its item's row (C,)) when some item has several captions, else None."""
    if bank.captions is None or all(len(c) == 1 for c in bank.captions):
        return None
    texts = [t for caps in bank.captions for t in caps]
    items = torch.tensor([i for i, caps in enumerate(bank.captions) for _ in caps])
    return embed_captions(model, texts, batch_size), items


def nonfinite_rows(emb: dict[str, torch.Tensor], has: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
    """view -> how many of its embeddings hold a NaN or inf (they rank last, see model/metrics.py); with
    `has`, only the rows that hold the view count (the others are NaN by design: never embedded)."""
    return {view: int((~finite_rows(z) & (has[view] if has is not None else True)).sum()) for view, z in emb.items()}


def warn_nonfinite(counts: dict[str, int], n_items: int) -> None:
    """One warning on stderr per view with non-finite rows."""
    for view, bad in counts.items():
        if bad:
            print(f"warning: {bad} of {n_items} rows of view {view!r} are not finite (NaN or inf): they rank last",
                  file=sys.stderr)


def score_embeddings(emb: dict[str, torch.Tensor], n_boot: int = 1000, seed: int = 0,
                     has: dict[str, torch.Tensor] | None = None,
                     captions: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """All 12 directions plus AVG-single, AVG-dual, AVG-all from per-view embeddings, and how many
    rows of each view are not finite.

    `has` (view -> bool (N,)) says which items hold each view (all of them when None). A direction queries
    the items holding both its views and ranks each against every item holding the gallery view; an item
    without the query view is a distractor only, one without the gallery view is not ranked at all. A
    direction no item can be queried in is left out of "directions" and listed in "unscored", and the
    averages are over the directions scored (None when there is none).

    `captions` (every caption's t embedding, its item's row), when items have several: a text query
    direction (t2v, t2a, t2av) asks with every caption, its gold its item; a text gallery direction (v2t,
    a2t, av2t) ranks against every caption, any of the item's a hit (model.metrics, tie-fair). Galleries of
    media hold each item once; the fused views with text (tv, at) use the main caption."""
    n = len(next(iter(emb.values())))
    has = has or {view: torch.ones(n, dtype=torch.bool) for view in emb}
    directions, unscored = {}, []
    for name in DIRECTION_NAMES:
        d = DIRECTIONS[name]
        asked, ranked = has[d.query] & has[d.gallery], has[d.gallery]
        if not bool(asked.any()):
            unscored.append(name)
            continue
        if captions is not None and "t" in (d.query, d.gallery):
            directions[name] = _caption_direction(emb, captions, d.query, d.gallery, asked, ranked, n_boot, seed)
            continue
        gallery = torch.cat([emb[d.gallery][asked], emb[d.gallery][ranked & ~asked]])  # golds first, in query order
        directions[name] = direction_metrics(emb[d.query][asked], gallery, n_boot=n_boot, seed=seed)
    single = _mean([directions[d]["R@1"] for d in SINGLE_DIRECTIONS if d in directions])
    dual = _mean([directions[d]["R@1"] for d in DUAL_DIRECTIONS if d in directions])
    scored = [v for v in (single, dual) if v is not None]
    out = {"directions": directions, "AVG-single": single, "AVG-dual": dual,
           "AVG-all": sum(scored) / len(scored) if scored else None, "nonfinite_rows": nonfinite_rows(emb, has)}
    if unscored:
        out["unscored"] = unscored
    return out


def _caption_direction(emb: dict[str, torch.Tensor], captions: tuple[torch.Tensor, torch.Tensor], query: str,
                       gallery: str, asked: torch.Tensor, ranked: torch.Tensor, n_boot: int, seed: int) -> dict:
    """One direction with every caption: as queries (query "t") or as gallery rows (gallery "t")."""
    z, item = captions
    rows = torch.arange(len(asked))
    if query == "t":
        keep = asked[item]
        return direction_metrics_multi(z[keep], emb[gallery][ranked], item[keep], rows[ranked], n_boot=n_boot, seed=seed)
    keep = ranked[item]
    return direction_metrics_multi(emb[query][asked], z[keep], rows[asked], item[keep], n_boot=n_boot, seed=seed)


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def protocol_of(bank: ClipBank, captions: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """What results.json was scored under: the captions used and how many items hold each modality."""
    out = {"captions": "every caption" if captions is not None else "one per item",
           "items": len(bank), "with_video": int(bank.has_video.sum()), "with_audio": int(bank.has_audio.sum())}
    if captions is not None:
        out["caption_queries"] = int(len(captions[1]))
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def print_results(results: dict, console: Console | None = None, title: str = "OmniRetriever-Bench") -> None:
    scored = results["directions"]
    partial = any(m["n"] != results.get("n_items") or m.get("n_gallery", m["n"]) != m["n"] for m in scored.values())
    chance = "" if partial or not scored else f", chance R@1 {next(iter(scored.values()))['chance_R@1']:.2f}"
    table = Table(title=f"{title}: {results.get('n_items', '?')} items{chance}")
    reference = results.get("reference", {}).get("R@1", {})
    cols = ("dir", "R@1", "95% CI", "R@5", "R@10", "MdR", "MnR", "MRR", "NDCG@10") + (("queries", "gallery") if partial else ()) \
        + (("paper R@1",) if reference else ())
    for col in cols:
        table.add_column(col, justify="left" if col == "dir" else "right", no_wrap=True)
    for name in DIRECTION_NAMES:
        if name not in scored:
            paper = [_num(reference[name])] if name in reference else []
            table.add_row(name, *(["not scored"] + [""] * (len(cols) - 2 - len(paper)) + paper),
                          end_section=name == SINGLE_DIRECTIONS[-1])
            continue
        m = scored[name]
        lo, hi = m["R@1_ci95"]
        sizes = (str(m["n"]), str(m.get("n_gallery", m["n"]))) if partial else ()
        paper = (_num(reference.get(name)) if name in reference else "",) if reference else ()
        table.add_row(name, f"{m['R@1']:.2f}", f"{lo:.1f}-{hi:.1f}", f"{m['R@5']:.2f}", f"{m['R@10']:.2f}",
                      f"{m['MdR']:.1f}", f"{m['MnR']:.1f}", f"{m['MRR']:.3f}", f"{m['NDCG@10']:.3f}", *sizes, *paper,
                      end_section=name == SINGLE_DIRECTIONS[-1])
    table.caption = "   ".join(f"{k} {_num(results[k])}" + (f" (paper {reference[k]:.2f})" if k in reference else "")
                               for k in ("AVG-single", "AVG-dual", "AVG-all"))
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log or a pipe: wide enough for every column, not 80 characters
            console = Console(width=160)
    console.print(table)


def plot_results(results: dict, path: Path) -> Path:
    """A heatmap of R@1/5/10 per direction and R@1 bars with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [d for d in DIRECTION_NAMES if d in results["directions"]]
    grid = np.array([[results["directions"][d][k] for d in names] for k in ("R@1", "R@5", "R@10")])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), gridspec_kw={"height_ratios": [1, 1.4]})
    im = ax1.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax1.set_xticks(range(len(names)), names)
    ax1.set_yticks(range(3), ["R@1", "R@5", "R@10"])
    for (i, j), v in np.ndenumerate(grid):
        ax1.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=8)
    fig.colorbar(im, ax=ax1, label="%")
    r1 = grid[0]
    ci = np.array([results["directions"][d]["R@1_ci95"] for d in names])
    colors = ["tab:blue" if d in SINGLE_DIRECTIONS else "tab:orange" for d in names]
    ax2.bar(range(len(names)), r1, yerr=[r1 - ci[:, 0], ci[:, 1] - r1], color=colors, capsize=3)
    ax2.axhline(results["directions"][names[0]]["chance_R@1"], color="grey", ls=":", label="chance")
    ax2.set_xticks(range(len(names)), names)
    ax2.set_ylabel("R@1 (%) with 95% CI")
    ax2.set_title(f"AVG-single {_num(results['AVG-single'], 1)} (blue)   AVG-dual {_num(results['AVG-dual'], 1)} "
                  f"(orange)   AVG-all {_num(results['AVG-all'], 1)}")
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
             progress: bool = True, n_boot: int = 1000, benchmark: str | None = None) -> dict:
    """Score a saved model on a split; writes results.json and results.png when `out` is given. With
    `benchmark` (model.benchmarks), results also name it and carry the paper's reference R@1.

    The model and the split's manifest are checked before anything is decoded. Views with non-finite
    embeddings are counted in results["nonfinite_rows"] and warned about on stderr; those rows rank
    last, so they never raise a score."""
    model = load_model(model_path)
    existing_split(data, split)
    bank = load_bank(data, split, model.config, cache_dir=cache_dir, workers=workers, limit=limit, progress=progress)
    bench = BENCHMARKS[benchmark] if benchmark is not None else None
    captions = caption_embeddings(model, bank) if bench is None or bench.captions == "every" else None
    results = score_embeddings(embed_views(model, bank), n_boot=n_boot, has={v: bank.has(v) for v in BENCH_VIEWS},
                               captions=captions)
    results["protocol"] = protocol_of(bank, captions)
    if bench is not None:
        results["protocol"]["benchmark"] = bench.name
        results["reference"] = {"source": "the paper's zero-shot R@1 (7B model)", "R@1": dict(bench.reference)}
    results.update(split=split, n_items=len(bank), model=str(model.path), data=str(data))
    warn_nonfinite(results["nonfinite_rows"], len(bank))
    if out is not None:
        out = write_json(out, results)
        results["plot"] = str(plot_results(results, out.with_suffix(".png")))
    return results
