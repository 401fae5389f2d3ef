"""`msrvtt` and `msrvtt-full`: MSR-VTT, as the retrieval literature ships it.

    omniretriever data import msrvtt      msrvtt_data --out data/msrvtt       # the 1k-A split
    omniretriever data import msrvtt-full msrvtt_data --out data/msrvtt-full  # the official split

The layout followed is CLIP4Clip's (github.com/ArrowLuo/CLIP4Clip, README "Data Preparing" and
dataloaders/dataloader_msrvtt_retrieval.py; the annotations are its release v0.0 msrvtt_data.zip):

    MSRVTT_JSFUSION_test.csv   key, vid_key, video_id, sentence: the 1k-A test, 1000 videos, one query each
    MSRVTT_train.9k.csv        video_id: the 9000 training videos of the 1k-A split
    MSRVTT_data.json           {"videos": [{"video_id", "split", ...}], "sentences": [{"video_id", "caption", ...}]}:
                               the official annotation, 20 captions per video, split train / validate / test
    MSRVTT_Videos/<video_id>.mp4  the clips (CLIP4Clip's README); `videos/all/` and `MSRVTT/videos/all/`, where
                               the Frozen in Time MSRVTT.zip unpacks, are looked in too, in that order

`msrvtt` writes the 1k-A split (JSFusion's, as collaborative-experts misc/datasets/msrvtt/README.md names it):
test from MSRVTT_JSFUSION_test.csv (required), in its row order, with the row's sentence as the main
caption, the one evaluation queries with; when MSRVTT_data.json lies beside it, the video's other captions
follow as alt_texts, so all 20 are kept. train from MSRVTT_train.9k.csv with all 20 captions from
MSRVTT_data.json, when both are there (the csv alone holds no captions: it is reported as a skip).

`msrvtt-full` writes the official split from MSRVTT_data.json alone: train (6513 videos), val (497, the
json's "validate") and test (2990), each video with its 20 captions in the json's order, the first the main.
Choose it by name: the two splits overlap, so one import never mixes them.

The clips are YouTube videos with sound, so audio is the mp4 too (write_dataset drops it for a file that
has no audio stream). A row naming a clip that is not there is a skip naming the row.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

from dataset.importers.base import (ImportFormatError, ImportOptions, Item, Skip, annotation, clean_caption, read_csv,
                                    read_json, where)
from dataset.importers.locate import MediaFinder, json_where, text_field

VERSION = ("MSR-VTT 1k-A (JSFusion) as CLIP4Clip ships it: github.com/ArrowLuo/CLIP4Clip release v0.0 msrvtt_data.zip "
           "(MSRVTT_JSFUSION_test.csv, MSRVTT_train.9k.csv, MSRVTT_data.json), clips MSRVTT_Videos/ or videos/all/")
FULL_VERSION = ("MSR-VTT official split (train 6513 / validate 497 / test 2990) from MSRVTT_data.json of "
                "github.com/ArrowLuo/CLIP4Clip release v0.0 msrvtt_data.zip, clips MSRVTT_Videos/ or videos/all/")
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
TRAIN_CSV = "MSRVTT_train.9k.csv"
DATA_JSON = "MSRVTT_data.json"
VIDEO_DIRS = ("MSRVTT_Videos", "videos/all", "MSRVTT/videos/all")
SPLITS = {"train": "train", "validate": "val", "test": "test"}  # MSRVTT_data.json's names -> ours

Captions = dict[str, list[str]]  # video_id -> its captions, in the json's order


def read_msrvtt(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    test_csv = annotation(src, TEST_CSV)
    finder = MediaFinder(src)
    captions: Captions = {}
    if (src / DATA_JSON).is_file():
        path = annotation(src, DATA_JSON)
        captions = yield from _json_captions(src, path, read_json(path))
    for row in read_csv(test_csv, ("video_id", "sentence"), src):
        if isinstance(row, Skip):
            yield row
            continue
        at, fields = row
        vid, sentence = fields["video_id"].strip(), clean_caption(fields["sentence"])
        if sentence is None:
            yield Skip(at, vid or None, "no sentence (the row's caption)")
            continue
        others = list(captions.get(vid, []))
        if sentence in others:
            others.remove(sentence)  # it is one of the video's 20: once, as the main caption
        yield _item(finder, vid, "test", (sentence, *others), at)
    if (src / TRAIN_CSV).is_file():
        yield from _train_9k(src, annotation(src, TRAIN_CSV), captions, finder)


def read_msrvtt_full(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    path = annotation(src, DATA_JSON)
    data = read_json(path)
    captions = yield from _json_captions(src, path, data)
    finder = MediaFinder(src)
    for i, video in enumerate(_section(data, path, "videos")):
        at = json_where(path, src, "videos", i)
        vid, split = text_field(video, "video_id"), text_field(video, "split")
        if vid is None:
            yield Skip(at, None, "no 'video_id'")
        elif split not in SPLITS:
            yield Skip(at, vid, f"split {split!r} is not one of {', '.join(SPLITS)}")
        elif not captions.get(vid):
            yield Skip(at, vid, f"no caption for it in {DATA_JSON} (sentences)")
        else:
            yield _item(finder, vid, SPLITS[split], tuple(captions[vid]), at)


def _train_9k(src: Path, path: Path, captions: Captions, finder: MediaFinder) -> Iterator[Item | Skip]:
    if not (src / DATA_JSON).is_file():
        yield Skip(where(path, src), None, f"lists the training videos, whose captions are in {DATA_JSON}, which is "
                                           "not in the source: the train split is not imported")
        return
    for row in read_csv(path, ("video_id",), src):
        if isinstance(row, Skip):
            yield row
            continue
        at, fields = row
        vid = fields["video_id"].strip()
        if not captions.get(vid):
            yield Skip(at, vid or None, f"no caption for it in {DATA_JSON} (sentences)")
            continue
        yield _item(finder, vid, "train", tuple(captions[vid]), at)


def _json_captions(src: Path, path: Path, data) -> Generator[Skip, None, Captions]:
    """Yields a Skip for each unusable sentence; returns video_id -> captions, in the json's order."""
    captions: Captions = {}
    for i, sentence in enumerate(_section(data, path, "sentences")):
        vid = text_field(sentence, "video_id")
        caption = clean_caption(sentence.get("caption")) if isinstance(sentence, dict) else None
        if vid is None or caption is None:
            yield Skip(json_where(path, src, "sentences", i), vid, "a sentence needs a 'video_id' and a 'caption'")
            continue
        captions.setdefault(vid, []).append(caption)
    return captions


def _section(data, path: Path, key: str) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ImportFormatError(path, f"expected a JSON object with a list {key!r} (MSR-VTT's videos and sentences)")
    return data[key]


def _item(finder: MediaFinder, vid: str, split: str, captions: tuple[str, ...], at: str) -> Item:
    video = finder.expected([f"{folder}/{vid}.mp4" for folder in VIDEO_DIRS])
    return Item(vid, split, captions, video, video, at)
