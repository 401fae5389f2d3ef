"""The gallery index the search model ranks against: ids plus unit embeddings of one or more views.

    omniretriever index build --model RUN --data DIR --split test --view av --view t --out gallery.safetensors

The file is safetensors (no pickle): one float32 (N, D) tensor per view, named "view.<name>", and
metadata holding the item ids (JSON), the views, the embedding size and the sha256 of the weights it was
built with, so a server refuses an index built by another model. Items are embedded exactly as
evaluation embeds them (model.evaluate.embed_views over the split's decoded clips), which is what the
ONNX graph computes for the same inputs: a query of any view ranked against a gallery of any view gives
the 12 directions of the benchmark online.

A record that cannot be indexed (a malformed manifest line, a media path outside the data root, media
that does not decode) is left out by default and listed in OUT's stem + .rejects.jsonl beside the index
(build_index_report); build_index and `index build --strict` stop at it instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.modalities import canonical_view

FORMAT = "omniretriever-index-v1"


@dataclass(frozen=True)
class GalleryIndex:
    ids: list[str]
    embeddings: dict[str, np.ndarray]  # canonical view name -> float32 (N, D), rows of unit length
    weights_sha256: str
    meta: dict

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.embeddings)

    @property
    def dim(self) -> int:
        return next(iter(self.embeddings.values())).shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, view: str, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (B, D) -> (ids object (B, k), scores float32 (B, k)), best first; k = min(top_k, N).

        Scores are cosine similarities; equal scores keep gallery order, so results are deterministic."""
        gallery = self.embeddings[view]
        if queries.ndim != 2 or queries.shape[1] != gallery.shape[1]:
            raise ValueError(f"queries have shape {queries.shape}, expected (B, {gallery.shape[1]})")
        scores = queries.astype(np.float32) @ gallery.T  # (B, N)
        k = min(top_k, len(self.ids))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (B, k)
        ids = np.asarray(self.ids, dtype=object)[order]
        return ids, np.take_along_axis(scores, order, axis=1).astype(np.float32)


def save_index(path: str | Path, ids: list[str], embeddings: dict[str, np.ndarray], weights_sha256: str,
               extra: dict | None = None) -> Path:
    """Write an index atomically (temp file, then rename)."""
    from safetensors.numpy import save_file

    path = Path(path)
    if not embeddings:
        raise ValueError("an index needs at least one view")
    for view, emb in embeddings.items():
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ValueError(f"view {view}: embeddings of shape {emb.shape} do not match {len(ids)} ids")
    meta = {"format": FORMAT, "ids": json.dumps(ids), "views": json.dumps(list(embeddings)),
            "weights_sha256": weights_sha256, "extra": json.dumps(extra or {})}
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
            if meta.get("format") != FORMAT:
                raise ValueError(f"index {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
            views = json.loads(meta["views"])
            embeddings = {v: fh.get_tensor(f"view.{v}") for v in views}
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"index {path} cannot be read: {exc}") from None
    ids = json.loads(meta["ids"])
    return GalleryIndex(ids=ids, embeddings=embeddings, weights_sha256=meta["weights_sha256"],
                        meta=json.loads(meta.get("extra", "{}")))


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
                       progress: bool = True) -> IndexBuild:
    """Embed every usable item of DATA's split (or of `manifest`: a file, or a validation report directory
    whose validated.jsonl is read; media paths stay relative to DATA) in each view with the saved model,
    and write the index to `out`.

    on_error="skip": a record whose manifest line is malformed, whose media path leaves DATA or whose media
    does not decode is left out and listed in the rejects file beside the index (rejects_path(out), empty
    when none was); with nothing left NoRecordsError is raised, after the rejects file is written.
    on_error="raise": the first bad record raises its typed error (naming the manifest line and id)."""
    from model.data import NoRecordsError, load_bank
    from model.evaluate import embed_views
    from model.manifest import manifest_path
    from model.store import weights_digest
    from model.store import load_model

    canonical = list(dict.fromkeys(canonical_view(v) for v in views))
    if not canonical:
        raise ValueError("give at least one --view (t, v, a, tv, av, at or tva)")
    source = validated_manifest(manifest) if manifest is not None else manifest_path(data, split)
    loaded = load_model(model)
    try:
        bank = load_bank(data, split, loaded.config, workers=workers, progress=progress, manifest=source,
                         on_error=on_error)
    except NoRecordsError as exc:
        if exc.rejects:
            write_rejects(rejects_path(out), exc.rejects)
        raise
    embedded = embed_views(loaded, bank, tuple(canonical))
    embeddings = {v: e.float().numpy() for v, e in embedded.items()}
    extra = {"model": str(loaded.path), "data": str(data), "split": split, "manifest": str(source),
             "skipped": len(bank.rejects)}
    path = save_index(out, bank.ids, embeddings, weights_digest(loaded.path), extra)
    rejects_file = write_rejects(rejects_path(path), bank.rejects)
    return IndexBuild(path, rejects_file, bank.rejects, source, len(bank))


def build_index(model: str | Path, data: str | Path, split: str, views: list[str], out: str | Path, *,
                workers: int | None = None, progress: bool = True, manifest: str | Path | None = None,
                on_error: str = "raise") -> Path:
    """Embed every item of DATA's split in each view with the saved model and write the index to `out`
    (build_index_report, stopping at the first bad record unless on_error="skip"); the index's path."""
    return build_index_report(model, data, split, views, out, manifest=manifest, on_error=on_error,
                              workers=workers, progress=progress).index
