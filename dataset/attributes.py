"""Which latent attributes a model's retrievals get right, on a generated dataset.

For each of the 12 directions: the share of queries whose top-1 result agrees with the query on each
attribute of the scene (kind, size, event count, colours, pattern, motion, ambient), read from
DATA/scenes/<split>.jsonl, which `omniretriever data synth` writes beside the manifests. Beside
it, chance: the share of agreeing pairs among all pairs of clips, sum_v p(v)^2. A correct hit agrees
on everything, so the shares are at least R@1 / 100.

    omniretriever attributes --model RUN --data data --split test --out RUN/attributes.json

Recall alone says a direction is weak; this says why (an attribute left at chance is one the two
sides do not share in the embedding).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from model.errors import OmniRetrieverError
from model.modalities import DIRECTION_NAMES, DIRECTIONS
from dataset.vocabulary import ATTRIBUTES


def read_scene_attributes(data: Path, split: str, ids: Sequence[str]) -> dict[str, list]:
    """attribute -> its value for every id, in the order of `ids`, from DATA/scenes/<split>.jsonl."""
    path = Path(data) / "scenes" / f"{split}.jsonl"
    if not path.is_file():
        raise OmniRetrieverError(f"{path} not found: attribute agreement needs the latent scenes of a dataset "
                                 "written by `omniretriever data synth`")
    scenes: dict[str, dict] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            scene = json.loads(line)
            scenes[scene["id"]] = scene
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise OmniRetrieverError(f"{path}:{lineno}: not a scene record ({exc})") from None
    missing = [i for i in ids if i not in scenes]
    if missing:
        raise OmniRetrieverError(f"{path}: no scene for {len(missing)} item(s) of the {split} manifest, "
                                 f"first {missing[0]!r}")
    absent = [a for a in ATTRIBUTES if any(a not in scenes[i] for i in ids)]
    if absent:
        raise OmniRetrieverError(f"{path}: scenes lack attribute(s) {', '.join(absent)}")
    return {a: [scenes[i][a] for i in ids] for a in ATTRIBUTES}


def top1(query: torch.Tensor, gallery: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Index of each query's best gallery item, (N,) int64, scored in blocks of queries (memory b x N).
    A tie goes to the first of the tied items: a diagnostic, unlike the recall metrics, which
    break ties at their expected rank."""
    return torch.cat([(query[s: s + block] @ gallery.T).argmax(1) for s in range(0, len(query), block)])


def chance_agreement(values: Sequence) -> float:
    """Share of agreeing pairs among all ordered pairs of items: sum_v p(v)^2."""
    n = len(values)
    return sum((c / n) ** 2 for c in Counter(values).values())


def attribute_agreement(emb: Mapping[str, torch.Tensor], attributes: Mapping[str, Sequence]) -> dict:
    """{"directions": {name: {attribute: share}}, "chance": {attribute: share}} for the 12 directions."""
    out: dict[str, dict] = {"directions": {}, "chance": {a: chance_agreement(v) for a, v in attributes.items()}}
    for name in DIRECTION_NAMES:
        d = DIRECTIONS[name]
        best = top1(emb[d.query], emb[d.gallery]).tolist()
        out["directions"][name] = {a: sum(v[i] == v[j] for i, j in enumerate(best)) / len(best)
                                   for a, v in attributes.items()}
    return out


def agreement(model_path: str | Path, data: str | Path, split: str = "test", out: str | Path | None = None, *,
              workers: int | None = None, progress: bool = True) -> dict:
    """Embed a split once and measure top-1 attribute agreement for every direction; writes JSON to `out`."""
    from model.data import load_bank
    from model.evaluate import embed_views, write_json
    from model.store import load_model

    model = load_model(model_path)
    bank = load_bank(data, split, model.config, workers=workers, progress=progress)
    attributes = read_scene_attributes(Path(data), split, bank.ids)
    result = {**attribute_agreement(embed_views(model, bank), attributes), "split": split, "n_items": len(bank),
              "model": str(model.path), "data": str(data)}
    if out is not None:
        write_json(out, result)
    return result


SHORT_NAMES = {"n_events": "count", "bg_colour": "bg", "obj_colour": "object"}  # console headers only


def print_agreement(result: dict, console: Console | None = None) -> None:
    table = Table(title=f"top-1 attribute agreement ({result.get('split', '?')}, {result.get('n_items', '?')} items)")
    table.add_column("direction", no_wrap=True)
    names = list(result["chance"])
    for a in names:
        table.add_column(SHORT_NAMES.get(a, a), justify="right", no_wrap=True)
    for name, shares in result["directions"].items():
        table.add_row(name, *(f"{shares[a]:.2f}" for a in names))
    table.add_row("chance", *(f"{result['chance'][a]:.2f}" for a in names), style="dim")
    (console or Console()).print(table)
