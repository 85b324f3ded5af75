"""The 'foreign' renderer: a held-out way of drawing the synthetic world, never used for training.

Its own drawing code: each shape is drawn 4× supersampled into a coverage mask and box-filtered down
(anti-aliased edges), polygons are turned by up to ±22° and then rescaled to fill their bounds (so
boxes stay tight: coverage only inside [x0, x1] × [y0, y1] and touching all four sides), half the
shapes get a dark outline inside their edge (1–2 px, none below 10 px), most get a light-to-dark vertical shading, and colours
jitter by ±8. Backgrounds are light or pastel: radial or diagonal gradients, low-contrast checkers
or grainy paper. Arrays are [H, W, 3] (uint8 out, float32 while compositing).
"""

from __future__ import annotations

import colorsys
import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from plugins.data._synth_scene import RGB, Shape, star_unit

__all__ = ["foreign_painter", "pastel", "unit_polygon"]

_SUPER = 4  # supersampling factor per axis
_MAX_TURN = 22.0  # degrees: a turned square is still a square to a person, not a diamond

Painter = Callable[[Sequence[Shape]], np.ndarray]


def pastel(rng: random.Random) -> np.ndarray:
    """A light, low-saturation colour [3] float32 (far from every saturated object colour)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.32), rng.uniform(0.86, 1.0))
    return np.asarray((r, g, b), np.float32) * 255


@functools.cache
def unit_polygon(shape: str) -> tuple[tuple[float, float], ...]:
    """Vertices of a polygonal shape in [0, 1]² (bounding box exactly the unit square)."""
    third = 1 / 3
    if shape == "square":
        return ((0, 0), (1, 0), (1, 1), (0, 1))
    if shape == "triangle":
        return ((0.5, 0), (1, 1), (0, 1))
    if shape == "star":
        return star_unit()
    if shape == "cross":
        a, b = third, 2 * third
        return ((a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a))
    raise ValueError(f"no polygon for shape {shape!r} (circles are drawn as ellipses)")


def _turned(shape: str, degrees: float) -> list[tuple[float, float]]:
    """The unit polygon turned about its centre and rescaled so its bounding box is [0, 1]² again."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    points = [((u - 0.5) * c - (v - 0.5) * s, (u - 0.5) * s + (v - 0.5) * c) for u, v in unit_polygon(shape)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in points]


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (y, x) coordinates / size, [S, S] each (read-only, shared)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def _background(rng: random.Random, np_rng: np.random.Generator, size: int) -> np.ndarray:
    """[S, S, 3] float32 light background: radial, diagonal, checker or paper."""
    kind = rng.randrange(4)
    ys, xs = _grid(size)
    a, b = pastel(rng), pastel(rng)
    if kind == 0:
        cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
        t = np.clip(np.hypot(xs - cx, ys - cy) / 0.9, 0, 1)
    elif kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        t = np.clip((xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle) + 0.5, 0, 1)
    elif kind == 2:
        cell = rng.randint(3, 9)
        t = ((np.rint(xs * size) // cell + np.rint(ys * size) // cell) % 2).astype(np.float32)
        b = np.clip(a - rng.uniform(12, 30), 0, 255)
    else:
        blotches = Image.fromarray(np_rng.uniform(0, 255, (6, 6)).astype(np.uint8), "L")
        coarse = blotches.resize((size, size), Image.Resampling.BICUBIC)
        t = np.asarray(coarse, np.float32) / 255 * 0.5
    image = a * (1 - t[..., None]) + b * t[..., None]
    grain = np_rng.normal(0, rng.uniform(1.5, 4), image.shape) if kind == 3 or rng.random() < 0.3 else 0
    return np.asarray(np.clip(image + grain, 0, 255), np.float32)


@dataclass(frozen=True)
class _Pen:
    """How one shape is drawn: turn (degrees), outline width (pixels, 0 = none), shading, colour jitter."""

    turn: float
    outline: int
    shaded: bool
    jitter: tuple[int, int, int]

    @staticmethod
    def draw(rng: random.Random) -> _Pen:
        turn = rng.uniform(-_MAX_TURN, _MAX_TURN) if rng.random() < 0.8 else 0.0
        outline = rng.choice((1, 2)) if rng.random() < 0.5 else 0
        jitter = (rng.randint(-8, 8), rng.randint(-8, 8), rng.randint(-8, 8))
        return _Pen(turn, outline, rng.random() < 0.7, jitter)


def _masks(s: Shape, turn: float, outline: int) -> tuple[np.ndarray, np.ndarray]:
    """Supersampled 0/1 masks over the shape's bounds: the whole shape (touching all four sides) and its
    outline band `outline` pixels wide inside the edge (a line centred on the edge, cut to the inside)."""
    w, h = (s.x1 - s.x0 + 1) * _SUPER, (s.y1 - s.y0 + 1) * _SUPER
    fill, edge = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    band = 2 * outline * _SUPER
    if s.shape == "circle":
        ImageDraw.Draw(fill).ellipse((0, 0, w - 1, h - 1), fill=255)
        if outline:
            ImageDraw.Draw(edge).ellipse((0, 0, w - 1, h - 1), outline=255, width=band // 2)
    else:
        points = [(u * (w - 1), v * (h - 1)) for u, v in _turned(s.shape, turn)]
        ImageDraw.Draw(fill).polygon(points, fill=255)
        if outline:
            ImageDraw.Draw(edge).line([*points, points[0]], fill=255, width=band, joint="curve")
    full = np.asarray(fill, np.float32) / 255
    return full, np.minimum(full, np.asarray(edge, np.float32) / 255)


def _coverage(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Box-filter a supersampled 0/1 mask down to [h, w] coverage in [0, 1]."""
    return np.asarray(mask.reshape(h, _SUPER, w, _SUPER).mean(axis=(1, 3)), np.float32)


def _composite(canvas: np.ndarray, s: Shape, pen: _Pen) -> None:
    h, w = s.y1 - s.y0 + 1, s.x1 - s.x0 + 1
    width = min(pen.outline, w // 10)  # small shapes keep a thin or no outline, so their colour shows
    full, ring = _masks(s, pen.turn, width)
    fill_cov, ring_cov = _coverage(full, h, w)[..., None], _coverage(ring, h, w)[..., None]
    base = np.clip(np.asarray(RGB[s.colour], np.float32) + np.asarray(pen.jitter, np.float32), 0, 255)
    if pen.shaded:  # lighter at the top, darker at the bottom, as if lit from above
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        colour = (base + (255 - base) * 0.18) * (1 - t) + base * 0.88 * t
    else:
        colour = np.broadcast_to(base, (h, 1, 3))
    region = canvas[s.y0 : s.y1 + 1, s.x0 : s.x1 + 1]
    outline = base * 0.5
    region[:] = region * (1 - fill_cov) + colour * (fill_cov - ring_cov) + outline * ring_cov


def foreign_painter(rng: random.Random, n_shapes: int, image_size: int) -> Painter:
    """The 'foreign' look for n shapes (background first, then each shape's pen)."""
    np_rng = np.random.default_rng(rng.getrandbits(64))
    background = _background(rng, np_rng, image_size)
    pens = [_Pen.draw(rng) for _ in range(n_shapes)]

    def paint(shapes: Sequence[Shape]) -> np.ndarray:
        canvas = background.copy()
        for s, pen in zip(shapes, pens, strict=True):
            _composite(canvas, s, pen)
        return np.asarray(np.clip(np.rint(canvas), 0, 255), np.uint8)

    return paint
