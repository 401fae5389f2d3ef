"""Captions: a sentence template filled with words for the kind and a random few other attributes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from dataset.vocabulary import (AMBIENT_FRAMES, AMBIENT_WORDS, BG_COLOUR_WORDS, BG_NOUNS, BG_PREPOSITIONS, CAPTIONED,
                                COUNT_WORDS, DIRECTION_WORDS, EVENT_VERBS, IDLE_VERBS, MOTION_VERBS, NOUNS,
                                OBJ_COLOUR_WORDS, PATTERN_WORDS, SIZE_WORDS, TEMPLATES, TEST_ONLY_TEMPLATES, pick)

def templates_for(split: str) -> tuple[int, ...]:
    """Template ids a split draws from: the test split draws from all, the others never from the held-out ones."""
    if split == "test":
        return tuple(range(len(TEMPLATES)))
    return tuple(i for i in range(len(TEMPLATES)) if i not in TEST_ONLY_TEMPLATES)


class Caption(NamedTuple):
    text: str
    template: int
    mentioned: tuple[str, ...]  # attributes the text names besides the kind, in CAPTIONED order


def _article(phrase: str) -> str:
    first = phrase.split()[0].lower()
    vowel = first[0] in "aeio" or (first[0] == "u" and not first.startswith(("uni", "use")))
    return f"{'an' if vowel else 'a'} {phrase}"


def _subject(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> str:
    words = [pick(rng, SIZE_WORDS[attrs["size"]])] if "size" in said else []
    if "obj_colour" in said:
        words.append(pick(rng, OBJ_COLOUR_WORDS[attrs["obj_colour"]]))
    words.append(pick(rng, NOUNS[attrs["kind"]]))
    return _article(" ".join(words))


def _background(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> str:
    words = [pick(rng, PATTERN_WORDS[attrs["pattern"]])] if "pattern" in said else []
    if "bg_colour" in said:
        words.append(pick(rng, BG_COLOUR_WORDS[attrs["bg_colour"]]))
    return _article(" ".join([*words, pick(rng, BG_NOUNS)])) if words else ""


def _verb_phrases(attrs: Mapping[str, Any], said: set[str], rng: np.random.Generator) -> tuple[str, str, str]:
    """(3rd person, -ing, base) forms of what the object does; all empty when nothing is said."""
    forms = []
    if "motion" in said:
        direction = pick(rng, DIRECTION_WORDS[attrs["motion"]])
        forms.append(tuple(f"{v} {direction}" for v in pick(rng, MOTION_VERBS)))
    if "n_events" in said:
        count = pick(rng, COUNT_WORDS[attrs["n_events"]])
        forms.append(tuple(f"{v} {count}" for v in pick(rng, EVENT_VERBS)))
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
    template = pick(rng, templates_for(split))
    k = int(rng.integers(2, 6))
    said = {CAPTIONED[i] for i in rng.choice(len(CAPTIONED), size=k, replace=False)}
    act, ving, vbase = _verb_phrases(attrs, said, rng)
    idle = pick(rng, IDLE_VERBS)
    amb = pick(rng, AMBIENT_WORDS[attrs["ambient"]]) if "ambient" in said else ""
    bgnp = _background(attrs, said, rng)
    slots = {
        "s": _subject(attrs, said, rng), "vp": act or idle, "act": act, "ving": ving, "vbase": vbase,
        "amb": amb, "bgnp": bgnp,
        "bg": f"{pick(rng, BG_PREPOSITIONS)} {bgnp}" if bgnp else "",
        "ambpp": pick(rng, AMBIENT_FRAMES).format(amb) if amb else "",
    }
    mentioned = tuple(a for a in CAPTIONED if a in said)
    return Caption(fill_template(TEMPLATES[template], slots), template, mentioned)
