"""A decoded-feature cache so training does not decode every mp4 every epoch.

Entries are safetensors files (no pickle) under the cache root, keyed by

    sha256(CACHE_FORMAT, DecodeConfig fingerprint, MediaLimits, sha256(video bytes), sha256(audio bytes)[, windows])

("-" for a record without video or without audio; the window length and stride when a long clip is cut)

with the audio input kind in the settings too when it is not the tiny encoder's log-mel ("waveform" for
the Qwen2.5-Omni backbone): a log-mel entry's key is what it always was, and no two kinds share a key.

so a changed file (its bytes, not its mtime) or changed decoding settings is never served stale.
Hashing a clip costs a read of the file, far less than decoding it. Writes are atomic (temp file
and rename), so a crash leaves either no entry or a whole one; an unreadable entry is a miss and is
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from model.media import Clip, DecodeConfig, MediaLimits, WindowedClip, Windowing, check_file, decode_windows

# v2: frames as a player shows them (display matrix, picked by presentation time), audio on the video's
# timeline. The default dataset decodes to the same features as under v1; other media may not.
# v3: an entry holds W windows (W = 1 for a whole clip), their spans and the clip's length, and whether the
# item has video and audio (a record may lack either). Same features as v2.
CACHE_FORMAT = "omniretriever-features-v3"
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rewrites: int = 0  # unreadable entries replaced


class FeatureCache:
    """get(video, audio) -> Clip and get_windows(video, audio, windowing) -> WindowedClip, decoding only on a
    miss. Either path may be None: the record has no video, or no audio."""

    def __init__(self, root: str | Path, config: DecodeConfig = DecodeConfig(), limits: MediaLimits = MediaLimits(),
                 audio_input: str = "log_mel"):
        self.root = Path(root)
        self.config = config
        self.limits = limits
        self.audio_input = audio_input
        self.stats = CacheStats()
        settings = {"format": CACHE_FORMAT, "decode": asdict(config), "limits": asdict(limits)}
        if audio_input != "log_mel":
            settings["audio_input"] = audio_input
        self._settings = json.dumps(settings, sort_keys=True)

    def key(self, video: str | Path | None, audio: str | Path | None, windowing: Windowing | None = None) -> str:
        video_path = check_file(video, self.limits) if video is not None else None
        audio_path = check_file(audio, self.limits) if audio is not None else None
        vd = file_digest(video_path) if video_path is not None else "-"
        ad = vd if audio_path == video_path else (file_digest(audio_path) if audio_path is not None else "-")
        cut = "" if windowing is None else f"|window {windowing.seconds!r} {windowing.stride!r}"
        return hashlib.sha256(f"{self._settings}|{vd}|{ad}{cut}".encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, video: str | Path | None, audio: str | Path | None) -> Clip:
        return self.get_windows(video, audio, None).first()

    def get_windows(self, video: str | Path | None, audio: str | Path | None,
                    windowing: Windowing | None) -> WindowedClip:
        entry = self.path_for(self.key(video, audio, windowing))
        if entry.exists():
            try:
                t = load_file(entry)
                clip = WindowedClip(frames=t["frames"], mel=t["mel"], spans=[(float(a), float(b)) for a, b in t["spans"]],
                                    seconds=float(t["seconds"][0]), has_video=bool(t["flags"][0]),
                                    has_audio=bool(t["flags"][1]))
                self.stats.hits += 1
                return clip
            except (SafetensorError, OSError, KeyError, ValueError, IndexError, TypeError):
                self.stats.rewrites += 1
        self.stats.misses += 1
        clip = decode_windows(video, audio, self.config, self.limits, windowing, self.audio_input)
        self._put(entry, clip)
        return clip

    def _put(self, entry: Path, clip: WindowedClip) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=entry.parent)
        os.close(fd)
        try:
            save_file({"frames": np.ascontiguousarray(clip.frames), "mel": np.ascontiguousarray(clip.mel),
                       "spans": np.asarray(clip.spans, dtype=np.float64).reshape(-1, 2),
                       "seconds": np.array([clip.seconds], dtype=np.float64),
                       "flags": np.array([clip.has_video, clip.has_audio], dtype=np.uint8)}, tmp,
                      metadata={"format": CACHE_FORMAT})
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
