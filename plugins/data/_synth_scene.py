"""Scenes of the synthetic world: sampling (pure Python, seeded) and drawing (PIL) → uint8 [3, H, W].

A shape occupies a square of inclusive pixel bounds [x0, x1] × [y0, y1]; every shape is drawn so its
pixels touch all four sides of that square, so the normalised box (x0/W, y0/H, (x1+1)/W, (y1+1)/H) is
tight. Shapes in one image (and their whole paths in a clip) keep a gap of at least 2 pixels, and
object colours are saturated while backgrounds are greys, so every pixel belongs clearly to one thing.
Side lengths per size word come from `sides` (SIDES here; the styles of _synth_style widen them), and
`place_scene` places shapes of given attributes for the task kinds' designed scenes.
"""

from __future__ import annotations

import functools
import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from plugins.data._synth_lang import DIRECTIONS, LOCATIONS, SHAPES, SIZES, Thing

__all__ = [
    "BACKGROUNDS",
    "RGB",
    "SIDES",
    "Clip",
    "Mover",
    "Scene",
    "Shape",
    "Sides",
    "default_background",
    "draw_shape",
    "place_scene",
    "relation",
    "render_clip",
    "render_scene",
    "sample_clip",
    "sample_scene",
    "split_bucket",
    "star_unit",
    "union_box",
]

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (145, 60, 195),
    "orange": (245, 140, 30),
}
# (top/left colour, bottom/right colour, vertical?) — low saturation, never equal to an object colour
BACKGROUNDS: tuple[tuple[tuple[int, int, int], tuple[int, int, int], bool], ...] = (
    ((30, 30, 30), (30, 30, 30), True),
    ((128, 128, 128), (128, 128, 128), True),
    ((228, 228, 228), (228, 228, 228), True),
    ((60, 68, 84), (60, 68, 84), True),
    ((18, 20, 38), (96, 96, 116), True),
    ((205, 200, 190), (150, 150, 162), False),
)
Sides = Mapping[str, tuple[float, float]]  # size word → (lo, hi) side length as a fraction of the image
SIDES: Sides = {"small": (0.14, 0.20), "large": (0.30, 0.38)}  # typed read-only; a plain dict pickles
_GAP = 2  # pixels kept free between shapes
_TRIES = 60


@dataclass(frozen=True)
class Shape:
    """One drawn object: attributes (English keys) and inclusive pixel bounds."""

    shape: str
    colour: str
    size: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def thing(self) -> Thing:
        return Thing(self.size, self.colour, self.shape)

    def box(self, image_size: int) -> tuple[float, float, float, float]:
        """Normalised (cx, cy, w, h) of the pixels the shape covers."""
        return _box(self.x0, self.y0, self.x1, self.y1, image_size)

    def moved(self, dx: int, dy: int) -> Shape:
        return Shape(self.shape, self.colour, self.size, self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def location(self, image_size: int) -> str:
        """Which cell of the 3 × 3 grid holds the shape's centre."""
        col = min(int(3 * (self.x0 + self.x1 + 1) / (2 * image_size)), 2)
        row = min(int(3 * (self.y0 + self.y1 + 1) / (2 * image_size)), 2)
        return LOCATIONS[3 * row + col]


@dataclass(frozen=True)
class Scene:
    """A background (index into BACKGROUNDS) and 1–3 non-overlapping shapes in caption order."""

    background: int
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class Mover:
    """A shape at frame 0 moving `step` pixels per frame in `direction`."""

    start: Shape
    direction: str
    step: int

    def at(self, frame: int) -> Shape:
        dx, dy = _DELTA[self.direction]
        return self.start.moved(dx * self.step * frame, dy * self.step * frame)


@dataclass(frozen=True)
class Clip:
    """A background and 1–2 moving shapes whose paths do not overlap."""

    background: int
    movers: tuple[Mover, ...]


_DELTA = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}


def _box(x0: int, y0: int, x1: int, y1: int, size: int) -> tuple[float, float, float, float]:
    return ((x0 + x1 + 1) / (2 * size), (y0 + y1 + 1) / (2 * size), (x1 + 1 - x0) / size, (y1 + 1 - y0) / size)


