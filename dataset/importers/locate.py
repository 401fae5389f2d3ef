"""Finding a release's files and reading its entries: the annotation file of each split (a split whose file is
missing is reported, never dropped unsaid), an item's media among the folders and names its users and their
download tools put it under, naming one entry of a JSON annotation file, and reading the JSON list a
release ships."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dataset.importers.base import PICKLE_SUFFIXES, ImportFormatError, Skip, annotation, read_json, read_lines, where
from model.errors import PathEscapeError
from model.manifest import path_problem, resolve_media


def split_files(src: Path, names: dict[str, tuple[str, ...]]) -> tuple[list[tuple[str, Path]], list[Skip]]:
    """([(split, its annotation file)], [a Skip for each split whose file is missing]) for `names`, split ->
    the paths (relative to SRC) its file may have, the first that exists taken. A pickle is refused (see
    `annotation`); no file at all is an ImportFormatError naming every path tried."""
    found: list[tuple[str, Path]] = []
    missing: list[Skip] = []
    for split, options in names.items():
        path = optional_annotation(src, *options)
        if path is not None:
            found.append((split, path))
        else:
            missing.append(Skip(options[0], None, f"no {' or '.join(options)}: the {split} split is not imported"))
    if not found:
        tried = ", ".join(n for options in names.values() for n in options)
        raise ImportFormatError(src, f"none of {tried} (is this the directory the release unpacks to?)")
    return found, missing


def present_files(src: Path, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(split, its annotation file) for each (split, file name) whose file lies in SRC, a split without one
    left out; none at all is `annotation`'s ImportFormatError naming them (and a pickle lying there)."""
    pairs = list(pairs)
    files = [(split, src / name) for split, name in pairs if (src / name).is_file()]
    if not files:
        annotation(src, *(name for _, name in pairs))  # raises
    return files


def optional_annotation(src: Path, *names: str) -> Path | None:
    """The first of `names` that exists (see `annotation`: a pickle is refused, one lying beside too); None
    when none of them, nor a pickle of one, lies under SRC."""
    if any((src / n).is_file() or _pickled(src / n) for n in names):
        return annotation(src, *names)
    return None


def _pickled(path: Path) -> bool:
    return any(path.with_suffix(s).is_file() for s in PICKLE_SUFFIXES)


class MediaFinder:
    """The first of an item's candidate media paths (relative to SRC, "/"-separated) that is a file. Each
    directory is listed once, so trying many names per item costs no file-system call per name, and the
    answer depends only on the candidates' order, never on the order of files on disk. A candidate that
    would leave SRC (absolute, a '..' component, a symlink out) is never taken, nor its folder listed."""

    def __init__(self, src: Path):
        self.src = src
        self._listed: dict[str, frozenset[str]] = {}

    def first(self, candidates: Iterable[str]) -> str | None:
        for rel in candidates:
            folder, _, name = rel.rpartition("/")
            if path_problem(rel) is not None or name not in self.names(folder):
                continue
            try:
                resolve_media(self.src, rel)  # only for a match: a symlink that leads out of SRC is passed over
            except PathEscapeError:
                continue
            return rel
        return None

    def expected(self, candidates: Iterable[str]) -> str:
        """The first of `candidates` that is a file; when none is, the first one, so the skip write_dataset
        reports names where the file was expected."""
        names = list(candidates)
        found = self.first(names)
        return names[0] if found is None else found

    def names(self, folder: str) -> frozenset[str]:
        """The names of the files (symlinks followed) in SRC/folder; empty when it is not a directory."""
        if folder not in self._listed:
            try:
                with os.scandir(self.src / folder) as entries:
                    self._listed[folder] = frozenset(e.name for e in entries if e.is_file())
            except OSError:
                self._listed[folder] = frozenset()
        return self._listed[folder]


def first_file(src: Path, candidates: Iterable[str]) -> str:
    """MediaFinder(src).expected(candidates), for one lookup (a reader looking up many items keeps one
    MediaFinder, so each folder is listed once)."""
    return MediaFinder(src).expected(candidates)


def read_ids(path: Path, src: Path) -> Iterator[tuple[str, str] | Skip]:
    """(id, where) of each line of a split list (one id a line, as MSVD's and SoundDescs' lists are); a
    line that is not UTF-8 is a Skip."""
    for line in read_lines(path, src):
        if isinstance(line, Skip):
            yield line
            continue
        number, text = line
        yield text.strip(), where(path, src, number)


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
