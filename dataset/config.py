"""What to generate: SynthConfig, its checks, and the splits a dataset has."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.manifest import MAX_ALT_TEXTS
from model.media_limits import MediaLimits

SPLITS: tuple[str, ...] = ("train", "val", "test")
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_CLIPS_PER_SPLIT = 1_000_000  # ids carry six digits
LIMITS = MediaLimits()  # generated clips stay within the shared media limits, so they validate and decode


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Split sizes are clip counts; media settings apply to every clip."""

    train: int = 3000
    val: int = 300
    test: int = 1000
    seed: int = 0
    width: int = 96
    height: int = 96
    fps: int = 12
    sample_rate: int = 16000
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    train_captions: int = 6  # captions per training clip (the manifest's text plus alt_texts); val and test have one

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _require(ok: bool, field: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"SynthConfig.{field} must be {rule}, got {value!r}")


def frame_count_range(config: SynthConfig) -> tuple[int, int]:
    """Smallest and largest frame count whose duration lies in [min_seconds, max_seconds]."""
    return math.ceil(config.min_seconds * config.fps - 1e-9), math.floor(config.max_seconds * config.fps + 1e-9)


def validate_config(config: SynthConfig) -> None:
    """Raise ValueError naming the field, the rule and the value received for any bad setting."""
    if not isinstance(config, SynthConfig):
        raise TypeError(f"config must be a SynthConfig, got {type(config).__name__}")
    for split, n in config.split_sizes().items():
        _require(_is_int(n) and 0 <= n <= MAX_CLIPS_PER_SPLIT, split, f"an integer in [0, {MAX_CLIPS_PER_SPLIT}]", n)
    total = sum(config.split_sizes().values())
    _require(total >= 1, "train/val/test", "at least 1 clip in total", total)
    _require(_is_int(config.seed) and config.seed >= 0, "seed", "a non-negative integer", config.seed)
    for field in ("width", "height"):
        value = getattr(config, field)
        ok = _is_int(value) and 32 <= value <= LIMITS.max_long_side and value % 2 == 0
        _require(ok, field, f"an even integer in [32, {LIMITS.max_long_side}]", value)
    too_big = LIMITS.check_size(config.width, config.height)
    _require(too_big is None, "width", f"within the media limits ({too_big})", config.width)
    _require(_is_int(config.fps) and 1 <= config.fps <= 60, "fps", "an integer in [1, 60]", config.fps)
    _require(config.sample_rate in AAC_SAMPLE_RATES and _is_int(config.sample_rate), "sample_rate",
             f"one of the AAC rates {AAC_SAMPLE_RATES}", config.sample_rate)
    longest = LIMITS.max_seconds
    _require(_is_number(config.min_seconds) and 1.0 <= config.min_seconds <= longest, "min_seconds",
             f"a number in [1, {longest:g}] (room for at least one event)", config.min_seconds)
    _require(_is_number(config.max_seconds) and config.min_seconds <= config.max_seconds <= longest, "max_seconds",
             f"a number in [min_seconds={config.min_seconds}, {longest:g}]", config.max_seconds)
    _require(_is_int(config.train_captions) and 1 <= config.train_captions <= MAX_ALT_TEXTS + 1, "train_captions",
             f"an integer in [1, {MAX_ALT_TEXTS + 1}]", config.train_captions)
    lo, hi = frame_count_range(config)
    _require(lo <= hi, "max_seconds", f"far enough above min_seconds to hold a whole frame at fps={config.fps}",
             config.max_seconds)
