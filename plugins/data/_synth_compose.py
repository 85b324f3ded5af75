"""Winoground-style plans for kind 'composition': two scenes and two captions with the same words reordered.

Tags (drawn uniformly): 'attribute' ("a red circle and a blue square" / "a blue circle and a red
square"), 'relation' ("a red circle left of a blue square" / "a blue square left of a red circle")
and 'count' ("two circles and a square" / "a circle and two squares"). Each scene holds exactly the
objects its caption names (two, or three for counts), so caption i is true of scene i and false of
the other; the two layouts are drawn independently. In the compositional split the first scene shows
a holdout combo.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plugins.data._synth_lang import RELATIONS
from plugins.data._synth_refs import Ref, holds
from plugins.data._synth_scene import Scene
from plugins.data._synth_words import Words
from plugins.data._synth_world import World

__all__ = ["TAGS", "CompositionPlan", "plan_composition"]

TAGS = ("attribute", "relation", "count")
_ATTEMPTS, _LAYOUTS = 500, 60

Specs = Sequence[tuple[str, str, str | None]]
Made = tuple[tuple[Scene, Scene], tuple[str, str]] | None
Maker = Callable[[random.Random, World, Words], Made]


@dataclass(frozen=True)
class CompositionPlan:
    """scenes[i] is described by captions[i] only; `tag` names what the captions swap."""

    scenes: tuple[Scene, Scene]
    captions: tuple[str, str]
    tag: str


def _layout(rng: random.Random, world: World, specs: Specs, check: Callable[[Scene], bool] = lambda s: True) -> Scene | None:
    for _ in range(_LAYOUTS):
        scene = world.designed(rng, specs)
        if scene is not None and check(scene):
            return scene
    return None


def _pair(rng: random.Random, world: World) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """Two combos differing in colour and in shape (the first a holdout combo in the compositional split)."""
    first = world.forced(rng) or world.combo(rng)
    second = world.combo(rng)
    return None if second[0] == first[0] or second[1] == first[1] else (first, second)


def _attribute(rng: random.Random, world: World, words: Words) -> Made:
    combos = _pair(rng, world)
    if combos is None:
        return None
    (c1, s1), (c2, s2) = combos
    if not world.compositional and not {(c2, s1), (c1, s2)} <= set(world.combos):
        return None
    a = _layout(rng, world, [(c1, s1, None), (c2, s2, None)])
    b = _layout(rng, world, [(c2, s1, None), (c1, s2, None)])
    if a is None or b is None:
        return None
    captions = (
        words.compose_and([(1, Ref(s1, c1)), (1, Ref(s2, c2))]),
        words.compose_and([(1, Ref(s1, c2)), (1, Ref(s2, c1))]),
    )
    return (a, b), captions


def _relation(rng: random.Random, world: World, words: Words) -> Made:
    combos = _pair(rng, world)
    if combos is None:
        return None
    (c1, s1), (c2, s2) = combos
    rel = RELATIONS[rng.randrange(len(RELATIONS))]
    specs: Specs = [(c1, s1, None), (c2, s2, None)]
    a = _layout(rng, world, specs, lambda s: holds(s.shapes[0], s.shapes[1], rel))
    b = _layout(rng, world, specs, lambda s: holds(s.shapes[1], s.shapes[0], rel))
    if a is None or b is None:
        return None
    one, two = Ref(s1, c1), Ref(s2, c2)
    return (a, b), (words.compose_related(one, rel, two), words.compose_related(two, rel, one))


def _colour_of(rng: random.Random, world: World, shape: str) -> str:
    colours = [c for c, s in world.combos if s == shape]
    return colours[rng.randrange(len(colours))]


def _count(rng: random.Random, world: World, words: Words) -> Made:
    forced = world.forced(rng)
    s1 = forced[1] if forced else world.combo(rng)[1]
    s2 = world.combo(rng)[1]
    if s1 == s2 or not any(s == s1 for _, s in world.combos):
        return None
    first = forced[0] if forced else _colour_of(rng, world, s1)
    a_specs: Specs = [(first, s1, None), (_colour_of(rng, world, s1), s1, None), (_colour_of(rng, world, s2), s2, None)]
    b_specs: Specs = [(_colour_of(rng, world, s1), s1, None)] + [(_colour_of(rng, world, s2), s2, None) for _ in range(2)]
    a, b = _layout(rng, world, a_specs), _layout(rng, world, b_specs)
    if a is None or b is None:
        return None
    captions = (words.compose_and([(2, Ref(s1)), (1, Ref(s2))]), words.compose_and([(1, Ref(s1)), (2, Ref(s2))]))
    return (a, b), captions


_MAKERS: dict[str, Maker] = {"attribute": _attribute, "relation": _relation, "count": _count}


def plan_composition(rng: random.Random, world: World, words: Words) -> CompositionPlan:
    """A tag drawn uniformly, then combos and layouts until both scenes fit."""
    tag = TAGS[rng.randrange(len(TAGS))]
    for _ in range(_ATTEMPTS):
        made = _MAKERS[tag](rng, world, words)
        if made is not None:
            scenes, captions = made
            return CompositionPlan(scenes, captions, tag)
    raise RuntimeError(f"data plugin 'synthetic' (kind composition): no {tag!r} pair fits; use a larger image_size")
