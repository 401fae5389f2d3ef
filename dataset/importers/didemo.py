"""`didemo`: DiDeMo (Distinct Describable Moments, Flickr videos) for paragraph retrieval.

    omniretriever data import didemo didemo --out data/didemo

The annotations are those of github.com/LisaAnne/LocalizingMoments (data/README.md):

    train_data.json, val_data.json, test_data.json   lists of moments, {"annotation_id", "description",
                     "video", "times", "dl_link", "num_segments"}; `times` holds each annotator's
                     [start, end] in 5-second chunks (chunk 0 is seconds 0-5). At least one file.
    videos/          the clips (DiDeMo_Videos/, CLIP4Clip's name, is looked in too)

A video has several moments. As in paragraph retrieval (CLIP4Clip, dataloaders/dataloader_didemo_retrieval.py)
its descriptions become one caption joined by spaces; here they are joined in the order of their times (by the
mean start chunk over annotators, then the mean end chunk, then the file's order), where CLIP4Clip keeps the
file's order, so the paragraph reads as the video runs. Items follow each file in the order its videos first
appear; the id is the "video" name without its extension. A moment without a description, or whose times are
not [start, end] pairs, is a skip naming the entry (`test_data.json[7]`, counting from 0).

On disk a clip's name depends on how it was fetched: LocalizingMoments' download_videos.py saves it under the
"video" name itself, download_videos_AWS.py as "<video>.mp4", and converted copies keep the stem with a new
extension. Each folder is tried in that order, then <stem> + .mp4, .avi, .mov, .m4v, .3gp, .wmv, .mpg: the first
file found is used, so the same tree always gives the same choice. The Flickr videos usually have sound, so
audio is the clip too (write_dataset drops it for a file without an audio stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import ImportOptions, Item, Skip, clean_caption
from dataset.importers.locate import MediaFinder, json_where, present_files, read_json_list, text_field

VERSION = ("DiDeMo: {train,val,test}_data.json of github.com/LisaAnne/LocalizingMoments data/, clips under videos/ "
           "by their 'video' name; moments joined into one paragraph per video in time order")
SPLIT_FILES = (("train", "train_data.json"), ("val", "val_data.json"), ("test", "test_data.json"))
VIDEO_DIRS = ("videos", "DiDeMo_Videos")
EXTENSIONS = (".mp4", ".avi", ".mov", ".m4v", ".3gp", ".wmv", ".mpg")

Moment = tuple[tuple[float, float], int, str]  # ((mean start, mean end) chunk, index in the file, description)


def read_didemo(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    files = present_files(src, SPLIT_FILES)
    finder = MediaFinder(src)
    for split, path in files:
        yield from _split(src, split, path, finder)


def _split(src: Path, split: str, path: Path, finder: MediaFinder) -> Iterator[Item | Skip]:
    moments: dict[str, list[Moment]] = {}  # video name -> its moments, videos in order of first appearance
    first: dict[str, str] = {}
    for i, row in enumerate(read_json_list(path)):
        at = json_where(path, src, i)
        video = text_field(row, "video")
        if video is None:
            yield Skip(at, None, "no 'video' (the clip's name)")
            continue
        description = clean_caption(row.get("description"))
        span = _span(row.get("times"))
        if description is None or span is None:
            reason = "no description" if description is None else "'times' is not a list of [start, end] chunk pairs"
            yield Skip(at, video_id(video), reason)
            continue
        moments.setdefault(video, []).append((span, i, description))
        first.setdefault(video, at)
    for video, rows in moments.items():
        paragraph = " ".join(description for _, _, description in sorted(rows))
        clip = finder.expected(candidates(video))
        yield Item(video_id(video), split, (paragraph,), clip, clip, first[video])


def _span(times) -> tuple[float, float] | None:
    """The mean start and mean end chunk over the annotators, or None when `times` is not [start, end] pairs."""
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(times, list) or not times:
        return None
    if not all(isinstance(t, list) and len(t) == 2 and number(t[0]) and number(t[1]) for t in times):
        return None
    return sum(t[0] for t in times) / len(times), sum(t[1] for t in times) / len(times)


def video_id(video: str) -> str:
    """The "video" name without a video extension ("x@N00_1_ab.mov" -> "x@N00_1_ab")."""
    stem, dot, ext = video.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in EXTENSIONS else video


def candidates(video: str) -> list[str]:
    """Where the clip may lie, in the order looked at (see the module docstring)."""
    stem = video_id(video)
    names = [video, f"{video}.mp4", *(stem + ext for ext in EXTENSIONS)]
    unique = list(dict.fromkeys(names))
    return [f"{folder}/{name}" for folder in VIDEO_DIRS for name in unique]
