"""`sounddescs`: SoundDescs (Koepke, Oncescu, Henriques, Akata, Albanie, "Audio Retrieval with Natural
Language Queries: A Benchmark Study", arXiv 2112.09418), BBC sound effects with their catalogue descriptions,
as github.com/akoepke/audio-retrieval-benchmark distributes and downloads them (README.md, "SoundDescs
dataset download and pre-processing"):

    SRC/descriptions.json       {id: description}: the release's sounddescs_data/descriptions.pkl converted
                                to JSON (a pickle is refused: loading one runs code; the error says how to
                                convert it once)
    SRC/train_list.txt          one id a line: the repository's data/SoundDescs/{train,val,test}_list.txt
    SRC/val_list.txt, test_list.txt
    SRC/audios/<id>.wav         the wavs flat, as its resampling step writes them (sounddescs_wavs_transforms.py
                                --exp resample --dest_folder SRC/audios: 16 kHz mono, lower-cased names), or
    SRC/audios/<id>/<id>.wav    as its download tool leaves them (sounddescs_download_audios.py --action
                                unzipping: one folder per id holding the zip's lower-cased wav)

Each annotation file may also sit where that repository keeps it (sounddescs_data/descriptions.json,
data/SoundDescs/<split>_list.txt). Where both wavs of an id exist the flat (resampled) one is taken.
categories.pkl (tags such as Nature) and extra_info.pkl (file format, sample rate) hold no captions and are
not read. Audio only: "video" is null. Items follow the split lists' order; an id without a description, a
list line that is not UTF-8 and a missing wav are reported as skipped, as is a split whose list is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import (ImportFormatError, ImportOptions, Item, Skip, annotation, clean_caption, read_json,
                                    where)
from dataset.importers.locate import MediaFinder, read_ids, split_files

VERSION = ("SoundDescs (arXiv 2112.09418; github.com/akoepke/audio-retrieval-benchmark README.md, "
           "sounddescs_download_audios.py, sounddescs_wavs_transforms.py, data/SoundDescs/*_list.txt): "
           "descriptions.pkl converted to descriptions.json, {train,val,test}_list.txt, audios/<id>.wav or "
           "audios/<id>/<id>.wav")
SPLITS = ("train", "val", "test")


def read_sounddescs(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    desc_path = annotation(src, "descriptions.json", "sounddescs_data/descriptions.json")
    descriptions = read_json(desc_path)
    if not isinstance(descriptions, dict):
        raise ImportFormatError(desc_path, f"expected an object {{id: description}}, got {type(descriptions).__name__}")
    lists, missing = split_files(src, {s: (f"{s}_list.txt", f"data/SoundDescs/{s}_list.txt") for s in SPLITS})
    yield from missing
    finder = MediaFinder(src)
    for split, path in lists:
        for entry in read_ids(path, src):
            if isinstance(entry, Skip):
                yield entry
                continue
            rid, at = entry
            captions = _captions(descriptions.get(rid))
            if not captions:
                yield Skip(at, rid, f"no description for this id in {where(desc_path, src)}")
                continue
            candidates = (f"audios/{rid}.wav", f"audios/{rid}/{rid}.wav")
            audio = finder.first(candidates)
            if audio is None:
                yield Skip(at, rid, f"audio: no {' or '.join(candidates)}")
                continue
            yield Item(rid, split, captions, None, audio, at)


def _captions(value) -> tuple[str, ...]:
    """A description (a string, or a list of them, the first the main one) as captions; () when none."""
    values = value if isinstance(value, list) else [value]
    return tuple(c for c in (clean_caption(v) for v in values) if c)
