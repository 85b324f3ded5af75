"""Referring to objects of a synthetic scene: descriptions (Ref), matching, unique descriptions, clear relations.

A `Ref` names some of an object's attributes with English keys; its `noun` is a SHAPES key or one of
the generic nouns OBJECT ("the red object") and SHAPE ("how many red shapes"), which match any shape.
Task generators only ask about an object through a Ref that matches it alone, so every question has one
answer; relations use `relation` (the axis where centres differ most) and a relation is only denied
where it is clearly false (the centre is not on that side at all), so a person would agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plugins.data._synth_scene import Shape, relation

__all__ = [
    "GENERIC",
    "OBJECT",
    "SHAPE",
    "Ref",
    "clearly_not",
    "count",
    "holds",
    "location_if_clear",
    "matches",
    "ref_of",
    "unique_ref",
]

OBJECT, SHAPE = "object", "shape"
GENERIC = (OBJECT, SHAPE)


@dataclass(frozen=True)
class Ref:
    """What a phrase says about an object: a noun (shape key or generic), optionally colour and size."""

    noun: str
    colour: str | None = None
    size: str | None = None


def matches(s: Shape, ref: Ref) -> bool:
    """Whether the shape fits every attribute the Ref names."""
    return (
        (ref.noun in GENERIC or ref.noun == s.shape)
        and (ref.colour is None or ref.colour == s.colour)
        and (ref.size is None or ref.size == s.size)
    )


def count(shapes: Sequence[Shape], ref: Ref) -> int:
    """How many shapes fit the Ref."""
    return sum(matches(s, ref) for s in shapes)


def ref_of(s: Shape, attrs: Sequence[str], generic: str = OBJECT) -> Ref:
    """The Ref naming `attrs` (of "size", "colour", "shape") of s; `generic` is the noun without "shape"."""
    return Ref(
        s.shape if "shape" in attrs else generic,
        s.colour if "colour" in attrs else None,
        s.size if "size" in attrs else None,
    )


def unique_ref(target: Shape, shapes: Sequence[Shape], options: Sequence[Sequence[str]]) -> Ref | None:
    """The first attribute set of `options` whose Ref matches the target and no other shape, else None."""
    for attrs in options:
        ref = ref_of(target, attrs)
        if all(matches(s, ref) == (s is target) for s in shapes):
            return ref
    return None


def clearly_not(a: Shape, b: Shape, rel: str) -> bool:
    """a is not `rel` of b even loosely: its centre is level with b's or on the opposite side."""
    dx = (a.x0 + a.x1) - (b.x0 + b.x1)
    dy = (a.y0 + a.y1) - (b.y0 + b.y1)
    along = {"left": -dx, "right": dx, "above": -dy, "below": dy}[rel]
    return along <= 0


def holds(a: Shape, b: Shape, rel: str) -> bool:
    """a is `rel` of b (the dominant axis, as captions say)."""
    return relation(a, b) == rel


def location_if_clear(s: Shape, image_size: int, margin: float = 0.04) -> str | None:
    """The 3 × 3 grid cell of s's centre, or None when the centre lies within `margin` of a cell border."""
    third = image_size / 3
    for centre in ((s.x0 + s.x1 + 1) / 2, (s.y0 + s.y1 + 1) / 2):
        if min(abs(centre - third), abs(centre - 2 * third)) < margin * image_size:
            return None
    return s.location(image_size)
