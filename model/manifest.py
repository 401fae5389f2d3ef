"""Manifests of the OmniRetriever-Bench layout, and media paths confined to the data root.

    DATA/manifests/<split>.jsonl   one record a line: {"id", "text", "video", "audio"}
    DATA/videos/<id>.mp4           video with its audio muxed in; "audio" may name the same mp4

An item without video or without audio (an AudioCaps clip, a silent film) writes null in that field:
{"id": "x", "text": "...", "video": null, "audio": "audio/x.wav"}. A record needs at least one of the two.

A record may also carry "alt_texts": a list of other captions of the same clip (as MSR-VTT and
AudioCaps give several per training video). Training draws one of a clip's captions per step;
evaluation always queries with "text". A record without alt_texts is written without the field,
so a plain manifest stays byte-identical to the released format.

`read_manifest` raises on the first bad line; `scan_manifest` reports every line, good or bad,
for callers that must account for each record (validation). `resolve_media` is the one place a
manifest path becomes a filesystem path: it refuses anything that would leave the data root.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from model.errors import ManifestError, PathEscapeError
from model.modalities import A, T, V

FIELDS: tuple[str, ...] = ("id", "text", "video", "audio")
MEDIA_FIELDS: tuple[str, ...] = ("video", "audio")  # a path, or null for an item without that modality
ALT_TEXTS = "alt_texts"  # optional: a list of further captions of the clip
MAX_ALT_TEXTS = 100  # per record; the line-size limit bounds their length
MAX_LINE_BYTES = 1 << 20  # a manifest line over 1 MiB is refused rather than parsed


@dataclass(frozen=True)
class Record:
    """One audio-video-text triple. `video` and `audio` are paths relative to the data root, None for an
    item without that modality (never both); `alt_texts` are further captions of the same clip (empty for
    most datasets and every test split)."""

    id: str
    text: str
    video: str | None
    audio: str | None
    alt_texts: tuple[str, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the record declares, in MODALITIES order: T always, V and A when it names them."""
        return (T,) + ((V,) if self.video is not None else ()) + ((A,) if self.audio is not None else ())

    @property
    def captions(self) -> tuple[str, ...]:
        """Every caption of the clip, `text` first."""
        return (self.text, *self.alt_texts)

    def to_json(self) -> str:
        obj = asdict(self)
        if not self.alt_texts:
            del obj[ALT_TEXTS]  # absent, not [], so a plain manifest stays in the released format
        return json.dumps(obj, ensure_ascii=False)


@dataclass(frozen=True)
class ScannedLine:
    """One manifest line: its number, its raw text, and either a Record or the error it raised."""

    line: int
    raw: str
    record: Record | None
    error: ManifestError | None


def manifest_path(data_root: str | Path, split: str) -> Path:
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise ValueError(f"split name {split!r} is not a plain name such as 'train' or 'test'")
    return Path(data_root) / "manifests" / f"{split}.jsonl"


def existing_split(data_root: str | Path, split: str) -> Path:
    """The manifest of `split`, checked to exist (a cheap check before any decoding); else
    FileNotFoundError naming the missing directory or file and the splits the data root does hold."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset directory (expected a root holding manifests/{split}.jsonl)")
    path = manifest_path(root, split)
    if not path.is_file():
        have = sorted(p.stem for p in (root / "manifests").glob("*.jsonl"))
        held = f"its splits are {', '.join(have)}" if have else "it has no manifests/*.jsonl at all"
        raise FileNotFoundError(f"{root} has no {split!r} split: {path} does not exist ({held})")
    return path


def parse_line(raw: str, *, source: str | Path = "<manifest>", line: int | None = None) -> Record:
    """Parse one JSON line into a Record, or raise ManifestError naming the source and line."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(source, line, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ManifestError(source, line, f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id") if isinstance(obj.get("id"), str) else None
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise ManifestError(source, line, f"missing field(s) {', '.join(missing)}", rid)
    for field in FIELDS:
        if not isinstance(obj[field], str) and not (field in MEDIA_FIELDS and obj[field] is None):
            kind = "a string" if field not in MEDIA_FIELDS else "a path (a string), or null for an item without it"
            raise ManifestError(source, line, f"field {field!r} must be {kind}, got {type(obj[field]).__name__}", rid)
    if not obj["id"].strip():
        raise ManifestError(source, line, "field 'id' is empty")
    if not obj["text"].strip():
        raise ManifestError(source, line, "field 'text' (the caption) is empty or only whitespace", rid)
    for field in MEDIA_FIELDS:
        if obj[field] is not None and not obj[field].strip():
            raise ManifestError(source, line, f"field {field!r} is empty (write null for an item without {field})", rid)
    if obj["video"] is None and obj["audio"] is None:
        raise ManifestError(source, line, "fields 'video' and 'audio' are both null: an item needs at least one", rid)
    return Record(obj["id"], obj["text"], obj["video"], obj["audio"], parse_alt_texts(obj, source, line, rid))


