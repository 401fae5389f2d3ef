"""A record's media as model input, whole or as overlapping windows: `decode_windows`.

A clip no longer than the model's window is one window, the whole clip, decoded exactly as decode_clip
decodes it. A longer one (a ten-minute video) is cut into windows of `Windowing.seconds`, one every
`Windowing.stride` seconds, the last ending where the clip ends; each window gets num_frames frames
sampled over its span and the audio from its start, so a search can point at the moment, not the file.

An item may lack video or audio (the manifest says null, or the file has no such stream). Its missing
modality is zeros in the arrays and False in has_video / has_audio: callers use only the views it has
and never embed the zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import MediaError
from model.media.audio import audio_track, fit_length, log_mel
from model.media.settings import Clip, DecodeConfig, MediaLimits
from model.media.video import decode_video_spans

AUDIO_INPUTS = ("log_mel", "waveform")  # what the audio array holds: the tiny encoder's log-mel, or the waveform itself


@dataclass(frozen=True)
class Windowing:
    """Windows of `seconds`, one starting every `stride` seconds. A clip up to `seconds + stride / 2` long
    stays one window (cutting it would only repeat most of it)."""

    seconds: float
    stride: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"window length must be a positive number of seconds, got {self.seconds!r}")
        if not (math.isfinite(self.stride) and 0 < self.stride <= self.seconds):
            raise ValueError(f"window stride must be positive and at most the window length "
                             f"({self.seconds:g} s), got {self.stride!r}")

    @classmethod
    def for_model(cls, config: DecodeConfig, seconds: float | None = None, stride: float | None = None) -> "Windowing":
        """The model's window (its audio window, `audio_seconds`) and half of it as the stride, unless given."""
        seconds = config.audio_seconds if seconds is None else seconds
        return cls(seconds, seconds / 2 if stride is None else stride)

    def spans(self, duration: float) -> list[tuple[float, float]]:
        """The (start, end) of each window of a clip `duration` seconds long, in order."""
        if duration <= self.seconds + self.stride / 2:
            return [(0.0, duration)]
        count = math.ceil((duration - self.seconds) / self.stride - 1e-9)
        starts = [i * self.stride for i in range(count)] + [duration - self.seconds]
        return [(start, start + self.seconds) for start in starts]


@dataclass
class WindowedClip:
    """A record decoded as W windows (W = 1 for a clip decoded whole)."""

    frames: np.ndarray  # uint8 (W, N, H, W, 3); zeros when has_video is False
    mel: np.ndarray  # float32 (W, n_mels, frames) log-mel, or (W, num_samples) waveforms; silence without audio
    spans: list[tuple[float, float]]  # each window's (start, end), seconds on the clip's timeline
    seconds: float  # the clip's length: its video's, or its audio's when it has no video
    has_video: bool
    has_audio: bool

    def first(self) -> Clip:
        """The first window as a Clip (for a clip decoded whole, the clip), its length in meta["seconds"]."""
        return Clip(frames=self.frames[0], mel=self.mel[0], has_audio=self.has_audio, has_video=self.has_video,
                    meta={"seconds": self.seconds})


def decode_windows(video: str | Path | None, audio: str | Path | None, config: DecodeConfig = DecodeConfig(),
                   limits: MediaLimits = MediaLimits(), windowing: Windowing | None = None,
                   audio_input: str = "log_mel") -> WindowedClip:
    """Frames from `video` and audio from `audio` (often the same file; None: the item has none) for each
    window `windowing` cuts the clip into (None: the whole clip, one window). The clip's timeline is its
    video's; an audio-only item's is its audio's. An `audio` file without an audio stream counts as no
    audio (has_audio False); an item left with neither is a MediaError."""
    if audio_input not in AUDIO_INPUTS:
        raise ValueError(f"audio_input must be one of {', '.join(AUDIO_INPUTS)}, got {audio_input!r}")
    if video is None and audio is None:
        raise ValueError("a record needs a video or an audio file")
    if video is not None:  # first: a file broken in both streams is reported as the video it is
        frames, spans, seconds = decode_video_spans(video, config, limits, windowing.spans if windowing else None)
    wave, has_audio = audio_track(audio, config, limits) if audio is not None else (np.zeros(0, np.float32), False)
    rate = config.sample_rate
    if video is None:
        if not has_audio:
            raise MediaError(Path(audio), "has no audio stream, and the record has no video: nothing to embed")
        seconds = wave.size / rate
        spans = windowing.spans(seconds) if windowing else [(0.0, seconds)]
        frames = np.zeros((len(spans), config.num_frames, config.frame_size, config.frame_size, 3), np.uint8)
    waves = [fit_length(wave[int(round(start * rate)):], config.num_samples) for start, _ in spans]
    mel = np.stack(waves if audio_input == "waveform" else [log_mel(w, config).numpy() for w in waves])
    return WindowedClip(frames, mel, spans, seconds, video is not None, has_audio)
