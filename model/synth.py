"""Synthetic audio-video-text benchmark, written in the exact layout of OmniRetriever-Bench.

    OUT/manifests/{train,val,test}.jsonl   {"id","text","video","audio"}; video == audio == "videos/<id>.mp4"
    OUT/videos/<id>.mp4                    H.264 (libx264, yuv420p) video + AAC audio, mono
    OUT/scenes/<split>.jsonl               the latent scene of every clip (attributes, nuisances, template)
    OUT/dataset.json                       generator version, config, split sizes, media settings

Every clip is drawn from a latent scene. Some attributes are visible only (background colour and
pattern, object colour, motion direction), one is audible only (the ambient sound bed) and three
are shared the way real events are: the object's kind sets the timbre of its sound, its size sets
the pitch, and each of its 1-4 visible bounces is in sync with a note onset. Captions come from
many templates and synonyms and mention the object plus a random subset of the other attributes;
a few templates are held out for the test split. docs/DATASET.md explains the design.

The scene of clip i of a split is drawn from np.random.default_rng([seed, split_index, i]), so the
output is byte-identical for a given config, whatever the worker count or order. It is also the same
on every x86-64 CPU, whatever SIMD it has: the arithmetic that decides bytes uses only correctly
rounded operations (transcendentals come from model.portable_math, never from numpy's CPU-dispatched
kernels; no BLAS), and the encoders run their portable C code (x264 with asm=0, FFmpeg with its CPU
flags forced to 0 while a file is written; model.ffmpeg_cpu). docs/DATASET.md says why.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from model import portable_math as pm
from model.ffmpeg_cpu import portable_cpu_paths
from model.manifest import MAX_ALT_TEXTS, Record, manifest_path, read_split, write_manifest

GENERATOR_VERSION = "1.3.0"
SPLITS: tuple[str, ...] = ("train", "val", "test")

# ----------------------------------------------------------------------------------------------
# Attribute vocabularies
# ----------------------------------------------------------------------------------------------

BG_COLOURS: dict[str, tuple[int, int, int]] = {
    "navy": (22, 32, 92),
    "teal": (0, 98, 100),
    "maroon": (104, 22, 34),
    "olive": (92, 94, 22),
    "grey": (108, 108, 108),
    "black": (16, 16, 16),
    "brown": (104, 62, 26),
    "purple": (72, 30, 104),
}
PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted", "gradient")
OBJ_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (232, 40, 40),
    "yellow": (246, 222, 40),
    "green": (60, 212, 72),
    "cyan": (40, 222, 232),
    "white": (246, 246, 246),
    "pink": (250, 112, 200),
}
MOTIONS: tuple[str, ...] = ("left-to-right", "right-to-left", "upward", "downward")
AMBIENTS: tuple[str, ...] = ("rain", "wind", "hum", "birdsong", "traffic", "crickets")
KIND_TIMBRE: dict[str, str] = {
    "ball": "sine",
    "box": "square",
    "triangle": "sawtooth",
    "star": "fm-bell",
    "ring": "triangle-wave",
}
KINDS: tuple[str, ...] = tuple(KIND_TIMBRE)
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RADIUS: dict[str, float] = {"small": 0.10, "medium": 0.15, "large": 0.21}  # fraction of height
SIZE_PITCH: dict[str, float] = {"small": 880.0, "medium": 440.0, "large": 220.0}  # Hz, before jitter
EVENT_COUNTS: tuple[int, ...] = (1, 2, 3, 4)

SHARED: tuple[str, ...] = ("kind", "size", "n_events")
VISIBLE_ONLY: tuple[str, ...] = ("bg_colour", "pattern", "obj_colour", "motion")
AUDIBLE_ONLY: tuple[str, ...] = ("ambient",)
ATTRIBUTES: tuple[str, ...] = SHARED + VISIBLE_ONLY + AUDIBLE_ONLY
VOCAB: dict[str, tuple[Any, ...]] = {
    "kind": KINDS,
    "size": SIZES,
    "n_events": EVENT_COUNTS,
    "bg_colour": tuple(BG_COLOURS),
    "pattern": PATTERNS,
    "obj_colour": tuple(OBJ_COLOURS),
    "motion": MOTIONS,
    "ambient": AMBIENTS,
}

EVENT_SECONDS = 0.4  # a visible bounce/flash lasts this long, starting at the note onset
NOTE_SECONDS = 0.45  # length of the rendered note, tail included
EVENT_GAP = EVENT_SECONDS + 0.05  # minimum spacing of event onsets (events never overlap)
EVENT_START = 0.15  # earliest onset
HALO_RADIUS = 1.45  # the halo ring flashed around the object at each event, in object radii
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_CLIPS_PER_SPLIT = 1_000_000  # ids carry six digits
# One encoder thread keeps x264 output byte-identical from run to run, and asm=0 from CPU to CPU: its
# SSSE3 and newer code takes another intra-analysis path (x9 mode search) than its SSE2 and C code,
# so without it a CPU lacking SSSE3 encodes other bytes. C is about 1.5x the encoding time of SIMD
# here, 8 ms per clip. "fast" AAC coding is ~3x faster than the default.
X264_OPTIONS: dict[str, str] = {"threads": "1", "preset": "superfast", "crf": "26", "x264-params": "asm=0"}
AAC_OPTIONS: dict[str, str] = {"aac_coder": "fast"}


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
        ok = _is_int(value) and 32 <= value <= 4096 and value % 2 == 0
        _require(ok, field, "an even integer in [32, 4096]", value)
    _require(_is_int(config.fps) and 1 <= config.fps <= 60, "fps", "an integer in [1, 60]", config.fps)
    _require(config.sample_rate in AAC_SAMPLE_RATES and _is_int(config.sample_rate), "sample_rate",
             f"one of the AAC rates {AAC_SAMPLE_RATES}", config.sample_rate)
    _require(_is_number(config.min_seconds) and 1.0 <= config.min_seconds <= 60.0, "min_seconds",
             "a number in [1, 60] (room for at least one event)", config.min_seconds)
    _require(_is_number(config.max_seconds) and config.min_seconds <= config.max_seconds <= 60.0, "max_seconds",
             f"a number in [min_seconds={config.min_seconds}, 60]", config.max_seconds)
    _require(_is_int(config.train_captions) and 1 <= config.train_captions <= MAX_ALT_TEXTS + 1, "train_captions",
             f"an integer in [1, {MAX_ALT_TEXTS + 1}]", config.train_captions)
    lo, hi = frame_count_range(config)
    _require(lo <= hi, "max_seconds", f"far enough above min_seconds to hold a whole frame at fps={config.fps}",
             config.max_seconds)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------

NOUNS: dict[str, tuple[str, ...]] = {
    "ball": ("ball", "sphere", "orb", "disc"),
    "box": ("box", "square", "cube", "block"),
    "triangle": ("triangle", "triangular shape", "wedge"),
    "star": ("star", "star shape", "five-pointed star"),
    "ring": ("ring", "hoop", "donut"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium-sized", "mid-sized", "moderately sized"),
    "large": ("large", "big", "huge"),
}
OBJ_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "bright red"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "lime"),
    "cyan": ("cyan", "aqua", "turquoise"),
    "white": ("white", "snow-white"),
    "pink": ("pink", "magenta"),
}
BG_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "navy": ("navy", "dark blue"),
    "teal": ("teal", "blue-green"),
    "maroon": ("maroon", "burgundy", "dark red"),
    "olive": ("olive", "khaki"),
    "grey": ("grey", "gray", "slate"),
    "black": ("black", "pitch-black"),
    "brown": ("brown", "chocolate"),
    "purple": ("purple", "violet"),
}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "uniform"),
    "striped": ("striped", "stripy", "lined"),
    "checkered": ("checkered", "checkerboard", "chequered"),
    "dotted": ("dotted", "polka-dot", "spotted"),
    "gradient": ("gradient", "shaded", "softly graded"),
}
BG_NOUNS: tuple[str, ...] = ("background", "backdrop")
BG_PREPOSITIONS: tuple[str, ...] = ("on", "against", "in front of", "over")
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "left-to-right": ("from left to right", "to the right", "rightward", "across the screen from left to right"),
    "right-to-left": ("from right to left", "to the left", "leftward", "across the screen from right to left"),
    "upward": ("upward", "from bottom to top", "up the screen", "toward the top"),
    "downward": ("downward", "from top to bottom", "down the screen", "toward the bottom"),
}
# verb forms: (third person, -ing, base)
MOTION_VERBS: tuple[tuple[str, str, str], ...] = (
    ("moves", "moving", "move"), ("travels", "travelling", "travel"), ("drifts", "drifting", "drift"),
    ("slides", "sliding", "slide"), ("glides", "gliding", "glide"),
)
EVENT_VERBS: tuple[tuple[str, str, str], ...] = (
    ("bounces", "bouncing", "bounce"), ("flashes", "flashing", "flash"), ("pulses", "pulsing", "pulse"),
    ("blinks", "blinking", "blink"), ("pings", "pinging", "ping"), ("pops", "popping", "pop"),
)
IDLE_VERBS: tuple[str, ...] = ("appears", "is shown", "is visible")
COUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("once", "a single time"),
    2: ("twice", "two times"),
    3: ("three times", "thrice"),
    4: ("four times",),
}
AMBIENT_WORDS: dict[str, tuple[str, ...]] = {
    "rain": ("rain", "falling rain", "rainfall", "a rain shower"),
    "wind": ("wind", "a gusty wind", "howling wind", "a breeze"),
    "hum": ("a low hum", "an electrical hum", "a droning hum", "a steady drone"),
    "birdsong": ("birdsong", "chirping birds", "singing birds", "bird calls"),
    "traffic": ("traffic", "distant traffic", "road noise", "rumbling traffic"),
    "crickets": ("crickets", "chirping crickets", "crickets at night", "insect chirps"),
}
AMBIENT_FRAMES: tuple[str, ...] = (
    "with {} in the background", "over the sound of {}", "while {} can be heard", "accompanied by {}", "amid {}",
)

# A template is a sentence frame. A [bracketed group] is dropped when any slot in it is empty.
# Slots: s (subject noun phrase), vp (3rd-person verb phrase, never empty: "appears" when nothing
# is said about motion or count), act / ving / vbase (3rd-person, -ing and base forms, empty when
# neither motion nor count is mentioned), bg (prepositional phrase), bgnp (noun phrase), amb
# (sound noun phrase), ambpp (sound clause).
TEMPLATES: tuple[str, ...] = (
    "{s} {vp}[ {bg}][ {ambpp}].",
    "[{bg}, ]{s} {vp}[ {ambpp}].",
    "[Over the sound of {amb}, ]{s} {vp}[ {bg}].",
    "A video of {s} that {vp}[ {bg}][ {ambpp}].",
    "A clip showing {s}[ {ving}][ {bg}][ {ambpp}].",
    "We see {s}[ {bg}][ {ving}][, and we hear {amb}].",
    "There is {s}[ {bg}][, which {act}][; {amb} can be heard].",
    "Watch {s}[ {vbase}][ {bg}][ {ambpp}].",
    "{s}[ {bg}] {vp}[, with {amb} in the background].",
    "[The scene has {bgnp}. ]{s} {vp}.[ You can hear {amb}.]",
    "[Against the sound of {amb}, ]{s} {vp}[ {bg}].",
    "Footage of {s}[ {ving}][ {bg}][, accompanied by {amb}].",
    "In this clip, {s} {vp}[ {bg}][ {ambpp}].",
    "{s} can be seen[ {ving}][ {bg}][ {ambpp}].",
    "[Set against {bgnp}, ]{s} {vp}[ amid {amb}].",
    "An animation in which {s} {vp}[ {bg}][ {ambpp}].",
    "A short scene: {s} {vp}[ {bg}][; {amb} fills the soundtrack].",
    "[Amid {amb}, ]{s}[ {bg}] {vp}.",
    "The video shows {s}[ {ving}][ {bg}][ {ambpp}].",
    "Here, {s}[ {bg}] {vp}[ {ambpp}].",
    # held out: used only in the test split
    "Somewhere[ {bg}], {s} {vp}[ {ambpp}].",
    "Picture {s}[ {ving}][ {bg}][ as {amb} is heard].",
    "What happens: {s} {vp}[ {bg}].[ The soundtrack is {amb}.]",
    "[Listen to {amb} and ]look at {s}[ {ving}][ {bg}].",
    "Our subject is {s}[, which {act}][ {bg}][ {ambpp}].",
)
TEST_ONLY_TEMPLATES: tuple[int, ...] = (20, 21, 22, 23, 24)
CAPTIONED: tuple[str, ...] = ("size", "obj_colour", "motion", "n_events", "bg_colour", "pattern", "ambient")


def templates_for(split: str) -> tuple[int, ...]:
    """Template ids a split draws from: the test split draws from all, the others never from the held-out ones."""
    if split == "test":
        return tuple(range(len(TEMPLATES)))
    return tuple(i for i in range(len(TEMPLATES)) if i not in TEST_ONLY_TEMPLATES)


class Caption(NamedTuple):
    text: str
    template: int
    mentioned: tuple[str, ...]  # attributes the text names besides the kind, in CAPTIONED order


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    first = phrase.split()[0].lower()
    vowel = first[0] in "aeio" or (first[0] == "u" and not first.startswith(("uni", "use")))
    return f"{'an' if vowel else 'a'} {phrase}"


def _subject(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> str:
    words = [_pick(rng, SIZE_WORDS[attrs["size"]])] if "size" in said else []
    if "obj_colour" in said:
        words.append(_pick(rng, OBJ_COLOUR_WORDS[attrs["obj_colour"]]))
    words.append(_pick(rng, NOUNS[attrs["kind"]]))
    return _article(" ".join(words))


def _background(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> str:
    words = [_pick(rng, PATTERN_WORDS[attrs["pattern"]])] if "pattern" in said else []
    if "bg_colour" in said:
        words.append(_pick(rng, BG_COLOUR_WORDS[attrs["bg_colour"]]))
    return _article(" ".join([*words, _pick(rng, BG_NOUNS)])) if words else ""


def _verb_phrases(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> tuple[str, str, str]:
    """(3rd person, -ing, base) forms of what the object does; all empty when nothing is said."""
    forms = []
    if "motion" in said:
        direction = _pick(rng, DIRECTION_WORDS[attrs["motion"]])
        forms.append(tuple(f"{v} {direction}" for v in _pick(rng, MOTION_VERBS)))
    if "n_events" in said:
        count = _pick(rng, COUNT_WORDS[attrs["n_events"]])
        forms.append(tuple(f"{v} {count}" for v in _pick(rng, EVENT_VERBS)))
    if not forms:
        return "", "", ""
    if len(forms) == 1:
        return forms[0]
    first, second = forms if rng.random() < 0.5 else forms[::-1]
    if rng.random() < 0.5:
        return tuple(f"{a} and {b}" for a, b in zip(first, second))  # type: ignore[return-value]
    return f"{first[0]} while {second[1]}", f"{first[1]} while {second[1]}", f"{first[2]} while {second[1]}"


_GROUP = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")


def fill_template(template: str, slots: Mapping[str, str]) -> str:
    """Fill a template: drop [groups] with an empty slot, tidy spaces, capitalise each sentence."""

    def group(match: re.Match[str]) -> str:
        inner = match.group(1)
        return inner if all(slots[name] for name in _SLOT.findall(inner)) else ""

    text = _GROUP.sub(group, template).format(**slots)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def make_caption(attrs: Mapping[str, Any], rng: np.random.Generator, *, split: str) -> Caption:
    """A natural-English caption naming the kind plus a random 2-5 of the other attributes."""
    template = _pick(rng, templates_for(split))
    k = int(rng.integers(2, 6))
    said = {CAPTIONED[i] for i in rng.choice(len(CAPTIONED), size=k, replace=False)}
    act, ving, vbase = _verb_phrases(attrs, said, rng)
    idle = _pick(rng, IDLE_VERBS)
    amb = _pick(rng, AMBIENT_WORDS[attrs["ambient"]]) if "ambient" in said else ""
    bgnp = _background(attrs, said, rng)
    slots = {
        "s": _subject(attrs, said, rng), "vp": act or idle, "act": act, "ving": ving, "vbase": vbase,
        "amb": amb, "bgnp": bgnp,
        "bg": f"{_pick(rng, BG_PREPOSITIONS)} {bgnp}" if bgnp else "",
        "ambpp": _pick(rng, AMBIENT_FRAMES).format(amb) if amb else "",
    }
    mentioned = tuple(a for a in CAPTIONED if a in said)
    return Caption(fill_template(TEMPLATES[template], slots), template, mentioned)


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


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


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _event_times(rng: np.random.Generator, n: int, duration: float) -> tuple[float, ...]:
    """n non-overlapping onsets, each followed by a whole EVENT_SECONDS window inside the clip."""
    room = duration - EVENT_SECONDS - 0.05 - EVENT_START
    slack = max(room - (n - 1) * EVENT_GAP, 0.0)
    offsets = np.sort(rng.uniform(0.0, slack, size=n))
    return tuple(_r(EVENT_START + off + i * EVENT_GAP, 3) for i, off in enumerate(offsets))


def _max_events(duration: float) -> int:
    room = duration - EVENT_SECONDS - 0.05 - EVENT_START
    return max(1, min(max(EVENT_COUNTS), 1 + int(room // EVENT_GAP)))


def _path(rng: np.random.Generator, motion: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Start and end centre of the object for a motion direction."""
    a, b, across = rng.uniform(0.12, 0.35), rng.uniform(0.65, 0.88), rng.uniform(0.3, 0.7)
    lo_hi = {"left-to-right": (a, b), "right-to-left": (b, a), "downward": (a, b), "upward": (b, a)}[motion]
    if motion in ("left-to-right", "right-to-left"):
        return (_r(lo_hi[0]), _r(across)), (_r(lo_hi[1]), _r(across))
    return (_r(across), _r(lo_hi[0])), (_r(across), _r(lo_hi[1]))


