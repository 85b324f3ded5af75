"""Drawing styles of the synthetic world: 'default' (the plain renderer), 'varied' (training variety) and
'foreign' (a held-out renderer, see _synth_foreign) → uint8 [3, H, W] images and [F, 3, H, W] clips.

'varied' keeps the default drawing code (aliased PIL shapes that fill their bounds exactly) and varies
everything around it: backgrounds are the default greys, pastel or light flats, light gradients, noisy
greys or faint stripes; each object's colour is jittered by up to ±16 per channel; a third of the
images get fine grain over everything; shape sizes span a wider range (STYLE_SIDES).

A style draws its whole look (background, grain, then per-object parameters) from a generator seeded
by the record, so a clip's frames share one look, and drawing a scene without its objects gives
exactly the background the objects were drawn on (what the box tests compare against).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from plugins.data._synth_foreign import foreign_painter, pastel
from plugins.data._synth_scene import (
    BACKGROUNDS,
    RGB,
    SIDES,
    Clip,
    Scene,
    Shape,
    Sides,
    default_background,
    draw_shape,
    render_clip,
    render_scene,
)

__all__ = ["STYLES", "STYLE_SIDES", "render_frames", "render_image", "varied_painter"]

STYLES = ("default", "varied", "foreign")
STYLE_SIDES: dict[str, Sides] = {
    "default": SIDES,
    "varied": {"small": (0.10, 0.22), "large": (0.26, 0.44)},
    "foreign": {"small": (0.07, 0.13), "large": (0.40, 0.52)},
}
_JITTER = 16

Painter = Callable[[Sequence[Shape]], np.ndarray]  # shapes → [H, W, 3] uint8 on the look's background


def _gradient(a: np.ndarray, b: np.ndarray, size: int, vertical: bool) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    line = a[None] * (1 - t[:, None]) + b[None] * t[:, None]  # [S, 3]
    return np.broadcast_to(line[:, None] if vertical else line[None], (size, size, 3)).copy()


def _varied_background(rng: random.Random, np_rng: np.random.Generator, size: int) -> np.ndarray:
    """[S, S, 3] float32: one of five kinds, none close to an object colour."""
    kind = rng.randrange(5)
    if kind == 0:
        return np.asarray(default_background(rng.randrange(len(BACKGROUNDS)), size), np.float32).copy()
    if kind == 1:
        return np.broadcast_to(pastel(rng), (size, size, 3)).copy()
    if kind == 2:
        return _gradient(pastel(rng), pastel(rng), size, rng.random() < 0.5)
    if kind == 3:
        grey = rng.uniform(25, 235)
        noise = np_rng.normal(0.0, rng.uniform(6, 14), (size, size, 1)).astype(np.float32)
        return np.asarray(np.clip(grey + noise, 0, 255).repeat(3, axis=2), np.float32)
    base, period = pastel(rng), rng.randint(3, 10)
    stripes = (np.arange(size) // period) % 2 == 1
    image = np.broadcast_to(base, (size, size, 3)).copy()
    darker = rng.uniform(10, 25)
    if rng.random() < 0.5:
        image[stripes] -= darker
    else:
        image[:, stripes] -= darker
    return image


def _jittered(rng: random.Random, colour: str) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, v + rng.randint(-_JITTER, _JITTER))) for v in RGB[colour])
    return r, g, b


def varied_painter(rng: random.Random, n_shapes: int, image_size: int) -> Painter:
    """The 'varied' look for n shapes (background and grain first, then each shape's colour jitter)."""
    np_rng = np.random.default_rng(rng.getrandbits(64))
    background = np.rint(_varied_background(rng, np_rng, image_size)).astype(np.uint8)
    grain = np_rng.normal(0, rng.uniform(2, 6), background.shape) if rng.random() < 0.35 else None
    offsets = [rng.getrandbits(32) for _ in range(n_shapes)]  # per-shape seeds: the same in every frame

    def paint(shapes: Sequence[Shape]) -> np.ndarray:
        image = Image.fromarray(background, "RGB")
        draw = ImageDraw.Draw(image)
        for s, offset in zip(shapes, offsets, strict=True):
            draw_shape(draw, s, _jittered(random.Random(offset), s.colour))
        out = np.asarray(image, dtype=np.uint8)
        return out if grain is None else np.clip(out + grain, 0, 255).round().astype(np.uint8)

    return paint


_PAINTERS: dict[str, Callable[[random.Random, int, int], Painter]] = {
    "varied": varied_painter,
    "foreign": foreign_painter,
}


def _chw(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def render_image(scene: Scene, image_size: int, style: str, seed: str) -> Tensor:
    """Scene → uint8 [3, H, W] in `style`; `seed` fixes the look of non-default styles."""
    if style == "default":
        return render_scene(scene, image_size)
    paint = _PAINTERS[style](random.Random(seed), len(scene.shapes), image_size)
    return _chw(paint(scene.shapes))


def render_frames(clip: Clip, image_size: int, frames: int, style: str, seed: str) -> Tensor:
    """Clip → uint8 [F, 3, H, W] in `style`, one look for all frames."""
    if style == "default":
        return render_clip(clip, image_size, frames)
    paint = _PAINTERS[style](random.Random(seed), len(clip.movers), image_size)
    stack = np.stack([paint([m.at(f) for m in clip.movers]) for f in range(frames)])
    return torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))
