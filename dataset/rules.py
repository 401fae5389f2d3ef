"""What a valid triple looks like: the thresholds and the words the probe and the suite share.

The probe (dataset/probe.py) writes OK or what failed into each stage column; the suite
(dataset/expectations.py) checks those columns and the measured values against these thresholds.
Both import this module, and the suite reads the probe's column names; nothing imports back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from model.media_limits import MediaLimits

OK = "ok"  # what a probe stage column holds when the stage passed; otherwise it holds the failure
ABSENT = "absent"  # a stream stage's column for a modality the item does not have (allow_partial only)
MAX_DECODE_SECONDS = 600.0  # the probe decodes audio up to this long to measure its level
MAX_DECODE_SIDE = 16_384  # the probe inspects pictures up to this side, so the suite (not the decoder) reports size
SHARED = MediaLimits()  # the one set of media limits: validation's maxima default to them

# control characters other than tab, newline and carriage return (C0, DEL, C1), lone surrogates, and
# U+FFFD, the replacement character that bad decoding leaves behind
BAD_CAPTION_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]"


@dataclass(frozen=True)
class Thresholds:
    """What a valid triple looks like. The defaults accept the default dataset (2-4 s, 96x96, 12 fps, 16 kHz).

    The maxima of duration, file size and resolution are the shared MediaLimits' (model/media_limits.py: the
    decoder, index build and the server apply the same), so what validates also decodes; the other bounds are
    validation's own rules for a dataset's quality. Every field can be overridden (the CLI's --max-seconds ...)."""

    # validation's own: dataset quality
    min_seconds: float = 1.0
    min_fps: float = 5.0
    max_fps: float = 60.0
    min_side: int = 32  # smallest width and height, pixels
    min_sample_rate: int = 8_000
    max_sample_rate: int = 48_000
    min_audio_rms: float = 1e-3  # RMS of the mono waveform (full scale 1.0) below this is silence (-60 dBFS)
    max_caption_chars: int = 500
    # the shared media limits
    max_seconds: float = SHARED.max_seconds
    max_file_bytes: int = SHARED.max_file_bytes
    max_long_side: int = SHARED.max_long_side  # the larger of width and height, pixels
    max_short_side: int = SHARED.max_short_side  # the smaller
    # the dataset may hold items without video or without audio ("video": null, or a file without that stream)
    allow_partial: bool = False

    def __post_init__(self) -> None:
        pairs = {"seconds": (self.min_seconds, self.max_seconds), "fps": (self.min_fps, self.max_fps),
                 "sample_rate": (self.min_sample_rate, self.max_sample_rate)}
        bad = [f"min_{k}={lo!r} > max_{k}={hi!r}" for k, (lo, hi) in pairs.items() if not 0 <= lo <= hi]
        bad += [f"{k}={getattr(self, k)!r} must be positive" for k in
                ("min_side", "max_long_side", "max_short_side", "max_caption_chars", "max_file_bytes")
                if getattr(self, k) <= 0]
        if self.min_audio_rms < 0:
            bad.append(f"min_audio_rms={self.min_audio_rms!r} must be >= 0")
        if self.max_short_side > self.max_long_side:
            bad.append(f"max_short_side={self.max_short_side!r} > max_long_side={self.max_long_side!r}")
        if bad:
            raise ValueError(f"Thresholds: {'; '.join(bad)}")

    def limits(self) -> MediaLimits:
        """The media limits these thresholds hold a dataset to (the shared ones unless overridden)."""
        return replace(SHARED, max_file_bytes=self.max_file_bytes, max_seconds=self.max_seconds,
                       max_long_side=self.max_long_side, max_short_side=self.max_short_side)

    def media_limits(self) -> MediaLimits:
        """Decoding limits for the probe: the size limit is ours; duration and resolution are measured (up to
        MAX_DECODE_SECONDS and MAX_DECODE_SIDE), not refused, so the suite reports them."""
        return replace(self.limits(), max_seconds=MAX_DECODE_SECONDS, max_long_side=max(MAX_DECODE_SIDE, self.max_long_side),
                       max_short_side=max(MAX_DECODE_SIDE, self.max_short_side))
