"""Question plans for kinds 'vqa' (one scene) and 'video_qa' (one clip): question, one answer, question type.

Image question types (drawn uniformly): colour, shape, size (of an object named without that
attribute), count (all shapes, shapes of a colour, shapes of a kind; 0 is an answer), position
(yes/no "is A left of B?" half the time when there are two objects, else "where is A?" → grid cell),
exists (yes/no, balanced; "no" asks about a near miss: the colour or shape of a present object
changed). Clip question types: direction (of a named mover), shape and colour (of the mover going
one way). An object is only named by a Ref that fits it alone, a relation is only denied where it
is clearly false and a location only asked where the centre is clear of the grid lines.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plugins.data._synth_lang import COLOURS, RELATIONS, SHAPES
from plugins.data._synth_refs import SHAPE, Ref, clearly_not, count, location_if_clear, unique_ref
from plugins.data._synth_scene import Clip, Scene, Shape, relation
from plugins.data._synth_words import VARIANTS, Words
from plugins.data._synth_world import World

__all__ = ["IMAGE_TYPES", "VIDEO_TYPES", "QAPlan", "plan_video_qa", "plan_vqa"]

IMAGE_TYPES = ("colour", "shape", "size", "count", "position", "exists")
VIDEO_TYPES = ("direction", "shape", "colour")
_ATTEMPTS = 500
# attribute sets that may name an object, most economical first
_NO_COLOUR = (("shape",), ("size", "shape"))
_NO_SHAPE = (("colour",), ("size", "colour"))
_NO_SIZE = (("shape",), ("colour", "shape"))
_NAMED = (("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape"))


@dataclass(frozen=True)
class QAPlan:
    """A question about `visual` (a Scene or a Clip) with its one answer, in one language."""

    visual: Scene | Clip
    question: str
    answer: str
    question_type: str


Asked = tuple[str, str] | None  # (question, answer), or None when the scene cannot answer this type
Asker = Callable[[random.Random, Scene, World, Words, int], Asked]


def _pick(rng: random.Random, shapes: Sequence[Shape], options: Sequence[Sequence[str]]) -> tuple[Shape, Ref] | None:
    named = [(s, ref) for s in shapes if (ref := unique_ref(s, shapes, options)) is not None]
    return named[rng.randrange(len(named))] if named else None


def _ask_colour(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    found = _pick(rng, scene.shapes, _NO_COLOUR)
    return None if found is None else (words.ask_colour(found[1], v), words.colour(found[0].colour))


def _ask_shape(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    found = _pick(rng, scene.shapes, _NO_SHAPE)
    return None if found is None else (words.ask_shape(found[1], v), words.shape(found[0].shape))


def _ask_size(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    found = _pick(rng, scene.shapes, _NO_SIZE)
    return None if found is None else (words.ask_size(found[1], v), words.size(found[0].size))


def _ask_count(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    mode, shapes = rng.randrange(3), scene.shapes
    present = shapes[rng.randrange(len(shapes))]
    absent = rng.random() < 0.25  # sometimes a colour / kind that may not be there (answer 0)
    if mode == 0:
        ref = Ref(SHAPE)
    elif mode == 1:
        ref = Ref(SHAPE, COLOURS[rng.randrange(len(COLOURS))] if absent else present.colour)
    else:
        ref = Ref(SHAPES[rng.randrange(len(SHAPES))] if absent else present.shape)
    return words.ask_count(ref, v), words.number(count(shapes, ref))


def _ask_relation(rng: random.Random, scene: Scene, words: Words, v: int) -> Asked:
    shapes = scene.shapes
    pairs = [
        (a, ra, b, rb) for a in shapes for b in shapes
        if a is not b
        and (ra := unique_ref(a, shapes, _NAMED)) is not None
        and (rb := unique_ref(b, shapes, _NAMED)) is not None
    ]
    if not pairs:
        return None
    a, ra, b, rb = pairs[rng.randrange(len(pairs))]
    truth, actual = rng.random() < 0.5, relation(a, b)
    denied = [r for r in RELATIONS if r != actual and clearly_not(a, b, r)]
    asked = actual if truth else denied[rng.randrange(len(denied))]
    return words.ask_relation(ra, asked, rb, v), words.yes_no(truth, "position")


def _ask_position(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    if len(scene.shapes) > 1 and rng.random() < 0.5:
        return _ask_relation(rng, scene, words, v)
    found = _pick(rng, scene.shapes, _NAMED)
    where = None if found is None else location_if_clear(found[0], world.image_size)
    return None if found is None or where is None else (words.ask_where(found[1], v), words.location(where))


def _ask_exists(rng: random.Random, scene: Scene, world: World, words: Words, v: int) -> Asked:
    s = scene.shapes[rng.randrange(len(scene.shapes))]
    if rng.random() < 0.5:
        return words.ask_exists(Ref(s.shape, s.colour), v), words.yes_no(True, "exists")
    shown = {(t.colour, t.shape) for t in scene.shapes}
    misses = [
        (c, k) for c, k in [(c, s.shape) for c in COLOURS] + [(s.colour, k) for k in SHAPES]
        if (c, k) not in shown and (c, k) in world.combos
    ]
    if not misses:
        return None
    colour, shape = misses[rng.randrange(len(misses))]
    return words.ask_exists(Ref(shape, colour), v), words.yes_no(False, "exists")


_IMAGE_ASKERS: dict[str, Asker] = {
    "colour": _ask_colour, "shape": _ask_shape, "size": _ask_size,
    "count": _ask_count, "position": _ask_position, "exists": _ask_exists,
}


def plan_vqa(rng: random.Random, world: World, words: Words) -> QAPlan:
    """A question type drawn uniformly, then scenes drawn until one can answer it."""
    qtype = IMAGE_TYPES[rng.randrange(len(IMAGE_TYPES))]
    for _ in range(_ATTEMPTS):
        scene, v = world.scene(rng), rng.randrange(VARIANTS)
        asked = _IMAGE_ASKERS[qtype](rng, scene, world, words, v)
        if asked is not None:
            return QAPlan(scene, asked[0], asked[1], qtype)
    raise RuntimeError(f"data plugin 'synthetic' (kind vqa): no scene answers a {qtype!r} question; allow more objects")


def _ask_clip(rng: random.Random, clip: Clip, qtype: str, words: Words, v: int) -> Asked:
    movers = clip.movers
    if qtype == "direction":
        combos = [(n.start.colour, n.start.shape) for n in movers]
        named = [m for m, combo in zip(movers, combos, strict=True) if combos.count(combo) == 1]
        if not named:
            return None
        m = named[rng.randrange(len(named))]
        return words.ask_direction(Ref(m.start.shape, m.start.colour), v), words.direction(m.direction)
    alone = [m for m in movers if sum(n.direction == m.direction for n in movers) == 1]
    if not alone:
        return None
    m = alone[rng.randrange(len(alone))]
    if qtype == "shape":
        return words.ask_mover_shape(m.direction, v), words.shape(m.start.shape)
    return words.ask_mover_colour(m.direction, v), words.colour(m.start.colour)


def plan_video_qa(rng: random.Random, world: World, words: Words) -> QAPlan:
    """A clip question type drawn uniformly, then clips drawn until one can answer it."""
    qtype = VIDEO_TYPES[rng.randrange(len(VIDEO_TYPES))]
    for _ in range(_ATTEMPTS):
        clip, v = world.clip(rng), rng.randrange(VARIANTS)
        asked = _ask_clip(rng, clip, qtype, words, v)
        if asked is not None:
            return QAPlan(clip, asked[0], asked[1], qtype)
    raise RuntimeError(f"data plugin 'synthetic' (kind video_qa): no clip answers a {qtype!r} question")
