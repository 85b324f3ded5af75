"""Statement plans for kind 'nlvr2': two scenes (left, right) and a statement about them, true or false.

Statement templates (drawn uniformly): count ("the left image contains exactly two circles" /
"... exactly one red shape"), both ("both images contain a red circle"), more ("there are more
squares in the left image than in the right image") and relation ("in the right image a star is left
of a circle": some star–circle pair in that image has that relation). The label is drawn first (50/50)
and candidate statements about the drawn scenes are tried until one's truth, computed from the scenes,
equals it; a relation statement whose truth a person could dispute (a pair neither in that relation
nor clearly not) is never used.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from plugins.data._synth_lang import RELATIONS
from plugins.data._synth_refs import SHAPE, Ref, clearly_not, count, holds, matches
from plugins.data._synth_scene import Scene, Shape
from plugins.data._synth_words import SIDES_LR, Words
from plugins.data._synth_world import World

__all__ = ["STATEMENTS", "PairPlan", "plan_nlvr2"]

STATEMENTS = ("count", "both", "more", "relation")
_ATTEMPTS, _CANDIDATES = 500, 12

Pair = tuple[Scene, Scene]
Said = tuple[str, bool] | None  # (statement, truth), or None when no fair statement came out
Maker = Callable[[random.Random, Pair, Words], Said]


@dataclass(frozen=True)
class PairPlan:
    """A statement about scenes (left, right) and whether it is true."""

    scenes: Pair
    text: str
    label: bool


def _some_shape(rng: random.Random, pair: Pair) -> Shape:
    shapes = pair[0].shapes + pair[1].shapes
    return shapes[rng.randrange(len(shapes))]


def _kind_or_colour(rng: random.Random, s: Shape) -> Ref:
    """'circles' or 'red shapes' (what the count and more templates count)."""
    return Ref(s.shape) if rng.random() < 0.5 else Ref(SHAPE, s.colour)


def _say_count(rng: random.Random, pair: Pair, words: Words) -> Said:
    side, ref, n = rng.randrange(2), _kind_or_colour(rng, _some_shape(rng, pair)), rng.randint(1, 3)
    return words.says_count(SIDES_LR[side], n, ref), count(pair[side].shapes, ref) == n


def _say_both(rng: random.Random, pair: Pair, words: Words) -> Said:
    s, mode = _some_shape(rng, pair), rng.randrange(3)
    ref = (Ref(s.shape), Ref(SHAPE, s.colour), Ref(s.shape, s.colour))[mode]
    return words.says_both(ref), all(count(scene.shapes, ref) > 0 for scene in pair)


def _say_more(rng: random.Random, pair: Pair, words: Words) -> Said:
    side, ref = rng.randrange(2), _kind_or_colour(rng, _some_shape(rng, pair))
    return words.says_more(ref, SIDES_LR[side]), count(pair[side].shapes, ref) > count(pair[1 - side].shapes, ref)


def _say_relation(rng: random.Random, pair: Pair, words: Words) -> Said:
    side = rng.randrange(2)
    source = pair[side] if rng.random() < 0.7 else pair[1 - side]  # the other image's pairs make false ones
    if len(source.shapes) < 2:
        return None
    i, j = rng.sample(range(len(source.shapes)), 2)
    a, b = source.shapes[i], source.shapes[j]
    if a.shape == b.shape:
        return None
    rel = RELATIONS[rng.randrange(len(RELATIONS))]
    ra, rb = Ref(a.shape), Ref(b.shape)
    candidates = [(x, y) for x in pair[side].shapes for y in pair[side].shapes if matches(x, ra) and matches(y, rb)]
    truth = any(holds(x, y, rel) for x, y in candidates)
    if not truth and not all(clearly_not(x, y, rel) for x, y in candidates):
        return None
    return words.says_relation(SIDES_LR[side], ra, rel, rb), truth


_MAKERS: dict[str, Maker] = {"count": _say_count, "both": _say_both, "more": _say_more, "relation": _say_relation}


def plan_nlvr2(rng: random.Random, world: World, words: Words) -> PairPlan:
    """Label and template first, then scene pairs and candidate statements until one has that label."""
    label, template = rng.random() < 0.5, STATEMENTS[rng.randrange(len(STATEMENTS))]
    for _ in range(_ATTEMPTS):
        pair = (world.scene(rng), world.scene(rng))
        for _ in range(_CANDIDATES):
            said = _MAKERS[template](rng, pair, words)
            if said is not None and said[1] == label:
                return PairPlan(pair, said[0], label)
    raise RuntimeError(f"data plugin 'synthetic' (kind nlvr2): no {label} {template!r} statement; allow more objects")
