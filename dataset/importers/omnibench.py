"""`omniretriever-bench`: OmniRetriever-Bench (Liu, Wu, Zhou, Shen, "OmniRetriever: Any-to-Any
Audio-Video-Text Retrieval via Fusion-as-Teacher Distillation", arXiv 2605.26641; project page
https://yunzeliu.github.io/OmniRetriever/), 3,782 audio-video-text triples scored in 12 directions.

The paper and its page say the data "will be released"; no release could be found to check, so the layout
read here is an ASSUMPTION: the one this project's docs/DESIGN.md ("Data format (same as the released
OmniRetriever-Bench)") and model/manifest.py describe, plus an annotations/ folder for further captions:

    SRC/manifests/<split>.jsonl     {"id", "text", "video", "audio"[, "alt_texts"]}, model/manifest.py's format
    SRC/videos/<id>.mp4             the media the manifests name (paths relative to SRC)
    SRC/annotations/<split>.jsonl   optional, assumed: {"id", "captions": [...]} (or "caption": "...") a line,
                                    further captions of the split's item of that id

Importing copies (or links) every media file a manifest names, under OUT/media/, and keeps every caption of
an item: its "text" first, then its "alt_texts", then its annotations' captions in file order, a caption
repeated word for word kept once. Splits are read train, val, test, then any other in name order; a bad
manifest or annotation line and an annotation for an id the split's manifest lacks are reported as skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import ImportFormatError, ImportOptions, Item, Skip, clean_caption, read_jsonl, where
from dataset.importers.locate import optional_annotation
from model.manifest import scan_manifest

VERSION = ("OmniRetriever-Bench (arXiv 2605.26641; release not public yet): layout ASSUMED from this project's "
           "docs/DESIGN.md and model/manifest.py: manifests/<split>.jsonl, videos/<id>.mp4, optional "
           "annotations/<split>.jsonl of {id, captions}")
KNOWN_SPLITS = ("train", "val", "test")


def read_omnibench(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    manifests = src / "manifests"
    present = sorted(p.stem for p in manifests.glob("*.jsonl")) if manifests.is_dir() else []
    if not present:
        raise ImportFormatError(src, "no manifests/<split>.jsonl (is this the directory the release unpacks to?)")
    splits = [s for s in KNOWN_SPLITS if s in present] + [s for s in present if s not in KNOWN_SPLITS]
    for split in splits:
        extra: dict[str, tuple[str, list[str]]] = {}  # id -> (its first annotation line, its captions)
        notes = optional_annotation(src, f"annotations/{split}.jsonl")
        if notes is not None:
            yield from _read_annotations(notes, src, extra)
        path = manifests / f"{split}.jsonl"
        held: set[str] = set()
        for line in scan_manifest(path):
            at = where(path, src, line.line)
            if line.error is not None:
                yield Skip(at, line.error.record_id, line.error.reason)
                continue
            rec = line.record
            held.add(rec.id)
            further = extra.get(rec.id, ("", []))[1]
            captions = dict.fromkeys(c for c in (clean_caption(x) for x in (*rec.captions, *further)) if c)
            yield Item(rec.id, split, tuple(captions), rec.video, rec.audio, at)
        for rid, (at, _) in extra.items():
            if rid not in held:
                yield Skip(at, rid, f"captions for an id that {where(path, src)} does not hold")


def _read_annotations(path: Path, src: Path, extra: dict[str, tuple[str, list[str]]]) -> Iterator[Skip]:
    """Add each line's captions to extra[id]; yield a Skip for each line that cannot be used."""
    for row in read_jsonl(path, src):
        if isinstance(row, Skip):
            yield row
            continue
        at, obj = row
        rid = obj.get("id")
        caps = obj.get("captions", [obj["caption"]] if "caption" in obj else None)
        if not isinstance(rid, str) or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            yield Skip(at, rid if isinstance(rid, str) else None,
                       'expected {"id": "...", "captions": ["...", ...]} (or "caption": "...")')
            continue
        extra.setdefault(rid, (at, []))[1].extend(caps)