def parse_alt_texts(obj: dict, source: str | Path = "<manifest>", line: int | None = None,
                    rid: str | None = None) -> tuple[str, ...]:
    """The record's alt_texts as a tuple (empty when absent), or ManifestError saying which one is wrong."""
    if ALT_TEXTS not in obj:
        return ()
    alts = obj[ALT_TEXTS]
    if not isinstance(alts, list):
        raise ManifestError(source, line, f"field {ALT_TEXTS!r} must be a list of strings, got {type(alts).__name__}", rid)
    if len(alts) > MAX_ALT_TEXTS:
        raise ManifestError(source, line, f"field {ALT_TEXTS!r} holds {len(alts)} captions, over the limit of {MAX_ALT_TEXTS}", rid)
    for i, alt in enumerate(alts):
        if not isinstance(alt, str):
            raise ManifestError(source, line, f"{ALT_TEXTS}[{i}] must be a string, got {type(alt).__name__}", rid)
        if not alt.strip():
            raise ManifestError(source, line, f"{ALT_TEXTS}[{i}] is empty or only whitespace", rid)
    return tuple(alts)


def scan_manifest(path: str | Path) -> Iterator[ScannedLine]:
    """Every non-blank line of a manifest with its Record or its error; never raises on a bad line.

    Raises ManifestError only when the file itself cannot be read (missing, a directory).
    Non-UTF-8 bytes make that one line an error, the rest are still read.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ManifestError(path, None, f"cannot open manifest: {exc.strerror or exc}") from None
    with fh:
        for lineno, rawb in enumerate(fh, start=1):
            if len(rawb) > MAX_LINE_BYTES:
                err = ManifestError(path, lineno, f"line is {len(rawb)} bytes, over the {MAX_LINE_BYTES}-byte limit")
                yield ScannedLine(lineno, rawb[:200].decode("utf-8", "replace"), None, err)
                continue
            try:
                raw = rawb.decode("utf-8")
            except UnicodeDecodeError as exc:
                err = ManifestError(path, lineno, f"not UTF-8 (invalid byte at offset {exc.start})")
                yield ScannedLine(lineno, rawb.decode("utf-8", "replace").rstrip("\r\n"), None, err)
                continue
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            try:
                yield ScannedLine(lineno, raw, parse_line(raw, source=path, line=lineno), None)
            except ManifestError as err:
                yield ScannedLine(lineno, raw, None, err)


def read_manifest(path: str | Path, *, unique_ids: bool = True) -> list[Record]:
    """All records of a manifest; the first bad line (or a repeated id) raises ManifestError."""
    records: list[Record] = []
    seen: dict[str, int] = {}
    for item in scan_manifest(path):
        if item.error is not None:
            raise item.error
        assert item.record is not None
        if unique_ids and item.record.id in seen:
            raise ManifestError(path, item.line, f"duplicate id (first seen on line {seen[item.record.id]})", item.record.id)
        seen[item.record.id] = item.line
        records.append(item.record)
    return records


def read_split(data_root: str | Path, split: str) -> list[Record]:
    return read_manifest(manifest_path(data_root, split))


def write_manifest(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records as JSON lines atomically: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; a manifest is ordinary shared data
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for rec in records:
                fh.write(rec.to_json() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def path_problem(rel: str) -> str | None:
    """Why a media path cannot lie inside any root by its text alone (empty, a NUL byte, absolute, a '..'
    component), or None. resolve_media also follows symlinks."""
    if not rel or "\x00" in rel:
        return "empty or contains a NUL byte"
    posix = rel.replace("\\", "/")
    if posix.startswith("/") or Path(rel).is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        return "absolute paths are not allowed; paths are relative to the data root"
    if ".." in posix.split("/"):
        return "'..' components are not allowed"
    return None


def resolve_media(data_root: str | Path, rel: str) -> Path:
    """The real path of a manifest media path, guaranteed to lie inside the data root.

    Refused: absolute paths, any '..' component, and paths whose real location (after
    following symlinks) is outside the root. The file need not exist; decoding reports that.
    """
    root = Path(data_root).resolve()
    problem = path_problem(rel)
    if problem is not None:
        raise PathEscapeError(rel, root, problem)
    real = (root / rel.replace("\\", "/")).resolve()
    if real != root and root not in real.parents:
        raise PathEscapeError(rel, root, f"resolves to {real}, outside the data root (symlink out?)")
    return real
