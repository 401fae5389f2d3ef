"""What the benchmark readers share beyond base.py: finding a clip's file among the folders and names its
users put it under, naming one entry of a JSON annotation file, and reading the JSON list a release ships."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataset.importers.base import ImportFormatError, read_json, where
from model.errors import PathEscapeError
from model.manifest import resolve_media


def first_file(src: Path, candidates: Iterable[str]) -> str:
    """The first of `candidates` (paths relative to SRC, in the order given) that is a file; when none is,
    the first one, so the skip write_dataset reports names where the file was expected. A candidate that
    would leave SRC is never looked at."""
    names = list(candidates)
    for rel in names:
        try:
            if resolve_media(src, rel).is_file():
                return rel
        except PathEscapeError:
            continue
    return names[0]


def json_where(path: Path, src: Path, *keys: str | int) -> str:
    """One entry of a JSON annotation file as messages name it: `train_data.json[3]` (list entries count
    from 0), `MSRVTT_data.json["videos"][12]`, `raw-captions.json["-4wsuPCjDBc_5_15"]`."""
    return where(path, src) + "".join(f"[{json.dumps(k, ensure_ascii=False)}]" for k in keys)


def read_json_list(path: Path) -> list[Any]:
    """A JSON annotation file whose top level is a list (ImportFormatError otherwise)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise ImportFormatError(path, f"expected a list of annotations at the top level, got {type(data).__name__}")
    return data


def text_field(obj: Any, key: str) -> str | None:
    """obj[key] stripped, when obj is a dict and that is non-empty text."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None
