"""Referring-expression plans for kind 'refexp': scenes with distractors and the expression for each object.

Most scenes are designed around a target with distractors (modes, drawn per record): 'colour' (a
same-shape object of another colour: "the red circle"), 'both' (also a same-colour object of
another shape), 'size' (the same colour and shape in the other size: "the small circle"), 'relation'
(a twin of the same colour, shape and size plus a landmark: "the circle left of the star"); the rest
are random scenes. Every object gets the shortest expression that fits it alone (attributes first,
then a relation to a landmark that the twins are clearly not in); objects without one are left out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from plugins.data._synth_lang import SIZES
from plugins.data._synth_refs import clearly_not, matches, ref_of, unique_ref
from plugins.data._synth_scene import Scene, Shape, relation
from plugins.data._synth_words import Words
from plugins.data._synth_world import World

__all__ = ["MODES", "RefPlan", "describe_object", "plan_refexp"]

MODES = ("colour", "colour", "both", "both", "size", "relation", "relation", "random")  # drawn uniformly
_ATTEMPTS = 500
_ATTRIBUTES = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))
_HEADS = (("shape",), ("colour", "shape"), ("size", "colour", "shape"))


@dataclass(frozen=True)
class RefPlan:
    """A scene, its target (the object the design is about; None for random scenes) and (object, expression)s."""

    scene: Scene
    target: Shape | None
    expressions: tuple[tuple[Shape, str], ...]


def _related(target: Shape, shapes: Sequence[Shape], words: Words) -> str | None:
    """'the circle left of the star': a head fitting the target and its twins, and a landmark that tells them apart."""
    for attrs in _HEADS:
        head = ref_of(target, attrs)
        twins = [s for s in shapes if s is not target and matches(s, head)]
        for landmark in shapes:
            if landmark is target or matches(landmark, head):
                continue
            named = unique_ref(landmark, shapes, _ATTRIBUTES)
            rel = relation(target, landmark)
            if named is not None and all(clearly_not(t, landmark, rel) for t in twins):
                return words.refer_related(head, rel, named)
    return None


def describe_object(target: Shape, shapes: Sequence[Shape], words: Words) -> str | None:
    """The shortest expression that fits the target alone, or None."""
    ref = unique_ref(target, shapes, _ATTRIBUTES)
    return words.refer(ref) if ref is not None else _related(target, shapes, words)


def _other(rng: random.Random, world: World, keep: tuple[str, str], axis: int) -> tuple[str, str] | None:
    """An allowed combo sharing `keep`'s colour (axis 0) or shape (axis 1) and differing in the other."""
    options = [c for c in world.combos if c[axis] == keep[axis] and c != keep]
    return options[rng.randrange(len(options))] if options else None


def _specs(rng: random.Random, world: World, mode: str) -> Sequence[tuple[str, str, str | None]] | None:
    target = world.forced(rng) or world.combo(rng)
    size = SIZES[rng.randrange(2)]
    third = world.combo(rng) if rng.random() < 0.5 else None
    if mode == "colour":
        rival = _other(rng, world, target, 1)
        return None if rival is None else [(*target, None), (*rival, None)] + ([(*third, None)] if third else [])
    if mode == "both":
        by_shape, by_colour = _other(rng, world, target, 1), _other(rng, world, target, 0)
        return None if by_shape is None or by_colour is None else [(*target, None), (*by_shape, None), (*by_colour, None)]
    if mode == "size":
        twin = (*target, SIZES[1 - SIZES.index(size)])
        return [(*target, size), twin] + ([(*third, None)] if third else [])
    landmark = world.combo(rng)  # mode 'relation'
    return None if landmark[1] == target[1] else [(*target, size), (*target, size), (*landmark, None)]


def plan_refexp(rng: random.Random, world: World, words: Words) -> RefPlan:
    """A mode, then scenes until the target (if any) has an expression."""
    mode = MODES[rng.randrange(len(MODES))]
    for _ in range(_ATTEMPTS):
        if mode == "random":
            scene, target = world.scene(rng), None
        else:
            specs = _specs(rng, world, mode)
            placed = None if specs is None else world.designed(rng, specs)
            if placed is None:
                continue
            target, shapes = placed.shapes[0], list(placed.shapes)
            rng.shuffle(shapes)  # the caption's order says nothing about which object is the target
            scene = Scene(placed.background, tuple(shapes))
        expressions = tuple((s, e) for s in scene.shapes if (e := describe_object(s, scene.shapes, words)) is not None)
        if expressions and (target is None or any(s is target for s, _ in expressions)):
            return RefPlan(scene, target, expressions)
    raise RuntimeError(f"data plugin 'synthetic' (kind refexp): no {mode!r} scene fits; use a larger image_size")
