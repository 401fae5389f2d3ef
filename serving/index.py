"""The gallery index the search model ranks against: entries plus unit embeddings of one or more views.

    omniretriever index build --model RUN --data DIR --split test --view av --view t --out gallery.safetensors

The file is safetensors (no pickle): one float32 (N_view, D) tensor per view, named "view.<name>", and
metadata holding each view's entries (JSON: item id, start and end in seconds, the modalities embedded),
the views, the embedding size and the sha256 of the weights it was built with, so a server refuses an
index built by another model. Items are embedded exactly as evaluation embeds them (model.evaluate's
embed_rows over the split's decoded clips), which is what the served encoder computes for the same
inputs: a query of any view ranked against a gallery of any view gives the 12 directions online.

Entries:
- a clip up to the model's window (plus half a stride) is one entry, start 0, end its length;
- a longer one (a ten-minute video) is one entry per window (`--window`, `--stride`; by default the
  model's audio window and half of it), so a search result names the moment, not just the file;
- an item lacking some of a view's modalities (a video-only clip in an `av` gallery) is embedded from
  those it has and marked so ("modalities": "v"): a library search still finds a clip without sound by
  its picture, and a client can filter on the mark. An item with none of them is not in that view. An
  entry holding only the caption is one per item, however many windows its media has.

A record that cannot be indexed (a malformed manifest line, a media path outside the data root, media
that does not decode) is left out by default and listed in OUT's stem + .rejects.jsonl beside the index
(build_index_report); build_index and `index build --strict` stop at it instead.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.modalities import VIEWS, canonical_view

FORMAT = "omniretriever-index-v2"
UNKNOWN = -1.0  # start and end of an entry whose time range was not recorded


@dataclass(frozen=True)
class Entries:
    """A view's gallery entries, row-aligned with its embeddings."""

    ids: list[str]  # the item each entry belongs to (repeated for the windows of one item)
    start: np.ndarray  # float64 (N,) seconds into the item
    end: np.ndarray  # float64 (N,)
    modalities: list[str]  # the view actually embedded: the gallery view, or the part of it the item has

    def __len__(self) -> int:
        return len(self.ids)

    def to_json(self) -> str:
        return json.dumps({"ids": self.ids, "start": [round(float(x), 3) for x in self.start],
                           "end": [round(float(x), 3) for x in self.end], "modalities": self.modalities})

    @classmethod
    def from_json(cls, text: str) -> "Entries":
        obj = json.loads(text)
        return cls(list(obj["ids"]), np.asarray(obj["start"], np.float64), np.asarray(obj["end"], np.float64),
                   list(obj["modalities"]))

    @classmethod
    def whole(cls, ids: list[str], view: str) -> "Entries":
        """One entry per item, time range unknown (UNKNOWN), the whole view embedded."""
        unknown = np.full(len(ids), UNKNOWN)
        return cls(list(ids), unknown, unknown.copy(), [view] * len(ids))


@dataclass(frozen=True)
class Hits:
    """Search results, best first: (B, k) arrays."""

    ids: np.ndarray  # object (B, k) item ids
    scores: np.ndarray  # float32 (B, k) cosine similarities
    start: np.ndarray  # float32 (B, k) seconds; UNKNOWN when not recorded
    end: np.ndarray  # float32 (B, k)
    modalities: np.ndarray  # object (B, k) the view each hit was embedded in


