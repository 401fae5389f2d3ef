"""Importers: a team's own media library, or a public benchmark as its release ships it, into this
project's dataset layout (manifests/<split>.jsonl, media under the data root, null for a missing modality).

    import_dataset("clotho", Path("clotho_v2"), Path("data/clotho"))  -> ImportReport

Each format is one module holding a reader (src, options) -> Items and Skips and the VERSION of the layout
it follows; dataset.importers.base writes the dataset for all of them (see its docstring).
"""

from __future__ import annotations

from pathlib import Path

from dataset.importers import audiocaps, clotho, didemo, folder, msrvtt, msvd, omnibench, sounddescs, vatex
from dataset.importers.base import ImportFormatError, ImportOptions, ImportReport, Item, Reader, Skip, write_dataset

FORMATS: dict[str, tuple[Reader, str]] = {  # name -> (reader, the layout and version it follows)
    "folder": (folder.read_folder, folder.VERSION),
    "omniretriever-bench": (omnibench.read_omnibench, omnibench.VERSION),
    "msrvtt": (msrvtt.read_msrvtt, msrvtt.VERSION),  # the 1k-A split
    "msrvtt-full": (msrvtt.read_msrvtt_full, msrvtt.FULL_VERSION),  # the official train / val / test split
    "msvd": (msvd.read_msvd, msvd.VERSION),
    "didemo": (didemo.read_didemo, didemo.VERSION),
    "vatex": (vatex.read_vatex, vatex.VERSION),
    "clotho": (clotho.read_clotho, clotho.VERSION),
    "sounddescs": (sounddescs.read_sounddescs, sounddescs.VERSION),
    "audiocaps": (audiocaps.read_audiocaps, audiocaps.VERSION),
}

__all__ = ["FORMATS", "ImportFormatError", "ImportOptions", "ImportReport", "Item", "Skip", "import_dataset"]


def import_dataset(fmt: str, src: str | Path, out: str | Path, options: ImportOptions = ImportOptions()) -> ImportReport:
    """Read SRC in format `fmt` and write the dataset at OUT (see dataset.importers.base.write_dataset)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    src = Path(src)
    if not src.is_dir():
        raise ImportFormatError(src, "no such directory (give the directory the release unpacks to)")
    reader, _ = FORMATS[fmt]
    return write_dataset(fmt, src, Path(out), reader(src.resolve(), options), options)
