"""`msvd`: MSVD (the Microsoft Research Video Description corpus, YouTube clips), its release plus the
standard split lists.

    omniretriever data import msvd msvd --out data/msvd

The clips and the English captions are the release at www.cs.utexas.edu/users/ml/clamp/videoDescription/
(YouTubeClips.tar, AllVideoDescriptions.txt); the split lists are those of collaborative-experts
(github.com/albanie/collaborative-experts misc/datasets/msvd/README.md: 1200 train / 100 val / 670 test
clips, the split of Venugopalan et al. 2015), which CLIP4Clip's msvd_data.zip ships too:

    YouTubeClips/<clip_id>.avi    the clips (MSVD_Videos/, CLIP4Clip's name, is looked in too; a clip
                                  converted to .mp4 is found under the same name)
    AllVideoDescriptions.txt      "<clip_id> <caption>" a line; lines starting with # are comments
    raw-captions.json             or: {"<clip_id>": [caption, ...]}, each caption text or a list of words,
                                  the JSON conversion of CLIP4Clip's raw-captions.pkl. The pickle itself is
                                  refused (unpickling runs code); the message says how to convert it.
                                  AllVideoDescriptions.txt is used when both are there.
    train_list.txt, val_list.txt, test_list.txt   the clip ids of each split, one a line (at least one)

Items follow the lists (train, val, test, each in its order), each clip with every English caption the
captions file gives it (about 40), in the file's order, the first the main. A listed clip without a caption,
or a captioned clip in no list, is a skip. MSVD's clips carry no usable sound, so audio is null.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

from dataset.importers.base import (ImportFormatError, ImportOptions, Item, Skip, annotation, clean_caption, read_json,
                                    read_lines, where)
from dataset.importers.locate import MediaFinder, json_where, read_ids

VERSION = ("MSVD: YouTubeClips.tar and AllVideoDescriptions.txt of www.cs.utexas.edu/users/ml/clamp/videoDescription/, "
           "split lists of github.com/albanie/collaborative-experts misc/datasets/msvd (1200/100/670)")
CAPTION_FILES = ("AllVideoDescriptions.txt", "raw-captions.json")
SPLIT_LISTS = (("train", "train_list.txt"), ("val", "val_list.txt"), ("test", "test_list.txt"))
VIDEO_DIRS = ("YouTubeClips", "MSVD_Videos")
EXTENSIONS = (".avi", ".mp4")

Captions = dict[str, tuple[list[str], str]]  # clip id -> (its captions, where the first one is)


def read_msvd(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    path = annotation(src, *CAPTION_FILES)
    lists = [(split, src / name) for split, name in SPLIT_LISTS if (src / name).is_file()]
    if not lists:
        raise ImportFormatError(src, f"no {', '.join(name for _, name in SPLIT_LISTS)}: MSVD's splits are these "
                                     "lists (collaborative-experts misc/datasets/msvd, or CLIP4Clip's msvd_data.zip)")
    reader = _descriptions if path.suffix == ".txt" else _raw_captions
    captions = yield from reader(src, path)
    listed: set[str] = set()
    finder = MediaFinder(src)
    for split, list_path in lists:
        for entry in read_ids(list_path, src):
            if isinstance(entry, Skip):
                yield entry
                continue
            clip, at = entry
            listed.add(clip)
            if clip not in captions:
                yield Skip(at, clip, f"no caption for it in {path.name}")
                continue
            video = finder.expected([f"{folder}/{clip}{ext}" for folder in VIDEO_DIRS for ext in EXTENSIONS])
            yield Item(clip, split, tuple(captions[clip][0]), video, None, at)
    names = ", ".join(list_path.name for _, list_path in lists)
    for clip, (_, at) in captions.items():
        if clip not in listed:
            yield Skip(at, clip, f"captioned, but in none of {names}")


def _descriptions(src: Path, path: Path) -> Generator[Skip, None, Captions]:
    """AllVideoDescriptions.txt: "<clip_id> <caption>" a line, # comments."""
    captions: Captions = {}
    for line in read_lines(path, src):
        if isinstance(line, Skip):
            yield line
            continue
        number, text = line
        if text.lstrip().startswith("#"):
            continue
        clip, *rest = text.split(None, 1)
        caption, at = clean_caption(rest[0] if rest else None), where(path, src, number)
        if caption is None:
            yield Skip(at, clip, "no caption after the clip id")
            continue
        captions.setdefault(clip, ([], at))[0].append(caption)
    return captions


def _raw_captions(src: Path, path: Path) -> Generator[Skip, None, Captions]:
    """raw-captions.json: {clip_id: [caption, ...]}, a caption as text or as its list of words."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ImportFormatError(path, f"expected a JSON object of clip id -> captions, got {type(data).__name__}")
    captions: Captions = {}
    for clip, entries in data.items():
        if not isinstance(entries, list):
            yield Skip(json_where(path, src, clip), clip, f"expected a list of captions, got {type(entries).__name__}")
            continue
        for j, entry in enumerate(entries):
            words = entry if isinstance(entry, list) and all(isinstance(w, str) for w in entry) else None
            caption = clean_caption(" ".join(words) if words is not None else entry)
            if caption is None:
                yield Skip(json_where(path, src, clip, j), clip, "a caption must be text or a list of words, not empty")
                continue
            captions.setdefault(clip, ([], json_where(path, src, clip)))[0].append(caption)
    return captions
