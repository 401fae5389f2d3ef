"""`audiocaps`: AudioCaps (Kim et al., NAACL 2019), AudioSet clips of 10 s from YouTube with human captions,
its CSVs as github.com/cdjkim/audiocaps releases them (dataset/{train,val,test}.csv; AudioCaps 2.0 keeps the
names and columns):

    SRC/train.csv, val.csv, test.csv     audiocap_id, youtube_id, start_time, caption; one caption a row
                                         (also read from SRC/dataset/, that repository's folder)

The release holds no media: each team downloads the clips from YouTube with a tool of its choice, and the
tools name the files differently. A clip's file is looked for in these folders, in this order,

    video/<split>/  videos/<split>/  audio/<split>/  <split>/  audio_<rate>Hz/<split>/ (lowest rate first)

under these names, in this order, each with .mp4 .mkv .webm .wav .flac .m4a .ogg .mp3 (in that order):

    <youtube_id>_<start_time>              aac-datasets (github.com/Labbeti/aac-datasets,
                                           src/aac_datasets/datasets/functional/audiocaps.py: AUDIOCAPS/
                                           audio_32000Hz/<split>/<youtube_id>_<start_time>.flac)
    <youtube_id>_<start ms>_<end ms>       audiocaps-dl (github.com/xieh97/audiocaps-dl download.py: AudioCaps/
                                           <split>/, the end 10 s after the start)
    <audiocap_id>                          audiocaps-download (github.com/MorenoLaQuatra/audiocaps-download
                                           audiocaps_download/Downloader.py: <split>/<audiocap_id>.wav, one
                                           copy per caption; the first row's that exists is taken)
    <youtube_id>, Y<youtube_id>            a plain yt-dlp download; AudioSet's "Y" prefix

The first that exists is the item's media. A video file keeps its video when it has a video stream (probed
by write_dataset), else the item is audio only ("video": null); a clip none of whose names exists is
reported as skipped, naming what was looked for.

A clip has several captions in val and test (five) and sometimes in train: rows are grouped by youtube_id
and start_time into one item, in the order each clip first appears, its captions in row order (the first
row's is the main one). The id is <youtube_id>_<start_time>. A split whose CSV is missing is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dataset.importers.base import ImportOptions, Item, Skip, clean_caption, read_csv
from dataset.importers.locate import MediaFinder, split_files

VERSION = ("AudioCaps (github.com/cdjkim/audiocaps dataset/{train,val,test}.csv: audiocap_id, youtube_id, start_time, "
           "caption); media as named by aac-datasets (Labbeti/aac-datasets), audiocaps-dl (xieh97/audiocaps-dl) and "
           "audiocaps-download (MorenoLaQuatra/audiocaps-download), or <youtube_id>.<ext>")
SPLITS = ("train", "val", "test")
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
EXTENSIONS = ("mp4", "mkv", "webm", "wav", "flac", "m4a", "ogg", "mp3")  # video containers first: they may hold both
_RATE_DIR = re.compile(r"^audio_(\d+)Hz$")


@dataclass
class _Clip:
    youtube_id: str
    start: str  # the start time as the file names write it: whole seconds without ".0"
    start_ms: int
    where: str  # the clip's first row
    audiocap_ids: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


def read_audiocaps(src: Path, options: ImportOptions) -> Iterator[Item | Skip]:
    files, missing = split_files(src, {s: (f"{s}.csv", f"dataset/{s}.csv") for s in SPLITS})
    yield from missing
    finder = MediaFinder(src)
    for split, path in files:
        clips: dict[tuple[str, str], _Clip] = {}
        for row in read_csv(path, COLUMNS, src):
            if isinstance(row, Skip):
                yield row
                continue
            clip = _add_row(clips, *row)
            if isinstance(clip, Skip):
                yield clip
        folders = _folders(finder, split)
        for clip in clips.values():
            rid = f"{clip.youtube_id}_{clip.start}"
            media = finder.first(f"{d}/{n}.{e}" for d in folders for n in _names(clip) for e in EXTENSIONS)
            if media is None:
                yield Skip(clip.where, rid, f"no media file: looked for {', '.join(_names(clip))} with "
                                            f".{'/.'.join(EXTENSIONS)} in {', '.join(d + '/' for d in folders)}")
                continue
            yield Item(rid, split, tuple(clip.captions), media, media, clip.where)


def _add_row(clips: dict[tuple[str, str], _Clip], at: str, fields: dict[str, str]) -> _Clip | Skip:
    """Add a CSV row's caption to its clip (made on its first row), or why the row cannot be used."""
    youtube_id = fields["youtube_id"].strip()
    start = _seconds(fields["start_time"])
    if not youtube_id:
        return Skip(at, None, "empty youtube_id")
    if start is None:
        return Skip(at, youtube_id, f"start_time {fields['start_time']!r} is not a number of seconds")
    key = (youtube_id, start[0])
    clip = clips.get(key)
    if clip is None:
        clip = clips[key] = _Clip(youtube_id, start[0], start[1], at)
    caption = clean_caption(fields["caption"])
    if caption:
        clip.captions.append(caption)
    if fields["audiocap_id"].strip():
        clip.audiocap_ids.append(fields["audiocap_id"].strip())
    return clip


def _seconds(text: str) -> tuple[str, int] | None:
    """("30", 30000) for "30" or "30.0"; ("30.5", 30500) for "30.5"; None when not a time."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not 0 <= value < 1e7:  # also refuses nan and inf
        return None
    shown = str(int(value)) if value == int(value) else text.strip()
    return shown, int(round(value * 1000))


def _names(clip: _Clip) -> list[str]:
    """The clip's file names without extension, in the order they are tried."""
    names = [f"{clip.youtube_id}_{clip.start}", f"{clip.youtube_id}_{clip.start_ms}_{clip.start_ms + 10_000}"]
    names += [i for i in dict.fromkeys(clip.audiocap_ids)]
    return names + [clip.youtube_id, f"Y{clip.youtube_id}"]


def _folders(finder: MediaFinder, split: str) -> list[str]:
    """The folders a split's media may lie in, in the order they are tried (see the module docstring)."""
    rates = sorted((int(m.group(1)), p.name) for p in finder.src.iterdir()
                   if p.is_dir() and (m := _RATE_DIR.match(p.name)))
    return [f"video/{split}", f"videos/{split}", f"audio/{split}", split] + [f"{name}/{split}" for _, name in rates]
