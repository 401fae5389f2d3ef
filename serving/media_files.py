"""What the search page's routes (serving/server/ui.py) serve, without the web framework: the page's files, the
media types, and the two checks on a media request (the byte range asked for, the path confined to the root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

UI_DIR = Path(__file__).resolve().parent / "ui"
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
               ".mkv": "video/x-matroska", ".m4a": "audio/mp4", ".mp3": "audio/mpeg", ".wav": "audio/wav",
               ".ogg": "audio/ogg", ".oga": "audio/ogg", ".flac": "audio/flac", ".aac": "audio/aac"}
CHUNK = 256 * 1024  # bytes per read when streaming a media file
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class BadRange(ValueError):
    """A Range header that names no single satisfiable byte range of the file: 416."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes, inclusive, a Range header asks for; None for no header (the whole file)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        raise BadRange(f"Range {header[:80]!r}: expected one range, bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX")
    if not match[1]:  # the last n bytes
        n = int(match[2])
        if n == 0 or size == 0:
            raise BadRange(f"Range {header!r}: an empty suffix of a {size}-byte file")
        return max(0, size - n), size - 1
    first = int(match[1])
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    if first >= size or (match[2] and int(match[2]) < first):
        raise BadRange(f"Range {header!r} is outside the file of {size} bytes")
    return first, last


def confined(root: Path, relative: str) -> Path | None:
    """`relative` resolved under `root` (symlinks followed), if it stays inside; None otherwise."""
    if not relative or os.path.isabs(relative) or "\x00" in relative:
        return None
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path != root else None
