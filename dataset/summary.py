"""What a generated dataset holds: split sizes, durations, attribute balance, caption statistics, and
how crowded the test gallery is (near-duplicates)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dataset.config import SPLITS
from dataset.scenes import rounded
from dataset.vocabulary import ATTRIBUTES, SHARED, TEMPLATES, TEST_ONLY_TEMPLATES, VISIBLE_ONLY, VOCAB
from model.manifest import manifest_path, read_split

def _read_scenes(root: Path) -> dict[str, list[dict[str, Any]]]:
    scenes: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = root / "scenes" / f"{split}.jsonl"
        if path.is_file():
            scenes[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return scenes


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": rounded(min(values)), "mean": rounded(sum(values) / len(values)), "max": rounded(max(values))}


def near_duplicate_stats(scenes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """How crowded a gallery is: clips sharing the V/A-shared attributes, one-attribute neighbours,
    exact attribute duplicates, and how many clips match everything a caption says."""
    n = len(scenes)
    if n == 0:
        return {"n": 0}
    keys = [tuple(s[a] for a in ATTRIBUTES) for s in scenes]
    full = Counter(keys)
    shared = Counter(k[: len(SHARED)] for k in keys)
    has_neighbour = [False] * n
    for j in range(len(ATTRIBUTES)):
        masked = Counter(k[:j] + k[j + 1:] for k in keys)
        for i, k in enumerate(keys):
            has_neighbour[i] |= masked[k[:j] + k[j + 1:]] > full[k]
    caption_matches = _caption_matches(scenes)
    return {
        "n": n,
        "mean_sharing_kind_size_count": rounded(sum(shared[k[: len(SHARED)]] - 1 for k in keys) / n),
        "frac_with_one_attribute_neighbour": rounded(sum(has_neighbour) / n),
        "frac_exact_attribute_duplicate": rounded(sum(full[k] > 1 for k in keys) / n),
        "mean_clips_matching_caption": rounded(sum(caption_matches) / n),
        "frac_caption_unique": rounded(sum(m == 1 for m in caption_matches) / n),
    }


def _caption_matches(scenes: Sequence[Mapping[str, Any]]) -> list[int]:
    """For each clip, how many clips agree with every attribute its caption names (itself included)."""
    counters: dict[tuple[str, ...], Counter[tuple[Any, ...]]] = {}
    out = []
    for s in scenes:
        said = ("kind", *s["mentioned"])
        if said not in counters:
            counters[said] = Counter(tuple(x[a] for a in said) for x in scenes)
        out.append(counters[said][tuple(s[a] for a in said)])
    return out


def _caption_stats(scenes: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    every = [s for split in scenes.values() for s in split]
    test_only = set(TEST_ONLY_TEMPLATES)
    return {
        "templates_total": len(TEMPLATES),
        "templates_test_only": list(TEST_ONLY_TEMPLATES),
        "templates_used": {split: len({s["template"] for s in rows}) for split, rows in scenes.items()},
        "captions_per_clip": {split: rounded(sum(1 + len(s.get("alt_captions", ())) for s in rows) / max(len(rows), 1), 2)
                              for split, rows in scenes.items()},
        "held_out_in_train_val": sum(s["template"] in test_only for sp in ("train", "val") for s in scenes.get(sp, [])),
        "test_frac_held_out_template": rounded(
            sum(s["template"] in test_only for s in scenes.get("test", [])) / max(len(scenes.get("test", [])), 1)),
        "mean_words": rounded(sum(len(s["caption"].split()) for s in every) / max(len(every), 1), 2),
        "mean_attributes_mentioned": rounded(sum(1 + len(s["mentioned"]) for s in every) / max(len(every), 1), 2),
        "frac_unique_captions": rounded(len({s["caption"] for s in every}) / max(len(every), 1)),
    }


def summarize(data_root: str | Path) -> dict[str, Any]:
    """Counts per split, durations, attribute histograms, caption/template stats and test-gallery
    near-duplicate stats. Without a scenes/ folder (a dataset not made here) only counts are given."""
    root = Path(data_root)
    counts = {split: len(read_split(root, split)) for split in SPLITS if manifest_path(root, split).is_file()}
    summary: dict[str, Any] = {"root": str(root), "splits": counts, "total": sum(counts.values())}
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        summary["generator_version"] = json.loads(meta_path.read_text(encoding="utf-8")).get("generator_version")
    scenes = _read_scenes(root)
    if not scenes:
        return summary
    every = [s for rows in scenes.values() for s in rows]
    summary["durations"] = {split: _stats([s["duration"] for s in rows]) for split, rows in scenes.items()}
    summary["attributes"] = {
        a: {str(v): sum(s[a] == v for s in every) for v in VOCAB[a]} for a in ATTRIBUTES
    }
    summary["attribute_combinations"] = math.prod(len(VOCAB[a]) for a in ATTRIBUTES)
    summary["captions"] = _caption_stats(scenes)
    summary["test_gallery"] = near_duplicate_stats(scenes.get("test", []))
    return summary


def print_summary(summary: dict[str, Any], console: Any | None = None) -> None:
    """Print a summary from summarize() as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    splits = Table(title=f"dataset {summary.get('root', '')}")
    for col in ("split", "clips", "min s", "mean s", "max s"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for split, n in summary.get("splits", {}).items():
        d = summary.get("durations", {}).get(split, {})
        splits.add_row(split, str(n), *(f"{d[k]:.2f}" if k in d else "-" for k in ("min", "mean", "max")))
    console.print(splits)
    if "attributes" not in summary:
        return
    attrs = Table(title=f"attributes ({summary['attribute_combinations']:,} combinations)")
    attrs.add_column("attribute")
    attrs.add_column("seen by")
    attrs.add_column("histogram")
    for name, hist in summary["attributes"].items():
        seen = "video+audio" if name in SHARED else "video" if name in VISIBLE_ONLY else "audio"
        attrs.add_row(name, seen, "  ".join(f"{k}:{v}" for k, v in hist.items()))
    console.print(attrs)
    for title, block in (("captions", summary["captions"]), ("test gallery", summary["test_gallery"])):
        table = Table(title=title)
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for key, value in block.items():
            table.add_row(key, json.dumps(value))
        console.print(table)