def sample_scene(split: str, index: int, config: SynthConfig) -> Scene:
    """The scene of clip `index` of `split`, from its own RNG (independent of every other clip)."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    lo, hi = frame_count_range(config)
    n_frames = int(rng.integers(lo, hi + 1))
    duration = n_frames / config.fps
    attrs: dict[str, Any] = {name: _pick(rng, VOCAB[name]) for name in ATTRIBUTES if name != "n_events"}
    attrs["n_events"] = int(rng.integers(1, _max_events(duration) + 1))
    start, end = _path(rng, attrs["motion"])
    nuisance = {
        "event_times": _event_times(rng, attrs["n_events"], duration),
        "start": start, "end": end,
        "wobble": (_r(rng.uniform(0, 0.05)), _r(rng.uniform(0.3, 1.2)), _r(rng.uniform(0, 2 * np.pi))),
        "radius": _r(SIZE_RADIUS[attrs["size"]] * rng.uniform(0.92, 1.08)),
        "pitch_hz": _r(SIZE_PITCH[attrs["size"]] * float(pm.exp2(rng.uniform(-0.5, 0.5) / 12)), 2),
        "note_level": _r(rng.uniform(0.35, 0.5)),
        "ambient_level": _r(rng.uniform(0.06, 0.12)),
        "hiss_level": _r(rng.uniform(0.002, 0.006)),
        "grain": _r(rng.uniform(1.0, 4.0), 2),
        "brightness": _r(rng.uniform(0.9, 1.1), 3),
        "pattern_angle": _r(_pick(rng, (0.0, 45.0, 90.0, 135.0)) + rng.uniform(-10, 10), 2),
        "pattern_period": _r(rng.uniform(10, 18), 2),
        "pattern_phase": _r(rng.uniform(0, 1)),
        "render_seed": int(rng.integers(2**31)),
    }
    caption = make_caption(attrs, rng, split=split)
    # Each further caption has its own RNG stream, so the clip, its main caption and every other split
    # stay exactly as they are whatever train_captions is.
    extra = config.train_captions - 1 if split == "train" else 0
    alt = tuple(make_caption(attrs, np.random.default_rng([config.seed, SPLITS.index(split), index, 1 + j]),
                             split=split).text for j in range(extra))
    return Scene(
        id=clip_id(split, index), split=split, duration=_r(duration, 6), n_frames=n_frames, **attrs,
        timbre=KIND_TIMBRE[attrs["kind"]], **nuisance,
        caption=caption.text, template=caption.template, mentioned=caption.mentioned, alt_captions=alt,
    )


# ----------------------------------------------------------------------------------------------
# Rendering: video
# ----------------------------------------------------------------------------------------------


def event_envelope(t: np.ndarray, event_times: Sequence[float]) -> np.ndarray:
    """0..1 strength of the visible event at times t: a fast-rising bump over EVENT_SECONDS after each onset."""
    env = np.zeros_like(t)
    for onset in event_times:
        phase = (t - onset) / EVENT_SECONDS
        inside = (phase >= 0) & (phase <= 1)
        env = np.maximum(env, np.where(inside, np.sqrt(np.maximum(pm.sin_turns(0.5 * np.clip(phase, 0, 1)), 0)), 0))
    return env


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _pattern(scene: Scene, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """(H, W, 3) background colour with its static pattern (plain, striped, checkered, dotted, gradient)."""
    yy, xx = _grid(h, w)
    turn = scene.pattern_angle / 360
    cos, sin = float(pm.cos_turns(turn)), float(pm.sin_turns(turn))
    period = scene.pattern_period * h / 96
    u = (xx * cos + yy * sin) / period + scene.pattern_phase
    v = (-xx * sin + yy * cos) / period + scene.pattern_phase
    if scene.pattern == "dotted":
        du, dv = (u % 1) - 0.5, (v % 1) - 0.5
        dots = np.clip((0.22 - np.sqrt(du * du + dv * dv)) * period, 0, 1)[..., None]
        return base + (255 - base) * 0.4 * dots
    if scene.pattern == "striped":
        shade = np.where(u % 1 < 0.5, 1.0, 0.55)
    elif scene.pattern == "checkered":
        shade = np.where((np.floor(u) + np.floor(v)) % 2 == 0, 1.0, 0.55)
    elif scene.pattern == "gradient":
        shade = 0.45 + 0.85 * (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    else:  # plain
        shade = np.ones_like(u)
    return base * shade[..., None]


def render_background(scene: Scene, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 background: colour, pattern and a static film grain, offset +0.5 so casts round."""
    base = np.array(BG_COLOURS[scene.bg_colour], np.float32) * scene.brightness
    grain = np.random.default_rng([scene.render_seed, 0]).random((h, w, 3), dtype=np.float32) - 0.5
    image = _pattern(scene, h, w, base) + grain * (scene.grain * math.sqrt(12.0))  # uniform noise, std scene.grain
    return (np.clip(image, 0, 255) + 0.5).astype(np.float32)