def union_box(shapes: Sequence[Shape], image_size: int) -> tuple[float, float, float, float]:
    """Tight normalised box around several shapes."""
    return _box(
        min(s.x0 for s in shapes), min(s.y0 for s in shapes),
        max(s.x1 for s in shapes), max(s.y1 for s in shapes), image_size,
    )


def relation(a: Shape, b: Shape) -> str:
    """Where a lies relative to b along the axis where their centres differ most (image y points down)."""
    dx = (a.x0 + a.x1) - (b.x0 + b.x1)
    dy = (a.y0 + a.y1) - (b.y0 + b.y1)
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] + _GAP < b[0] or b[2] + _GAP < a[0] or a[3] + _GAP < b[1] or b[3] + _GAP < a[1]


def _side(rng: random.Random, size: str, image_size: int, sides: Sides) -> int:
    lo, hi = sides[size]
    return max(5, round(rng.uniform(lo, hi) * image_size))


def _combo(rng: random.Random, combos: Sequence[tuple[str, str]]) -> tuple[str, str]:
    return combos[rng.randrange(len(combos))]


def _place(
    rng: random.Random, placed: Sequence[Shape], spec: tuple[str, str, str], image_size: int, sides: Sides
) -> Shape | None:
    """One shape (colour, shape, size) at a random spot clear of `placed`; None when none is found."""
    colour, shape, size = spec
    side = _side(rng, size, image_size, sides)
    for _ in range(_TRIES):
        x0 = rng.randrange(1, image_size - side)
        y0 = rng.randrange(1, image_size - side)
        bounds = (x0, y0, x0 + side - 1, y0 + side - 1)
        if all(_apart(bounds, (p.x0, p.y0, p.x1, p.y1)) for p in placed):
            return Shape(shape, colour, size, *bounds)
    return None


def sample_scene(
    rng: random.Random,
    image_size: int,
    n_objects: int,
    combos: Sequence[tuple[str, str]],
    forced: tuple[str, str] | None = None,
    sides: Sides = SIDES,
) -> Scene | None:
    """Place n shapes (colour, shape) drawn from `combos` (the first is `forced` when given).

    Returns None when the shapes do not fit without overlap (the caller draws another scene).
    """
    placed: list[Shape] = []
    for k in range(n_objects):
        colour, shape = forced if (k == 0 and forced is not None) else _combo(rng, combos)
        found = _place(rng, placed, (colour, shape, SIZES[rng.randrange(2)]), image_size, sides)
        if found is None:
            return None
        placed.append(found)
    rng.shuffle(placed)  # caption order independent of placement order (the forced one is anywhere)
    return Scene(rng.randrange(len(BACKGROUNDS)), tuple(placed))


def place_scene(
    rng: random.Random, image_size: int, specs: Sequence[tuple[str, str, str | None]], sides: Sides = SIDES
) -> Scene | None:
    """Shapes of given (colour, shape, size or None = random size), in the order given; None if they do not fit."""
    placed: list[Shape] = []
    for colour, shape, size in specs:
        found = _place(rng, placed, (colour, shape, size or SIZES[rng.randrange(2)]), image_size, sides)
        if found is None:
            return None
        placed.append(found)
    return Scene(rng.randrange(len(BACKGROUNDS)), tuple(placed))


