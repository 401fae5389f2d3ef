"""Scenes: the latent state of one clip (attributes, nuisances, captions), drawn from its own RNG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dataset import portable_math as pm
from dataset.captions import make_caption
from dataset.config import SPLITS, SynthConfig, frame_count_range
from dataset.vocabulary import (ATTRIBUTES, EVENT_COUNTS, EVENT_GAP, EVENT_SECONDS, EVENT_START, KIND_TIMBRE,
                                SIZE_PITCH, SIZE_RADIUS, VOCAB, pick)

@dataclass(frozen=True)
class Scene:
    """The latent state of one clip: its attributes, continuous nuisances and caption.

    Positions are fractions of width/height; times are seconds. Floats are rounded when drawn so
    the scenes file holds exactly what was rendered.
    """

    id: str
    split: str
    duration: float
    n_frames: int
    kind: str
    size: str
    n_events: int
    bg_colour: str
    pattern: str
    obj_colour: str
    motion: str
    ambient: str
    timbre: str
    event_times: tuple[float, ...]
    start: tuple[float, float]
    end: tuple[float, float]
    wobble: tuple[float, float, float]  # amplitude (fraction), frequency (Hz), phase (rad)
    radius: float  # fraction of height
    pitch_hz: float
    note_level: float
    ambient_level: float
    hiss_level: float
    grain: float  # std of the static per-pixel grain of the background, 0-255 scale
    brightness: float
    pattern_angle: float  # degrees
    pattern_period: float  # pixels at 96 px height
    pattern_phase: float  # fraction of a period
    render_seed: int
    caption: str
    template: int
    mentioned: tuple[str, ...]
    alt_captions: tuple[str, ...]  # further captions (training clips only), each from its own RNG

    @property
    def attributes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def clip_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def rounded(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _event_times(rng: np.random.Generator, n: int, duration: float) -> tuple[float, ...]:
    """n non-overlapping onsets, each followed by a whole EVENT_SECONDS window inside the clip."""
    room = duration - EVENT_SECONDS - 0.05 - EVENT_START
    slack = max(room - (n - 1) * EVENT_GAP, 0.0)
    offsets = np.sort(rng.uniform(0.0, slack, size=n))
    return tuple(rounded(EVENT_START + off + i * EVENT_GAP, 3) for i, off in enumerate(offsets))


def _max_events(duration: float) -> int:
    room = duration - EVENT_SECONDS - 0.05 - EVENT_START
    return max(1, min(max(EVENT_COUNTS), 1 + int(room // EVENT_GAP)))


def _path(rng: np.random.Generator, motion: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Start and end centre of the object for a motion direction."""
    a, b, across = rng.uniform(0.12, 0.35), rng.uniform(0.65, 0.88), rng.uniform(0.3, 0.7)
    lo_hi = {"left-to-right": (a, b), "right-to-left": (b, a), "downward": (a, b), "upward": (b, a)}[motion]
    if motion in ("left-to-right", "right-to-left"):
        return (rounded(lo_hi[0]), rounded(across)), (rounded(lo_hi[1]), rounded(across))
    return (rounded(across), rounded(lo_hi[0])), (rounded(across), rounded(lo_hi[1]))


def sample_scene(split: str, index: int, config: SynthConfig) -> Scene:
    """The scene of clip `index` of `split`, from its own RNG (independent of every other clip)."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    lo, hi = frame_count_range(config)
    n_frames = int(rng.integers(lo, hi + 1))
    duration = n_frames / config.fps
    attrs: dict[str, Any] = {name: pick(rng, VOCAB[name]) for name in ATTRIBUTES if name != "n_events"}
    attrs["n_events"] = int(rng.integers(1, _max_events(duration) + 1))
    start, end = _path(rng, attrs["motion"])
    nuisance = {
        "event_times": _event_times(rng, attrs["n_events"], duration),
        "start": start, "end": end,
        "wobble": (rounded(rng.uniform(0, 0.05)), rounded(rng.uniform(0.3, 1.2)), rounded(rng.uniform(0, 2 * np.pi))),
        "radius": rounded(SIZE_RADIUS[attrs["size"]] * rng.uniform(0.92, 1.08)),
        "pitch_hz": rounded(SIZE_PITCH[attrs["size"]] * float(pm.exp2(rng.uniform(-0.5, 0.5) / 12)), 2),
        "note_level": rounded(rng.uniform(0.35, 0.5)),
        "ambient_level": rounded(rng.uniform(0.06, 0.12)),
        "hiss_level": rounded(rng.uniform(0.002, 0.006)),
        "grain": rounded(rng.uniform(1.0, 4.0), 2),
        "brightness": rounded(rng.uniform(0.9, 1.1), 3),
        "pattern_angle": rounded(pick(rng, (0.0, 45.0, 90.0, 135.0)) + rng.uniform(-10, 10), 2),
        "pattern_period": rounded(rng.uniform(10, 18), 2),
        "pattern_phase": rounded(rng.uniform(0, 1)),
        "render_seed": int(rng.integers(2**31)),
    }
    caption = make_caption(attrs, rng, split=split)
    # Each further caption has its own RNG stream, so the clip, its main caption and every other split
    # stay exactly as they are whatever train_captions is.
    extra = config.train_captions - 1 if split == "train" else 0
    alt = tuple(make_caption(attrs, np.random.default_rng([config.seed, SPLITS.index(split), index, 1 + j]),
                             split=split).text for j in range(extra))
    return Scene(
        id=clip_id(split, index), split=split, duration=rounded(duration, 6), n_frames=n_frames, **attrs,
        timbre=KIND_TIMBRE[attrs["kind"]], **nuisance,
        caption=caption.text, template=caption.template, mentioned=caption.mentioned, alt_captions=alt,
    )