def shape_distance(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to an object of `kind` and radius r.

    Only + - * / and sqrt: the star's five points come from cos(5 phi) = T5(cos phi), the Chebyshev
    polynomial, with cos phi = -dy / rho (phi the angle from the top), so no arctan2 or cos is needed."""
    if kind == "box":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if kind == "triangle":  # apex up; circumradius 1.15 r
        edges = np.maximum(dy, np.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy))
        return edges - 0.575 * r
    rho = np.sqrt(dx * dx + dy * dy)
    if kind == "star":
        c = np.where(rho > 0, -dy / np.maximum(rho, 1e-6), 0)
        c2 = c * c
        return rho - r * (0.62 + 0.38 * (c * (16 * c2 * c2 - 20 * c2 + 5)))
    if kind == "ring":
        return np.maximum(rho - r, 0.55 * r - rho)
    return rho - r  # ball


def _object_centre(scene: Scene, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (fractions) at times t: a straight path plus a small wobble across it."""
    frac = t / scene.duration
    x = scene.start[0] + (scene.end[0] - scene.start[0]) * frac
    y = scene.start[1] + (scene.end[1] - scene.start[1]) * frac
    amp, freq, phase = scene.wobble
    offset = amp * pm.sin(2 * np.pi * freq * t + phase)
    if scene.motion in ("left-to-right", "right-to-left"):
        return x, y + offset
    return x + offset, y


class _Sprites(NamedTuple):
    """Premultiplied object layers (N, S, S, 3), their alpha (N, S, S, 1), and top-left corners (pixels)."""

    colour: np.ndarray
    alpha: np.ndarray
    x0: np.ndarray
    y0: np.ndarray


def _object_sprites(scene: Scene, cx: np.ndarray, cy: np.ndarray, env: np.ndarray, base_r: float) -> _Sprites:
    """The object (pulsing and brightening with each event) and, during events, a halo ring around it,
    rendered in a small window that follows the object."""
    r = (base_r * (1 + 0.35 * env)).astype(np.float32)[:, None, None]
    reach = int(np.ceil(base_r * 1.35 * (HALO_RADIUS + 0.1))) + 2
    x0, y0 = np.floor(cx).astype(int) - reach, np.floor(cy).astype(int) - reach
    local = np.arange(2 * reach, dtype=np.float32) + 0.5
    dx = local[None, None, :] + (x0 - cx).astype(np.float32)[:, None, None]
    dy = local[None, :, None] + (y0 - cy).astype(np.float32)[:, None, None]
    alpha = np.clip(0.5 - shape_distance(scene.kind, dx, dy, r), 0, 1)
    obj = np.array(OBJ_COLOURS[scene.obj_colour], np.float32)
    lit = obj + (255 - obj) * 0.45 * env[:, None] + 0.5  # +0.5: the final cast rounds
    colour = lit[:, None, None, :] * alpha[..., None]
    on = np.flatnonzero(env > 0)  # the halo only exists during events: compute it on those frames only
    if on.size:
        ring = np.abs(np.sqrt(dx[on] * dx[on] + dy[on] * dy[on]) - HALO_RADIUS * r[on]) - 0.08 * r[on]
        halo = np.clip(0.5 - ring, 0, 1) * (1 - alpha[on]) * (0.6 * env[on])[:, None, None]
        colour[on] += (obj + 0.5) * halo[..., None]
        alpha[on] += halo
    return _Sprites(colour, alpha[..., None], x0, y0)


def _paste(frames: np.ndarray, sprites: _Sprites) -> None:
    """Composite each frame's sprite over it in place (clipped at the frame edges)."""
    h, w = frames.shape[1:3]
    size = sprites.alpha.shape[1]
    keep = 1 - sprites.alpha
    for i, (x0, y0) in enumerate(zip(sprites.x0, sprites.y0)):
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
        if xa < xb and ya < yb:
            window = (i, slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
            region = frames[i, ya:yb, xa:xb]
            region *= keep[window]
            region += sprites.colour[window]


def render_frames(scene: Scene, config: SynthConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames: background, the moving object and its bounces (pulse, hop, halo)."""
    h, w = config.height, config.width
    t = np.arange(scene.n_frames) / config.fps
    env = event_envelope(t, scene.event_times).astype(np.float32)
    cx, cy = _object_centre(scene, t)
    base_r = scene.radius * h
    frames = np.repeat(render_background(scene, h, w)[None], scene.n_frames, axis=0)
    _paste(frames, _object_sprites(scene, cx * w, cy * h - 0.5 * base_r * env, env, base_r))
    return frames.astype(np.uint8)  # every value is already in [0.5, 255.5): the cast rounds


# ----------------------------------------------------------------------------------------------
# Rendering: audio
# ----------------------------------------------------------------------------------------------


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-9)


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-mean, unit-variance white noise, uniform rather than Gaussian: numpy's normal sampler takes
    the C library's exp in some draws, uniform draws are plain arithmetic."""
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _convolve_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """np.convolve(x, kernel, mode="same") as a fixed sum of shifted copies: numpy's convolve takes
    BLAS dot products, whose summation order differs between CPUs."""
    full = np.zeros(len(x) + len(kernel) - 1)
    for j, k in enumerate(kernel):
        full[j:j + len(x)] += k * x
    start = (len(kernel) - 1) // 2
    return full[start:start + max(len(x), len(kernel))]


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise filtered in the frequency domain by gain(f) (FFT at a power-of-two length: fast;
    numpy's pocketfft is plain C, the same code on every CPU)."""
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(_white(rng, size))
    return _unit_rms(np.fft.irfft(spectrum * gain(np.fft.rfftfreq(size, 1 / sr)), size)[:n])


def _swell(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float, depth: float) -> np.ndarray:
    return 1 - depth + depth * pm.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi))


def _rain(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    hiss = _shaped_noise(rng, len(t), sr, lambda f: f**2 / (f**2 + 400.0**2))
    drops = (rng.random(len(t)) < 60 / sr) * rng.uniform(-1, 1, len(t))
    crackle = _convolve_same(drops, pm.exp(-np.arange(48) / 6.0))
    return hiss + 2.5 * _unit_rms(crackle)


def _wind(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    return _shaped_noise(rng, len(t), sr, lambda f: 1 / (1 + (f / 350.0) ** 2)) * _swell(rng, t, 0.15, 0.45, 0.35)


def _hum(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    f0 = rng.uniform(55, 110)
    amps = (1.0, 0.6, 0.4, 0.25, 0.15)
    tone = sum(a * pm.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps, 1))
    return tone * _swell(rng, t, 0.5, 2.0, 0.05)


def _birdsong(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    out = 0.25 * _shaped_noise(rng, len(t), sr, lambda f: pm.exp(-(((f - 1800.0) / 900.0) ** 2)))  # rustling leaves
    for _ in range(int(rng.integers(4, 5 + 3 * int(t[-1] + 1)))):
        length = int(rng.uniform(0.06, 0.18) * sr)
        start = int(rng.integers(0, max(len(t) - length, 1)))
        f = np.linspace(rng.uniform(2500, 4500), rng.uniform(2000, 5000), length)
        out[start:start + length] += pm.sin_turns(np.cumsum(f) / sr) * pm.hann(length)[: len(out) - start]
    return out


def _traffic(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    brown = _shaped_noise(rng, len(t), sr, lambda f: 1 / (f + 20.0))
    return brown * _swell(rng, t, 0.1, 0.3, 0.4)


def _crickets(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    carrier = pm.sin_turns(rng.uniform(3800, 5200) * t)
    pulses = np.square(np.square(0.5 + 0.5 * pm.sin_turns(rng.uniform(25, 35) * t)))
    gate = pm.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 2 * np.pi)) > -0.2
    return carrier * pulses * (0.35 + 0.65 * gate)


AMBIENT_SYNTHS: dict[str, Callable[[np.random.Generator, np.ndarray, int], np.ndarray]] = {
    "rain": _rain, "wind": _wind, "hum": _hum, "birdsong": _birdsong, "traffic": _traffic, "crickets": _crickets,
}


def _additive(f: float, tt: np.ndarray, sr: int, amp: Callable[[int], float]) -> np.ndarray:
    """Band-limited periodic wave: harmonics k with amplitude amp(k), up to 0.45 * sr."""
    ks = [k for k in range(1, 16) if k * f < 0.45 * sr and amp(k)]
    return sum(amp(k) * pm.sin_turns(k * f * tt) for k in ks)


def note_wave(timbre: str, f: float, tt: np.ndarray, sr: int) -> np.ndarray:
    """One enveloped note of `timbre` at pitch f (Hz), sampled at tt seconds, peak about 1."""
    if timbre == "square":
        wave = _additive(f, tt, sr, lambda k: 1 / k if k % 2 else 0)
    elif timbre == "sawtooth":
        wave = _additive(f, tt, sr, lambda k: 1 / k)
    elif timbre == "triangle-wave":
        wave = _additive(f, tt, sr, lambda k: (-1) ** ((k - 1) // 2) / k**2 if k % 2 else 0)
    elif timbre == "fm-bell":
        wave = pm.sin(2 * np.pi * f * tt + 3 * pm.exp(-tt / 0.15) * pm.sin_turns(1.4 * f * tt))
    else:  # sine
        wave = pm.sin_turns(f * tt) + 0.1 * pm.sin_turns(2 * f * tt)
    envelope = (1 - pm.exp(-tt / 0.004)) * pm.exp(-tt / 0.12)
    return wave / max(float(np.abs(wave).max()), 1e-9) * envelope


def render_audio(scene: Scene, config: SynthConfig) -> np.ndarray:
    """float32 mono audio: ambient bed + one note per event (onset = visible event start) + hiss."""
    sr = config.sample_rate
    n = round(scene.n_frames / config.fps * sr)
    rng = np.random.default_rng([scene.render_seed, 1])
    t = np.arange(n) / sr
    audio = scene.ambient_level * _unit_rms(AMBIENT_SYNTHS[scene.ambient](rng, t, sr))
    tt = np.arange(int(NOTE_SECONDS * sr)) / sr
    note = scene.note_level * note_wave(scene.timbre, scene.pitch_hz, tt, sr)
    for onset in scene.event_times:
        i = round(onset * sr)
        seg = audio[i:i + len(note)]
        seg += rng.uniform(0.8, 1.0) * note[: len(seg)]
    audio += scene.hiss_level * _white(rng, n)
    peak = float(np.abs(audio).max())
    return (audio * min(1.0, 0.95 / max(peak, 1e-9))).astype(np.float32)


def render_clip(scene: Scene, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, H, W, 3) uint8 RGB, audio float32 mono) of one scene."""
    return render_frames(scene, config), render_audio(scene, config)


# ----------------------------------------------------------------------------------------------
# Writing mp4
# ----------------------------------------------------------------------------------------------


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3H/2, W) packed yuv420p planes, BT.601 limited range.

    Integer arithmetic as in libswscale, done here rather than by PyAV's reformatter, whose
    RGB->YUV output fed to the encoder was found to vary from run to run (breaking byte identity).
    """
    n, h, w, _ = frames.shape
    f = frames.astype(np.uint16)
    y = (66 * f[..., 0] + 129 * f[..., 1] + 25 * f[..., 2] + 128 >> 8) + 16
    s = f[:, 0::2] + f[:, 1::2]
    s = (s[:, :, 0::2] + s[:, :, 1::2] + 2 >> 2).astype(np.int16)  # 2x2 mean
    r, g, b = s[..., 0], s[..., 1], s[..., 2]
    u = (-38 * r - 74 * g + 112 * b + 128 >> 8) + 128
    v = (112 * r - 94 * g - 18 * b + 128 >> 8) + 128
    planes = np.concatenate([y.reshape(n, -1), u.reshape(n, -1), v.reshape(n, -1)], axis=1)
    return planes.astype(np.uint8).reshape(n, h * 3 // 2, w)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a uint8 array (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2 or 0 in frames.shape[1:3]:
        raise ValueError(f"frame height and width must be even and non-zero for yuv420p, got {frames.shape[1:3]}")
    return frames


def _encode_video(container: av.container.OutputContainer, stream: av.VideoStream, frames: np.ndarray) -> None:
    for i, planes in enumerate(rgb_to_yuv420p(frames) if len(frames) else []):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray) -> None:
    if len(audio):
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1)[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = stream.rate, 0
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_mp4(path: str | Path, frames: np.ndarray | None, audio: np.ndarray | None,
              fps: int = 12, sample_rate: int = 16000) -> Path:
    """Write an mp4 (H.264 yuv420p video and/or AAC mono audio), byte-identical for identical input.

    frames: (N, H, W, 3) uint8 RGB, or None for an audio-only file. audio: float32 mono in [-1, 1]
    (shape (n,) or (1, n)), or None for a video-only file. Zero-length inputs give a stream with no
    packets (handy for edge-case tests).
    """
    if frames is None and audio is None:
        raise ValueError("write_mp4 needs frames, audio or both; got neither")
    frames = None if frames is None else _check_frames(frames)
    audio = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
    path = Path(path)
    with portable_cpu_paths(), av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # every stream must exist before the first packet is muxed
        if frames is not None:
            video = container.add_stream("libx264", rate=fps, options=X264_OPTIONS)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate, layout="mono", options=AAC_OPTIONS)
        if frames is not None:
            _encode_video(container, video, frames)
        if audio is not None:
            _encode_audio(container, sound, audio)
    return path


def write_video_only(path: str | Path, frames: np.ndarray, fps: int = 12) -> Path:
    """An mp4 with one H.264 video stream and no audio stream."""
    return write_mp4(path, frames, None, fps=fps)


def write_audio_only(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """An mp4 with one AAC mono audio stream and no video stream."""
    return write_mp4(path, None, audio, sample_rate=sample_rate)


# ----------------------------------------------------------------------------------------------
# Dataset generation
# ----------------------------------------------------------------------------------------------


def _make_clip(job: tuple[str, int, SynthConfig, str]) -> str:
    """Sample, render and write one clip; returns its scene as a JSON line."""
    split, index, config, videos_dir = job
    scene = sample_scene(split, index, config)
    frames, audio = render_clip(scene, config)
    write_mp4(Path(videos_dir) / f"{scene.id}.mp4", frames, audio, config.fps, config.sample_rate)
    return scene.to_json()


def _jobs(config: SynthConfig, videos_dir: Path) -> list[tuple[str, int, SynthConfig, str]]:
    return [(split, i, config, str(videos_dir)) for split, n in config.split_sizes().items() for i in range(n)]


def _run_jobs(jobs: list[Any], workers: int, progress: bool) -> list[str]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    results: list[str] = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("clips", total=len(jobs))
        for line in _map(jobs, workers):
            results.append(line)
            bar.advance(task)
    return results


def _map(jobs: list[Any], workers: int) -> Iterator[str]:
    if workers <= 1:
        yield from map(_make_clip, jobs)
        return
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_make_clip, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8))))


def dataset_metadata(config: SynthConfig) -> dict[str, Any]:
    """The content of dataset.json: nothing in it varies between runs of one config."""
    return {
        "name": "omniretriever-synth",
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "splits": config.split_sizes(),
        "config": asdict(config),
        "media": {
            "container": "mp4", "video_codec": "h264 (libx264)", "pix_fmt": "yuv420p",
            "width": config.width, "height": config.height, "fps": config.fps,
            "audio_codec": "aac", "sample_rate": config.sample_rate, "channels": 1,
            "min_seconds": config.min_seconds, "max_seconds": config.max_seconds,
        },
        "templates": {"count": len(TEMPLATES), "test_only": list(TEST_ONLY_TEMPLATES)},
        "attributes": {"shared": list(SHARED), "visible_only": list(VISIBLE_ONLY), "audible_only": list(AUDIBLE_ONLY)},
    }


def _write_tables(root: Path, config: SynthConfig, scene_lines: list[str]) -> None:
    (root / "scenes").mkdir()
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    for line in scene_lines:
        by_split[json.loads(line)["split"]].append(line)
    for split, lines in by_split.items():
        (root / "scenes" / f"{split}.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        scenes = [json.loads(x) for x in lines]
        rel = [f"videos/{s['id']}.mp4" for s in scenes]
        records = [Record(s["id"], s["caption"], p, p, tuple(s["alt_captions"])) for s, p in zip(scenes, rel)]
        write_manifest(manifest_path(root, split), records)
    meta = json.dumps(dataset_metadata(config), indent=2)
    (root / "dataset.json").write_text(meta + "\n", encoding="utf-8")


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")


def _move_into_place(staging: Path, out: Path) -> None:
    """Swap the finished staging directory in for `out`; the old contents go only after the swap."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def synthesize(out: str | Path, config: SynthConfig = SynthConfig(), *, workers: int | None = None,
               progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Generate the benchmark under `out` and return summarize(out).

    Output appears only when complete: clips are written to a staging directory next to `out`,
    which is moved into place at the end and removed on any error or interrupt.
    """
    validate_config(config)
    out = Path(out)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "videos").mkdir(parents=True)
        jobs = _jobs(config, staging / "videos")
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        _write_tables(staging, config, _run_jobs(jobs, workers, progress))
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summarize(out)


def is_up_to_date(out: str | Path, config: SynthConfig) -> bool:
    """True when `out` holds a complete dataset generated by this GENERATOR_VERSION from `config`."""
    try:
        meta = json.loads((Path(out) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    if meta.get("generator_version") != GENERATOR_VERSION or meta.get("config") != asdict(config):
        return False
    return all(manifest_path(out, split).is_file() for split in SPLITS)


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def _read_scenes(root: Path) -> dict[str, list[dict[str, Any]]]:
    scenes: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        path = root / "scenes" / f"{split}.jsonl"
        if path.is_file():
            scenes[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return scenes


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": _r(min(values)), "mean": _r(sum(values) / len(values)), "max": _r(max(values))}


def near_duplicate_stats(scenes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """How crowded a gallery is: clips sharing the V/A-shared attributes, one-attribute neighbours,
    exact attribute duplicates, and how many clips match everything a caption says."""
    n = len(scenes)
    if n == 0:
        return {"n": 0}
    keys = [tuple(s[a] for a in ATTRIBUTES) for s in scenes]
    full = Counter(keys)
    shared = Counter(k[: len(SHARED)] for k in keys)
    has_neighbour = [False] * n
    for j in range(len(ATTRIBUTES)):
        masked = Counter(k[:j] + k[j + 1:] for k in keys)
        for i, k in enumerate(keys):
            has_neighbour[i] |= masked[k[:j] + k[j + 1:]] > full[k]
    caption_matches = _caption_matches(scenes)
    return {
        "n": n,
        "mean_sharing_kind_size_count": _r(sum(shared[k[: len(SHARED)]] - 1 for k in keys) / n),
        "frac_with_one_attribute_neighbour": _r(sum(has_neighbour) / n),
        "frac_exact_attribute_duplicate": _r(sum(full[k] > 1 for k in keys) / n),
        "mean_clips_matching_caption": _r(sum(caption_matches) / n),
        "frac_caption_unique": _r(sum(m == 1 for m in caption_matches) / n),
    }


def _caption_matches(scenes: Sequence[Mapping[str, Any]]) -> list[int]:
    """For each clip, how many clips agree with every attribute its caption names (itself included)."""
    counters: dict[tuple[str, ...], Counter[tuple[Any, ...]]] = {}
    out = []
    for s in scenes:
        said = ("kind", *s["mentioned"])
        if said not in counters:
            counters[said] = Counter(tuple(x[a] for a in said) for x in scenes)
        out.append(counters[said][tuple(s[a] for a in said)])
    return out


def _caption_stats(scenes: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    every = [s for split in scenes.values() for s in split]
    test_only = set(TEST_ONLY_TEMPLATES)
    return {
        "templates_total": len(TEMPLATES),
        "templates_test_only": list(TEST_ONLY_TEMPLATES),
        "templates_used": {split: len({s["template"] for s in rows}) for split, rows in scenes.items()},
        "captions_per_clip": {split: _r(sum(1 + len(s.get("alt_captions", ())) for s in rows) / max(len(rows), 1), 2)
                              for split, rows in scenes.items()},
        "held_out_in_train_val": sum(s["template"] in test_only for sp in ("train", "val") for s in scenes.get(sp, [])),
        "test_frac_held_out_template": _r(
            sum(s["template"] in test_only for s in scenes.get("test", [])) / max(len(scenes.get("test", [])), 1)),
        "mean_words": _r(sum(len(s["caption"].split()) for s in every) / max(len(every), 1), 2),
        "mean_attributes_mentioned": _r(sum(1 + len(s["mentioned"]) for s in every) / max(len(every), 1), 2),
        "frac_unique_captions": _r(len({s["caption"] for s in every}) / max(len(every), 1)),
    }


def summarize(data_root: str | Path) -> dict[str, Any]:
    """Counts per split, durations, attribute histograms, caption/template stats and test-gallery
    near-duplicate stats. Without a scenes/ folder (a dataset not made here) only counts are given."""
    root = Path(data_root)
    counts = {split: len(read_split(root, split)) for split in SPLITS if manifest_path(root, split).is_file()}
    summary: dict[str, Any] = {"root": str(root), "splits": counts, "total": sum(counts.values())}
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        summary["generator_version"] = json.loads(meta_path.read_text(encoding="utf-8")).get("generator_version")
    scenes = _read_scenes(root)
    if not scenes:
        return summary
    every = [s for rows in scenes.values() for s in rows]
    summary["durations"] = {split: _stats([s["duration"] for s in rows]) for split, rows in scenes.items()}
    summary["attributes"] = {
        a: {str(v): sum(s[a] == v for s in every) for v in VOCAB[a]} for a in ATTRIBUTES
    }
    summary["attribute_combinations"] = math.prod(len(VOCAB[a]) for a in ATTRIBUTES)
    summary["captions"] = _caption_stats(scenes)
    summary["test_gallery"] = near_duplicate_stats(scenes.get("test", []))
    return summary


def print_summary(summary: dict[str, Any], console: Any | None = None) -> None:
    """Print a summary from summarize() as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    splits = Table(title=f"dataset {summary.get('root', '')}")
    for col in ("split", "clips", "min s", "mean s", "max s"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for split, n in summary.get("splits", {}).items():
        d = summary.get("durations", {}).get(split, {})
        splits.add_row(split, str(n), *(f"{d[k]:.2f}" if k in d else "-" for k in ("min", "mean", "max")))
    console.print(splits)
    if "attributes" not in summary:
        return
    attrs = Table(title=f"attributes ({summary['attribute_combinations']:,} combinations)")
    attrs.add_column("attribute")
    attrs.add_column("seen by")
    attrs.add_column("histogram")
    for name, hist in summary["attributes"].items():
        seen = "video+audio" if name in SHARED else "video" if name in VISIBLE_ONLY else "audio"
        attrs.add_row(name, seen, "  ".join(f"{k}:{v}" for k, v in hist.items()))
    console.print(attrs)
    for title, block in (("captions", summary["captions"]), ("test gallery", summary["test_gallery"])):
        table = Table(title=title)
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for key, value in block.items():
            table.add_row(key, json.dumps(value))
        console.print(table)


__all__ = [
    "GENERATOR_VERSION", "SPLITS", "ATTRIBUTES", "SHARED", "VISIBLE_ONLY", "AUDIBLE_ONLY", "VOCAB", "TEMPLATES",
    "TEST_ONLY_TEMPLATES", "SynthConfig", "Scene", "Caption", "validate_config", "templates_for", "make_caption",
    "sample_scene", "render_clip", "render_frames", "render_audio", "write_mp4", "write_video_only",
    "write_audio_only", "synthesize", "summarize", "print_summary", "is_up_to_date", "near_duplicate_stats",
]
