"""What decoding is asked for and within which bounds: MediaLimits, DecodeConfig, and the decoded Clip."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from model.media_limits import MediaLimits  # declared torch-free (the server reads it); the one set of media limits

__all__ = ["Clip", "DecodeConfig", "MediaLimits"]


@dataclass(frozen=True)
class DecodeConfig:
    """How a clip becomes model input. Part of the feature-cache key: change one, miss the cache."""

    num_frames: int = 8  # frames sampled uniformly over the whole clip
    frame_size: int = 64  # frames are resized (not cropped) to frame_size x frame_size
    sample_rate: int = 16_000  # audio is resampled to this rate, mono
    audio_seconds: float = 4.0  # audio is padded with silence or cropped to this length
    n_fft: int = 400  # 25 ms window at 16 kHz
    hop_length: int = 320  # 20 ms hop: 4 s -> 201 mel frames
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8_000.0  # Nyquist at 16 kHz

    def __post_init__(self) -> None:
        checks = {
            "num_frames": self.num_frames >= 1,
            "frame_size": 8 <= self.frame_size <= 1024,
            "sample_rate": 1_000 <= self.sample_rate <= 96_000,
            "audio_seconds": 0 < self.audio_seconds <= 600,
            "n_fft": self.n_fft >= 16,
            "hop_length": self.hop_length >= 1,
            "n_mels": 1 <= self.n_mels <= self.n_fft // 2 + 1,
            "f_max": 0 <= self.f_min < self.f_max <= self.sample_rate / 2,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"DecodeConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.audio_seconds))

    @property
    def num_mel_frames(self) -> int:
        return 1 + self.num_samples // self.hop_length

    def fingerprint(self) -> str:
        """A stable digest of every field (used in cache keys)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Clip:
    """Decoded model input for one record."""

    frames: np.ndarray  # uint8 (N, H, W, 3); zeros when has_video is False
    mel: np.ndarray  # float32 (n_mels, num_mel_frames); (num_samples,) waveform with audio_input="waveform"
    has_audio: bool
    has_video: bool = True
    meta: dict = field(default_factory=dict)