@dataclass(frozen=True)
class GalleryIndex:
    entries: dict[str, Entries]  # canonical view name -> its entries
    embeddings: dict[str, np.ndarray]  # canonical view name -> float32 (N_view, D), rows of unit length
    weights_sha256: str
    meta: dict

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.embeddings)

    @property
    def ids(self) -> list[str]:
        """Every item in the index once, in the order the views first list them."""
        return list(dict.fromkeys(i for e in self.entries.values() for i in e.ids))

    @property
    def dim(self) -> int:
        return next(iter(self.embeddings.values())).shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def search_hits(self, queries: np.ndarray, view: str, top_k: int) -> Hits:
        """queries (B, D) -> the k = min(top_k, N_view) best entries of gallery `view` per row, best first.

        Scores are cosine similarities; equal scores keep gallery order, so results are deterministic."""
        gallery, entries = self.embeddings[view], self.entries[view]
        if queries.ndim != 2 or queries.shape[1] != gallery.shape[1]:
            raise ValueError(f"queries have shape {queries.shape}, expected (B, {gallery.shape[1]})")
        scores = queries.astype(np.float32) @ gallery.T  # (B, N)
        k = min(top_k, len(entries))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (B, k)
        pick = lambda values: np.asarray(values, dtype=object)[order]  # noqa: E731
        return Hits(pick(entries.ids), np.take_along_axis(scores, order, axis=1).astype(np.float32),
                    entries.start[order].astype(np.float32), entries.end[order].astype(np.float32),
                    pick(entries.modalities))

    def search(self, queries: np.ndarray, view: str, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, D) -> (ids object (B, k), scores float32 (B, k)), best first (search_hits without times)."""
        hits = self.search_hits(queries, view, top_k)
        return hits.ids, hits.scores


def save_index(path: str | Path, ids: list[str], embeddings: dict[str, np.ndarray], weights_sha256: str,
               extra: dict | None = None, entries: dict[str, Entries] | None = None) -> Path:
    """Write an index atomically (temp file, then rename). Each view's rows are `entries[view]`'s, or, without
    `entries`, one per item of `ids` (no time range)."""
    from safetensors.numpy import save_file

    path = Path(path)
    if not embeddings:
        raise ValueError("an index needs at least one view")
    entries = entries or {view: Entries.whole(ids, view) for view in embeddings}
    for view, emb in embeddings.items():
        if view not in entries:
            raise ValueError(f"view {view}: no entries given")
        if emb.ndim != 2 or emb.shape[0] != len(entries[view]):
            raise ValueError(f"view {view}: embeddings of shape {emb.shape} do not match {len(entries[view])} entries")
        if not np.isfinite(emb).all():
            raise ValueError(f"view {view}: {int((~np.isfinite(emb).all(1)).sum())} embeddings are not finite")
    meta = {"format": FORMAT, "views": json.dumps(list(embeddings)), "weights_sha256": weights_sha256,
            "extra": json.dumps(extra or {}), **{f"entries.{v}": entries[v].to_json() for v in embeddings}}
    tensors = {f"view.{v}": np.ascontiguousarray(e, dtype=np.float32) for v, e in embeddings.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_index(path: str | Path) -> GalleryIndex:
    """Read an index written by save_index; errors name the file and what is wrong with it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index {path} does not exist (build one with `omniretriever index build`)")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") == "omniretriever-index-v1":
                raise ValueError(f"index {path} is in the older format {meta['format']!r} (no time ranges): "
                                 "rebuild it with `omniretriever index build`")
            if meta.get("format") != FORMAT:
                raise ValueError(f"index {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
            views = json.loads(meta["views"])
            embeddings = {v: fh.get_tensor(f"view.{v}") for v in views}
            entries = {v: Entries.from_json(meta[f"entries.{v}"]) for v in views}
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"index {path} cannot be read: {exc}") from None
    for v in views:
        if len(entries[v]) != embeddings[v].shape[0]:
            raise ValueError(f"index {path}: view {v} has {embeddings[v].shape[0]} embeddings for {len(entries[v])} entries")
    return GalleryIndex(entries=entries, embeddings=embeddings, weights_sha256=meta["weights_sha256"],
                        meta=json.loads(meta.get("extra", "{}")))


def view_name(modalities: tuple[str, ...]) -> str:
    """The canonical view name of a tuple of modalities in MODALITIES order: ("V", "A") -> "av"."""
    return next(name for name, mods in VIEWS.items() if mods == modalities)


def gallery_plan(bank, view: str) -> list[tuple[str, ...]]:
    """For each row of a (windowed) ClipBank, the modalities its entry in gallery `view` is embedded from:
    the view's modalities the row holds, () for no entry. A caption-only entry is kept once per item."""
    wanted = VIEWS[view]
    held = {m: bank.has((m,)).tolist() for m in wanted}
    plan, captioned = [], set()
    for i, item in enumerate(bank.ids):
        mods = tuple(m for m in wanted if held[m][i])
        if mods == ("T",):
            mods = () if item in captioned else mods
            captioned.add(item)
        plan.append(mods)
    return plan


def gallery_entries(bank, plan: list[tuple[str, ...]]) -> tuple[list[int], Entries]:
    """The rows a plan embeds and their Entries: each window's span, or the whole item for a caption."""
    rows = [i for i, mods in enumerate(plan) if mods]
    seconds = bank.seconds or [math.nan] * len(bank)
    spans = bank.spans or [(0.0, s) for s in seconds]
    whole = [plan[i] == ("T",) for i in rows]
    start = np.array([0.0 if w else spans[i][0] for i, w in zip(rows, whole)], np.float64)
    end = np.array([seconds[i] if w else spans[i][1] for i, w in zip(rows, whole)], np.float64)
    start, end = np.nan_to_num(start, nan=UNKNOWN), np.nan_to_num(end, nan=UNKNOWN)
    return rows, Entries([bank.ids[i] for i in rows], start, end, [view_name(plan[i]) for i in rows])


