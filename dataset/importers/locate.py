"""Finding a release's files: the annotation file of each split (a split whose file is missing is reported,
never dropped unsaid) and an item's media among the names the release's download tools give it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dataset.importers.base import PICKLE_SUFFIXES, ImportFormatError, Skip, annotation


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
    answer depends only on the candidates' order, never on the order of files on disk."""

    def __init__(self, src: Path):
        self.src = src
        self._listed: dict[str, frozenset[str]] = {}

    def first(self, candidates: Iterable[str]) -> str | None:
        for rel in candidates:
            folder, _, name = rel.rpartition("/")
            if name in self.names(folder):
                return rel
        return None

    def names(self, folder: str) -> frozenset[str]:
        """The names of the files (symlinks followed) in SRC/folder; empty when it is not a directory."""
        if folder not in self._listed:
            try:
                with os.scandir(self.src / folder) as entries:
                    self._listed[folder] = frozenset(e.name for e in entries if e.is_file())
            except OSError:
                self._listed[folder] = frozenset()
        return self._listed[folder]
