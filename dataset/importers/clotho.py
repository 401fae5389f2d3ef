"""`clotho`: Clotho v2 (Drossos et al., ICASSP 2020), audio captioning clips with five captions each, as
its Zenodo release (v2.1, https://zenodo.org/records/4783391) unpacks:

    SRC/clotho_captions_development.csv   file_name, caption_1 .. caption_5   -> split train
    SRC/clotho_captions_validation.csv                                        -> split val
    SRC/clotho_captions_evaluation.csv                                        -> split test
    SRC/development/<file_name>           the wav files (validation/, evaluation/ likewise)

The same tree is the one github.com/xieh97/dcase2022-audio-retrieval (scripts/__init__.py,
scripts/preprocess.py: the audio of a row is <split dir>/<file_name stripped>) and the DCASE language-based
audio retrieval baselines read. Audio only: "video" is null. An item's id is its file name without ".wav"
(it may hold spaces; a name repeated in another split is reported as a duplicate id), its captions
caption_1 (the main one) to caption_5 in that order, empty ones dropped. A split whose CSV is missing is
reported as skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import ImportOptions, Item, Skip, clean_caption, read_csv
from dataset.importers.locate import split_files

VERSION = ("Clotho v2.1 (https://zenodo.org/records/4783391): clotho_captions_{development,validation,evaluation}.csv "
           "(file_name, caption_1..caption_5) and the wavs under development/, validation/, evaluation/, as read by "
           "github.com/xieh97/dcase2022-audio-retrieval scripts/preprocess.py")
SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}  # our split -> Clotho's
CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))


def read_clotho(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    files, missing = split_files(src, {split: (f"clotho_captions_{name}.csv",) for split, name in SPLITS.items()})
    yield from missing
    for split, path in files:
        for row in read_csv(path, ("file_name", *CAPTIONS), src):
            if isinstance(row, Skip):
                yield row
                continue
            at, fields = row
            name = fields["file_name"].strip()
            if not name:
                yield Skip(at, None, "empty file_name")
                continue
            rid = name[:-4] if name.lower().endswith(".wav") else name
            captions = tuple(c for c in (clean_caption(fields[k]) for k in CAPTIONS) if c)
            yield Item(rid, split, captions, None, f"{SPLITS[split]}/{name}", at)
