"""`folder`: a team's own library, a folder of media plus a captions file, the way a library is exported.

    omniretriever data import folder MEDIA_DIR --captions captions.csv --out data/mine [--split test]

The captions file is CSV (a header row) or JSONL, one item a row:

    column       required  meaning
    file         yes       the media file, relative to MEDIA_DIR (a video with sound, a silent video, audio)
    caption      yes       the item's caption (JSONL may give "captions": [...] instead, the first the main one)
    id           no        the item's id (default: the file's path without its suffix, "/" as "_")
    caption_2..  no        further captions (CSV), or "alt_texts": [...] (JSONL)
    audio        no        a separate audio file for the item, relative to MEDIA_DIR
    split        no        train, val or test... (default: --split)

Which modalities an item has is read from its files (write_dataset probes each stream), so a silent video
is video-only and a .wav is audio-only without anyone saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import (ImportFormatError, ImportOptions, Item, Skip, clean_caption, read_csv, read_jsonl,
                                    refuse_pickle)

VERSION = "this project's own: a media folder and a CSV or JSONL of captions"
_EXTRA = re.compile(r"^caption_(\d+)$")


def read_folder(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    if options.captions is None:
        raise ImportFormatError(src, "the folder format needs --captions FILE (a CSV or JSONL of file, caption)")
    path = Path(options.captions)
    if not path.is_file():
        raise ImportFormatError(path, "captions file not found")
    refuse_pickle(path)
    rows = _jsonl_rows(path, src) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_rows(path, src)
    for row in rows:
        if isinstance(row, Skip):
            yield row
            continue
        at, obj = row
        yield _item(at, obj, options.split)


def _csv_rows(path: Path, src: Path) -> Iterator[tuple[str, dict] | Skip]:
    for row in read_csv(path, ("file", "caption"), src):
        if isinstance(row, Skip):
            yield row
            continue
        at, fields = row
        extra = sorted(((int(m.group(1)), v) for k, v in fields.items() if (m := _EXTRA.match(k))), key=lambda kv: kv[0])
        obj = {k: v for k, v in fields.items() if not _EXTRA.match(k)}
        obj["captions"] = [fields["caption"], *(v for _, v in extra)]
        yield at, obj


def _jsonl_rows(path: Path, src: Path) -> Iterator[tuple[str, dict] | Skip]:
    for row in read_jsonl(path, src):
        if isinstance(row, Skip):
            yield row
            continue
        at, obj = row
        caps = obj.get("captions", [obj["caption"]] if "caption" in obj else None)
        alts = obj.get("alt_texts", [])
        if not isinstance(alts, list):
            yield Skip(at, _str(obj.get("id")), f"'alt_texts' must be a list of captions, got {type(alts).__name__}")
            continue
        obj["captions"] = caps + alts if isinstance(caps, list) else caps
        yield at, obj


def _item(at: str, obj: dict, default_split: str) -> Item | Skip:
    file = obj.get("file")
    if not isinstance(file, str) or not file.strip():
        return Skip(at, _str(obj.get("id")), "no 'file' (the media file, relative to the media folder)")
    rid = _str(obj.get("id")) or re.sub(r"\.[^./]*$", "", file.strip()).replace("/", "_").replace("\\", "_")
    caps = obj.get("captions")
    if not isinstance(caps, list):
        return Skip(at, rid, "no 'caption' (or 'captions', a list)")
    captions = tuple(c for c in (clean_caption(x) for x in caps) if c)
    if not captions:
        return Skip(at, rid, "every caption is empty")
    audio = _str(obj.get("audio"))
    split = _str(obj.get("split")) or default_split
    return Item(rid, split, captions, file.strip(), audio or file.strip(), at)


def _str(value) -> str | None:
    """A stripped non-empty string (a JSON integer id as its digits), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None
