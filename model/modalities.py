"""Modalities, views and the 12 retrieval directions of OmniRetriever-Bench, defined once.

Every other module (data, model, losses, evaluation, serving) takes these names from here.

    modality   T (text), V (video), A (audio)
    view       a non-empty subset of modalities embedded in one joint forward
               the benchmark's six: t, v, a, tv, av, at (plus tva, the fused teacher)
    direction  query view -> gallery view, e.g. "t2av" = text query, audio+video gallery
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

T: Final = "T"
V: Final = "V"
A: Final = "A"
MODALITIES: Final[tuple[str, ...]] = (T, V, A)

# view name -> modalities, in the canonical order of MODALITIES
VIEWS: Final[dict[str, tuple[str, ...]]] = {
    "t": (T,),
    "v": (V,),
    "a": (A,),
    "tv": (T, V),
    "av": (V, A),
    "at": (T, A),
    "tva": (T, V, A),
}
BENCH_VIEWS: Final[tuple[str, ...]] = ("t", "v", "a", "tv", "av", "at")


@dataclass(frozen=True)
class Direction:
    """One retrieval direction: embed `query` view of item i, rank the `gallery` view of all items."""

    name: str
    query: str
    gallery: str

    @property
    def kind(self) -> str:
        """"single" when both sides are one modality, "dual" when one side holds two."""
        return "single" if len(self.query) == 1 and len(self.gallery) == 1 else "dual"


def _direction(name: str) -> Direction:
    query, gallery = name.split("2")
    return Direction(name, query, gallery)


SINGLE_DIRECTIONS: Final[tuple[str, ...]] = ("t2v", "v2t", "t2a", "a2t", "v2a", "a2v")
DUAL_DIRECTIONS: Final[tuple[str, ...]] = ("t2av", "av2t", "a2tv", "tv2a", "v2at", "at2v")
DIRECTION_NAMES: Final[tuple[str, ...]] = SINGLE_DIRECTIONS + DUAL_DIRECTIONS
DIRECTIONS: Final[dict[str, Direction]] = {n: _direction(n) for n in DIRECTION_NAMES}


def view_of(name: str) -> tuple[str, ...]:
    """Modalities of a view name such as "tv"; the order of letters does not matter ("vt" == "tv")."""
    key = name.lower()
    letters = set(key)
    if not key or not letters <= {"t", "v", "a"} or len(letters) != len(key):
        raise ValueError(f"unknown view {name!r}: expected a non-empty subset of the letters t, v, a")
    return tuple(m for m in MODALITIES if m.lower() in letters)


def canonical_view(name: str) -> str:
    """The VIEWS key for a view name ("vt" -> "tv", "va" -> "av", "ta" -> "at")."""
    mods = view_of(name)
    for key, value in VIEWS.items():
        if value == mods:
            return key
    raise AssertionError(f"no canonical name for {mods}")  # unreachable: VIEWS covers every subset
