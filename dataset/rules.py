"""What a valid triple looks like: the thresholds and the words the probe and the suite share.

The probe (dataset/probe.py) writes OK or what failed into each stage column; the suite
(dataset/expectations.py) checks those columns and the measured values against these thresholds.
Both import this module, and the suite reads the probe's column names; nothing imports back.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.media import MediaLimits

OK = "ok"  # what a probe stage column holds when the stage passed; otherwise it holds the failure
MAX_DECODE_SECONDS = 600.0  # the probe decodes audio up to this long to measure its level

# control characters other than tab, newline and carriage return (C0, DEL, C1), lone surrogates, and
# U+FFFD, the replacement character that bad decoding leaves behind
BAD_CAPTION_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]"


@dataclass(frozen=True)
class Thresholds:
    """What a valid triple looks like. The defaults accept the default dataset (2-4 s, 96x96, 12 fps, 16 kHz)."""

    min_seconds: float = 1.0
    max_seconds: float = 30.0
    min_fps: float = 5.0
    max_fps: float = 60.0
    min_side: int = 32  # smallest width and height, pixels
    max_width: int = 3840
    max_height: int = 2160
    min_sample_rate: int = 8_000
    max_sample_rate: int = 48_000
    min_audio_rms: float = 1e-3  # RMS of the mono waveform (full scale 1.0) below this is silence (-60 dBFS)
    max_caption_chars: int = 500
    max_file_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        pairs = {"seconds": (self.min_seconds, self.max_seconds), "fps": (self.min_fps, self.max_fps),
                 "sample_rate": (self.min_sample_rate, self.max_sample_rate)}
        bad = [f"min_{k}={lo!r} > max_{k}={hi!r}" for k, (lo, hi) in pairs.items() if not 0 <= lo <= hi]
        bad += [f"{k}={getattr(self, k)!r} must be positive" for k in
                ("min_side", "max_width", "max_height", "max_caption_chars", "max_file_bytes") if getattr(self, k) <= 0]
        if self.min_audio_rms < 0:
            bad.append(f"min_audio_rms={self.min_audio_rms!r} must be >= 0")
        if bad:
            raise ValueError(f"Thresholds: {'; '.join(bad)}")

    def media_limits(self) -> MediaLimits:
        """Decoding limits for the probe: the size limit is ours; duration is measured, not refused."""
        return MediaLimits(max_file_bytes=self.max_file_bytes, max_seconds=MAX_DECODE_SECONDS)
