"""What every importer shares: the Item a format reader yields, the Skip it reports, reading annotation files
safely (CSV with a BOM or Windows line endings, JSON, text; never a pickle), and writing the dataset.

A format reader is a function (src, options) -> iterator of Item | Skip. It knows one release's layout and
nothing else; `write_dataset` does the rest for all of them:

    OUT/manifests/<split>.jsonl   {"id", "text", "video", "audio"[, "alt_texts"]}; null for a modality the
                                  item does not have
    OUT/media/<path in SRC>       each media file, copied (or hard-linked) under the same relative path
    OUT/import.json               what was imported from where, per split and modality, and every skip

Each path a reader names is checked to stay inside SRC, each file to exist; a repeated id, an item with no
caption or no media, or a bad annotation row is skipped with its reason, never dropped silently. The
dataset is built beside OUT and moved into place at the end (a failure leaves OUT as it was), and the
same SRC gives the same bytes every time: nothing depends on the clock, the machine, where SRC lies (reasons
name files relative to it) or the file order on disk.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.errors import OmniRetrieverError, PathEscapeError
from model.manifest import ALT_TEXTS, MAX_ALT_TEXTS, manifest_path, resolve_media

MEDIA_MODES = ("copy", "link")  # link: a hard link (same file system), else copy
REPORT = "import.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ImportFormatError(OmniRetrieverError, ValueError):
    """The source cannot be imported at all (a missing annotation file, a missing column, a pickle)."""

    def __init__(self, source: str | Path, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = str(source), reason

    def __reduce__(self):
        return (type(self), (self.source, self.reason))


class NothingImported(ImportFormatError):
    """No item of the source could be imported; `skipped` says why for each. OUT is left as it was."""

    def __init__(self, source: str | Path, skipped: list["Skip"]):
        first = f"; the first: {skipped[0].where}: {skipped[0].reason}" if skipped else ""
        super().__init__(source, f"nothing importable ({len(skipped)} skipped{first})")
        self.skipped = list(skipped)

    def __reduce__(self):
        return (type(self), (self.source, self.skipped))


@dataclass(frozen=True)
class Item:
    """One item as a release describes it: media paths relative to SRC (None: the item has no such modality)."""

    id: str
    split: str
    captions: tuple[str, ...]  # main caption first
    video: str | None
    audio: str | None
    where: str  # the annotation file and line or row it came from, for messages


@dataclass(frozen=True)
class Skip:
    """An item (or annotation row) left out, and why."""

    where: str
    id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class ImportOptions:
    captions: Path | None = None  # `folder`: the captions file (CSV or JSONL)
    split: str = "test"  # `folder`: the split of rows that do not name one
    media: Literal["copy", "link"] = "copy"


@dataclass
class ImportReport:
    format: str
    out: Path
    items: dict[str, int]  # split -> items written
    modalities: dict[str, int]  # "tva" / "tv" / "at" -> items
    captions: int  # captions written, every item's
    skipped: list[Skip] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "items": self.items, "modalities": self.modalities, "captions": self.captions,
                "skipped": [s.to_dict() for s in self.skipped]}


Reader = Callable[[Path, ImportOptions], Iterable["Item | Skip"]]


def where(path: Path, src: Path, line: int | None = None) -> str:
    """`file:line` relative to SRC, as messages name annotation rows; a file outside SRC (a captions file
    given on the command line) by its name, so that import.json holds no path of this machine."""
    try:
        shown = path.relative_to(src).as_posix()
    except ValueError:
        shown = path.name
    return shown if line is None else f"{shown}:{line}"


def refuse_pickle(path: Path) -> None:
    """ImportFormatError for a pickle (by name or by its first byte): unpickling runs code, so it is never read."""
    if path.suffix.lower() in PICKLE_SUFFIXES or _starts_like_pickle(path):
        raise ImportFormatError(path, "is a Python pickle; pickles can run code when loaded and are never read here. "
                                      "Convert it once, in an environment you trust, to JSON (python -c \"import json, "
                                      "pickle, sys; json.dump(pickle.load(open(sys.argv[1], 'rb')), open(sys.argv[2], "
                                      "'w'))\" FILE.pkl FILE.json) and import again")


def _starts_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # PROTO opcode, protocols 2-5


def annotation(src: Path, *names: str) -> Path:
    """The first of `names` (paths relative to SRC) that exists, refused if a pickle; else ImportFormatError
    naming every name tried (and a pickle of the same stem lying there, which must be converted first)."""
    for name in names:
        path = src / name
        if path.is_file():
            refuse_pickle(path)
            return path
    for name in names:
        for suffix in PICKLE_SUFFIXES:
            pickled = (src / name).with_suffix(suffix)
            if pickled.is_file():
                refuse_pickle(pickled)
    raise ImportFormatError(src, f"no {' or '.join(names)} (is this the directory the release unpacks to?)")


def read_text(path: Path) -> str:
    """A whole annotation file as text (UTF-8, a BOM dropped, Windows line endings read as newlines)."""
    refuse_pickle(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFormatError(path, f"line {line} is not UTF-8 (invalid byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def read_lines(path: Path, src: Path | None = None) -> Iterator[tuple[int, str] | Skip]:
    """(line number, text) of each non-blank line (a BOM dropped, Windows line endings fine); a line that is
    not UTF-8 is a Skip naming it (relative to `src`)."""
    refuse_pickle(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Skip(where(path, src or path.parent, number), None, f"not UTF-8 (invalid byte at column {exc.start + 1})")
            continue
        if text.strip():
            yield number, text


def read_jsonl(path: Path, src: Path | None = None) -> Iterator[tuple[str, dict] | Skip]:
    """(where, object) of each JSON-object line; a line that is not UTF-8, not JSON or not an object is a Skip."""
    src = src or path.parent
    for line in read_lines(path, src):
        if isinstance(line, Skip):
            yield line
            continue
        number, text = line
        at = where(path, src, number)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Skip(at, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            yield Skip(at, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield at, obj


def read_csv(path: Path, required: tuple[str, ...], src: Path | None = None
             ) -> Iterator[tuple[str, dict[str, str]] | Skip]:
    """(where, row) of each CSV row as a dict by header, `where` naming the line the row starts on (a quoted
    field may span lines); a BOM and Windows line endings are fine, a row that is not UTF-8 or has the wrong
    number of fields is a Skip, and a header that is not UTF-8 or lacks a `required` column is an
    ImportFormatError (naming the columns it has)."""
    src = src or path.parent
    lines = list(read_lines(path, src))
    if lines and isinstance(lines[0], Skip):
        raise ImportFormatError(path, f"the header row is {lines[0].reason}: save the file as UTF-8")
    yield from (x for x in lines if isinstance(x, Skip))
    good = [x for x in lines if not isinstance(x, Skip)]
    if not good:
        raise ImportFormatError(path, "is empty: expected a header row with " + ", ".join(required))
    numbers = [n for n, _ in good]
    reader = csv.reader(io.StringIO("\n".join(t for _, t in good)))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise ImportFormatError(path, f"header row does not parse as CSV ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportFormatError(path, f"has no column {', '.join(repr(c) for c in missing)} (its columns: "
                                      f"{', '.join(repr(h) for h in header) or 'none'})")
    while True:
        start = reader.line_num  # lines read so far: the row starts on the next (a quoted field may span lines)
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFormatError(where(path, src, numbers[start]), f"does not parse as CSV ({exc})") from None
        at = where(path, src, numbers[start])
        if len(fields) != len(header):
            yield Skip(at, None, f"{len(fields)} fields where the header has {len(header)}")
            continue
        yield at, dict(zip(header, fields))


def clean_caption(text: Any) -> str | None:
    """A caption with surrounding whitespace removed, or None when it is not text or holds nothing."""
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text or None


def write_dataset(fmt: str, src: Path, out: Path, records: Iterable[Item | Skip],
                  options: ImportOptions = ImportOptions()) -> ImportReport:
    """Check every item, copy (or link) its media under OUT/media, write the manifests and import.json."""
    if options.media not in MEDIA_MODES:
        raise ValueError(f"media must be one of {', '.join(MEDIA_MODES)}, got {options.media!r}")
    src, out = Path(src).resolve(), Path(out)
    if out.exists() and not (out / REPORT).is_file():
        raise FileExistsError(f"{out} exists and is not an import (no {REPORT}): choose another --out or remove it")
    if out.exists() and (src == out.resolve() or out.resolve() in src.parents):
        raise ValueError(f"{src} lies inside {out}, which the import replaces (its files would be deleted): "
                         "choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a dataset is ordinary shared data
    try:
        report = _write(fmt, src, staging, records, options)
        if not report.items:
            raise NothingImported(src, report.skipped)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.out = out
    return report


def _write(fmt: str, src: Path, staging: Path, records: Iterable[Item | Skip], options: ImportOptions) -> ImportReport:
    skipped: list[Skip] = []
    by_split: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, str] = {}
    copied: dict[Path, str] = {}
    streams: dict[Path, set[str]] = {}
    for record in records:
        if isinstance(record, Skip):
            skipped.append(record)
            continue
        problem = _check(record, first)
        media: dict[str, str | None] = {}
        if problem is None:
            media, problem = _media(src, record, staging, copied, options.media, streams)
        if problem is not None:
            skipped.append(Skip(record.where, record.id or None, problem))
            continue
        first[record.id] = record.where
        captions = list(record.captions)
        obj: dict[str, Any] = {"id": record.id, "text": captions[0], **media}
        if len(captions) > 1:
            obj[ALT_TEXTS] = captions[1:]
        by_split.setdefault(record.split, []).append(obj)
    for split, rows in by_split.items():
        path = manifest_path(staging, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            for obj in rows:
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
    modalities: dict[str, int] = {}
    for rows in by_split.values():
        for obj in rows:
            key = "t" + ("v" if obj["video"] else "") + ("a" if obj["audio"] else "")
            key = {"tv": "tv", "ta": "at", "tva": "tva"}[key]
            modalities[key] = modalities.get(key, 0) + 1
    report = ImportReport(fmt, staging, {s: len(r) for s, r in sorted(by_split.items())}, dict(sorted(modalities.items())),
                          sum(1 + len(o.get(ALT_TEXTS, [])) for rows in by_split.values() for o in rows), skipped)
    (staging / REPORT).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _check(item: Item, first: dict[str, str]) -> str | None:
    if not item.id or _CONTROL.search(item.id) or "/" in item.id or item.id != item.id.strip():
        return f"id {item.id!r} is empty, holds a slash or control characters, or has surrounding spaces"
    if item.id in first:
        return f"duplicate id (first seen at {first[item.id]})"
    if not item.split or "/" in item.split or "\\" in item.split or item.split.startswith("."):
        return f"split {item.split!r} is not a plain name"
    if not item.captions:
        return "no caption"
    if len(item.captions) > MAX_ALT_TEXTS + 1:
        return f"{len(item.captions)} captions, over the limit of {MAX_ALT_TEXTS + 1}"
    bad = next((c for c in item.captions if _CONTROL.search(c) or "\ufffd" in c), None)
    if bad is not None:
        return f"caption {bad[:40]!r} holds control or replacement characters"
    if item.video is None and item.audio is None:
        return "no video and no audio file"
    return None


def _media(src: Path, item: Item, staging: Path, copied: dict[Path, str], mode: str,
           streams: dict[Path, set[str]]) -> tuple[dict[str, str | None], str | None]:
    """The item's "video" and "audio" paths in the dataset, each kept only when its file holds that stream
    (cover art is not video), or why the item cannot be imported."""
    media: dict[str, str | None] = {}
    for role in ("video", "audio"):
        rel = getattr(item, role)
        if rel is None:
            media[role] = None
            continue
        try:
            real = resolve_media(src, rel)  # PathEscapeError for anything leaving SRC
            if not real.is_file():
                raise FileNotFoundError(f"{rel}: {'not a file' if real.exists() else 'no such file'}")
            if real not in streams:
                streams[real] = stream_roles(real)
        except PathEscapeError as exc:
            return {}, f"{role}: {rel}: {exc.reason}"
        except (FileNotFoundError, OSError) as exc:
            return {}, f"{role}: {exc}"
        media[role] = rel if role in streams[real] else None
    if media["video"] is None and media["audio"] is None:
        named = sorted({getattr(item, r) for r in ("video", "audio") if getattr(item, r)})
        return {}, f"{', '.join(named)}: no video or audio stream (not media, or cover art only)"
    return {role: None if rel is None else _place(src, rel, staging, copied, mode) for role, rel in media.items()}, None


def stream_roles(path: Path) -> set[str]:
    """Which of "video" and "audio" a media file holds (cover art is not video); empty when it does not open."""
    import av

    from model.media.streams import video_streams

    try:
        with av.open(str(path)) as container:
            return ({"video"} if video_streams(container) else set()) | ({"audio"} if container.streams.audio else set())
    except (av.error.FFmpegError, OSError, EOFError, ValueError):
        return set()


def _place(src: Path, rel: str, staging: Path, copied: dict[Path, str], mode: str) -> str:
    """The media file's path in the dataset (media/<rel>), copied or linked there once."""
    real = resolve_media(src, rel)  # PathEscapeError for anything leaving SRC
    if real in copied:
        return copied[real]
    if not real.is_file():
        raise FileNotFoundError(f"{rel}: no such file under {src}" if not real.exists() else f"{rel}: not a file")
    target = Path("media") / real.relative_to(src)
    dest = staging / target
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        try:
            os.link(real, dest)
        except OSError:
            shutil.copyfile(real, dest)  # another file system (or no hard links): a copy, same bytes
    else:
        shutil.copyfile(real, dest)
    copied[real] = target.as_posix()
    return copied[real]


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace OUT by the staged dataset (OUT, when it exists, must be an earlier import)."""
    if out.exists():
        if not (out / REPORT).is_file():
            raise FileExistsError(f"{out} exists and is not an import (no {REPORT}): choose another --out or remove it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
