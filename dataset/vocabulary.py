"""The vocabulary of generated scenes and their captions: attributes and their values, event timing,
and the words and sentence templates captions are made of (docs/DATASET.md explains the design)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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


def pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]
