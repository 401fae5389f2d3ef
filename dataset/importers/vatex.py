"""`vatex`: VATEX, English captions (YouTube clips of 600 human activities, 10 English captions each).

    omniretriever data import vatex vatex --out data/vatex

The annotations are the VATEX release (eric-xw.github.io/vatex-website/download.html, files under
eric-xw.github.io/vatex-website/data/):

    vatex_training_v1.0.json             -> train
    vatex_validation_v1.0.json           -> val
    vatex_public_test_english_v1.1.json  -> test (its English captions are public; at least one of the three)
                 each a list of {"videoID": "<youtube id>_<start>_<end>", "enCap": [10 captions], "chCap": [...]}
    videos/<videoID>.mp4                 the clips, trimmed to their 10 seconds (or <videoID>.mp4 in SRC itself)

Each entry becomes one item with id videoID and its English captions in their order, the first the main; the
Chinese captions (chCap) are ignored, and so is the private test file, which holds no captions. Retrieval
papers often cut the 3000 validation videos into 1500 val and 1500 test; this importer keeps the release's own
files as the splits. An entry without an English caption is a skip naming it (`vatex_training_v1.0.json[4]`,
counting from 0). The clips come from YouTube with sound, so audio is the mp4 too (write_dataset drops it for a
file without an audio stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dataset.importers.base import ImportOptions, Item, Skip, clean_caption
from dataset.importers.locate import MediaFinder, json_where, present_files, read_json_list, text_field

VERSION = ("VATEX v1.0 train/validation and v1.1 public test, English captions (enCap), from "
           "eric-xw.github.io/vatex-website/download.html; clips videos/<videoID>.mp4")
SPLIT_FILES = (("train", "vatex_training_v1.0.json"), ("val", "vatex_validation_v1.0.json"),
               ("test", "vatex_public_test_english_v1.1.json"))
VIDEO_DIRS = ("videos/", "")  # then SRC itself


def read_vatex(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    files = present_files(src, SPLIT_FILES)
    finder = MediaFinder(src)
    for split, path in files:
        for i, entry in enumerate(read_json_list(path)):
            at = json_where(path, src, i)
            vid = text_field(entry, "videoID")
            if vid is None:
                yield Skip(at, None, "no 'videoID'")
                continue
            english = entry.get("enCap")
            captions = tuple(c for c in (clean_caption(x) for x in english) if c) if isinstance(english, list) else ()
            if not captions:
                yield Skip(at, vid, "no English caption ('enCap')")
                continue
            video = finder.expected([f"{folder}{vid}.mp4" for folder in VIDEO_DIRS])
            yield Item(vid, split, captions, video, video, at)