def sample_clip(
    rng: random.Random,
    image_size: int,
    frames: int,
    n_objects: int,
    combos: Sequence[tuple[str, str]],
    forced: tuple[str, str] | None = None,
    sides: Sides = SIDES,
) -> Clip | None:
    """1–2 shapes, each moving in one of DIRECTIONS by a clearly visible step per frame."""
    movers: list[Mover] = []
    swept: list[tuple[int, int, int, int]] = []
    for k in range(n_objects):
        colour, shape = forced if (k == 0 and forced is not None) else _combo(rng, combos)
        size = SIZES[rng.randrange(2)]
        side = _side(rng, size, image_size, sides)
        direction = DIRECTIONS[rng.randrange(len(DIRECTIONS))]
        # total travel is 30–45% of the image, so the motion dominates frame-to-frame change
        travel = round(rng.uniform(0.30, 0.45) * image_size)
        travel = min(travel, image_size - 2 - side)
        step = max(1, travel // (frames - 1))
        travel = step * (frames - 1)
        dx, dy = _DELTA[direction]
        for _ in range(_TRIES):
            x0 = rng.randrange(1, image_size - side - (travel if dx else 0))
            y0 = rng.randrange(1, image_size - side - (travel if dy else 0))
            if dx < 0:
                x0 += travel
            if dy < 0:
                y0 += travel
            start = Shape(shape, colour, size, x0, y0, x0 + side - 1, y0 + side - 1)
            end = start.moved(dx * travel, dy * travel)
            path = (min(start.x0, end.x0), min(start.y0, end.y0), max(start.x1, end.x1), max(start.y1, end.y1))
            if all(_apart(path, other) for other in swept):
                movers.append(Mover(start, direction, step))
                swept.append(path)
                break
        else:
            return None
    rng.shuffle(movers)
    return Clip(rng.randrange(len(BACKGROUNDS)), tuple(movers))


def split_bucket(scene: Scene | Clip) -> int:
    """A hash of what the scene looks like, in [0, 10): splits keep disjoint buckets (no shared scene)."""
    if isinstance(scene, Scene):
        parts = sorted(repr(s) for s in scene.shapes)
    else:
        parts = sorted(repr(m) for m in scene.movers)
    return zlib.crc32(f"{scene.background}|{'|'.join(parts)}".encode()) % 10


@functools.lru_cache(maxsize=64)
def default_background(index: int, image_size: int) -> Image.Image:
    """BACKGROUNDS[index] as an image (cached: copy before drawing on it)."""
    top, bottom, vertical = BACKGROUNDS[index]
    t = np.linspace(0.0, 1.0, image_size, dtype=np.float32)[:, None]
    line = np.rint(np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t).astype(np.uint8)
    grid = np.broadcast_to(line[:, None, :] if vertical else line[None, :, :], (image_size, image_size, 3))
    return Image.fromarray(np.ascontiguousarray(grid), "RGB")


@functools.cache
def star_unit() -> tuple[tuple[float, float], ...]:
    """A five-pointed star's ten vertices scaled so their bounding box is [0, 1] × [0, 1]."""
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return tuple(((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in points)


def draw_shape(draw: ImageDraw.ImageDraw, s: Shape, fill: tuple[int, int, int] | None = None) -> None:
    """Draw s filling exactly its bounds, in `fill` (default: its palette colour)."""
    fill = fill or RGB[s.colour]
    x0, y0, x1, y1 = s.x0, s.y0, s.x1, s.y1
    if s.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif s.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif s.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif s.shape == "star":
        w, h = x1 - x0, y1 - y0
        draw.polygon([(round(x0 + u * w), round(y0 + v * h)) for u, v in star_unit()], fill=fill)
    elif s.shape == "cross":
        t = (x1 - x0 + 1) // 3  # arms one third of the side thick
        draw.rectangle((x0, y0 + t, x1, y1 - t), fill=fill)
        draw.rectangle((x0 + t, y0, x1 - t, y1), fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {s.shape!r}; known: {', '.join(SHAPES)}")


def _pixels(image: Image.Image) -> Tensor:
    # numpy does the HWC → CHW copy: torch's uint8 permute-copy is much slower at these sizes
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)))


def render_scene(scene: Scene, image_size: int) -> Tensor:
    """Scene → uint8 [3, H, W] (H = W = image_size)."""
    image = default_background(scene.background, image_size).copy()
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        draw_shape(draw, s)
    return _pixels(image)


def render_clip(clip: Clip, image_size: int, frames: int) -> Tensor:
    """Clip → uint8 [F, 3, H, W]."""
    out = []
    for f in range(frames):
        image = default_background(clip.background, image_size).copy()
        draw = ImageDraw.Draw(image)
        for m in clip.movers:
            draw_shape(draw, m.at(f))
        out.append(np.asarray(image, dtype=np.uint8))
    return torch.from_numpy(np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2)))