def rejects_path(out: str | Path) -> Path:
    """Where build_index lists the records it left out: beside the index, OUT's stem + .rejects.jsonl."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects.jsonl")


def validated_manifest(path: str | Path) -> Path:
    """A manifest to build from: the file itself, or a validation report directory's validated.jsonl."""
    path = Path(path)
    if path.is_dir():
        inner = path / "validated.jsonl"
        if not inner.is_file():
            raise FileNotFoundError(f"{path} is a directory without validated.jsonl (not a validation report)")
        return inner
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    return path


def write_rejects(path: str | Path, rejects: list) -> Path:
    """One JSON line per rejected record ({"line", "id", "field", "reason", "error"}), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for r in rejects:
                fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class IndexBuild:
    """What build_index_report wrote: the index, the rejects file beside it, and the records it left out."""

    index: Path
    rejects_file: Path
    rejects: list  # model.data.Reject, in manifest order
    manifest: Path
    indexed: int


def build_index_report(model: str | Path, data: str | Path, split: str, views: list[str], out: str | Path, *,
                       manifest: str | Path | None = None, on_error: str = "skip", workers: int | None = None,
                       progress: bool = True, window: float | None = None, stride: float | None = None) -> IndexBuild:
    """Embed every usable item of DATA's split (or of `manifest`: a file, or a validation report directory
    whose validated.jsonl is read; media paths stay relative to DATA) in each view with the saved model,
    and write the index to `out`. Items longer than the window (`window` seconds, one every `stride`; by
    default the model's audio window and half of it) are cut into windows, up to MediaLimits().max_windowed_seconds.

    on_error="skip": a record whose manifest line is malformed, whose media path leaves DATA or whose media
    does not decode is left out and listed in the rejects file beside the index (rejects_path(out), empty
    when none was); with nothing left NoRecordsError is raised, after the rejects file is written.
    on_error="raise": the first bad record raises its typed error (naming the manifest line and id)."""
    from model.data import NoRecordsError, load_bank
    from model.evaluate import embed_rows
    from model.manifest import manifest_path
    from model.media import MediaLimits, Windowing
    from model.store import load_model, weights_digest

    canonical = list(dict.fromkeys(canonical_view(v) for v in views))
    if not canonical:
        raise ValueError("give at least one --view (t, v, a, tv, av, at or tva)")
    source = validated_manifest(manifest) if manifest is not None else manifest_path(data, split)
    loaded = load_model(model)
    windowing = Windowing.for_model(loaded.config.decode, window, stride)
    limits = MediaLimits().windowed()  # long media: cut into windows
    try:
        bank = load_bank(data, split, loaded.config, workers=workers, progress=progress, manifest=source,
                         on_error=on_error, windowing=windowing, limits=limits)
    except NoRecordsError as exc:
        if exc.rejects:
            write_rejects(rejects_path(out), exc.rejects)
        raise
    plans = {view: gallery_plan(bank, view) for view in canonical}
    embedded = embed_rows(loaded, bank, plans)
    embeddings, entries = {}, {}
    for view in canonical:
        rows, entries[view] = gallery_entries(bank, plans[view])
        if rows:
            embeddings[view] = embedded[view][rows].float().numpy()
        else:
            del entries[view]
    if not embeddings:
        raise ValueError(f"no item of {source} holds any of the views {', '.join(canonical)}")
    extra = {"model": str(loaded.path), "data": str(data), "split": split, "manifest": str(source),
             "skipped": len(bank.rejects), "window": windowing.seconds, "stride": windowing.stride,
             "empty_views": [v for v in canonical if v not in embeddings]}
    path = save_index(out, bank.ids, embeddings, weights_digest(loaded.path), extra, entries)
    rejects_file = write_rejects(rejects_path(path), bank.rejects)
    return IndexBuild(path, rejects_file, bank.rejects, source, len(dict.fromkeys(bank.ids)))


def build_index(model: str | Path, data: str | Path, split: str, views: list[str], out: str | Path, *,
                workers: int | None = None, progress: bool = True, manifest: str | Path | None = None,
                on_error: str = "raise", window: float | None = None, stride: float | None = None) -> Path:
    """Embed every item of DATA's split in each view with the saved model and write the index to `out`
    (build_index_report, stopping at the first bad record unless on_error="skip"); the index's path."""
    return build_index_report(model, data, split, views, out, manifest=manifest, on_error=on_error,
                              workers=workers, progress=progress, window=window, stride=stride).index
