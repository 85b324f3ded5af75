"""PNG pictures of predictions, drawn with Pillow: a grounded phrase on its image, and contact sheets of hits.

Images are uint8 [3, H, W]; boxes are results.Box (normalised cx, cy, w, h).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from x2vlm_core.inference.results import Box

__all__ = ["Tile", "contact_sheet", "draw_boxes"]

_RED = (230, 20, 20)
_COLOURS = [(230, 20, 20), (20, 120, 230), (20, 170, 60), (230, 140, 0), (150, 60, 200)]


def _pil(image: Tensor) -> Any:
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).to(torch.uint8).contiguous().numpy(), "RGB")


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is `side` (small images are enlarged to stay legible)."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw_boxes(image: Tensor, boxes: Sequence[tuple[Box, str]], path: str | Path, side: int = 512) -> Path:
    """The image (longer side `side` px) with each (box, label) drawn and labelled below it; written as PNG."""
    from PIL import Image, ImageDraw

    width, height = _fit(int(image.shape[-1]), int(image.shape[-2]), side)
    picture = _pil(image).resize((width, height), Image.Resampling.BILINEAR)
    font = _font(14)
    line = 20
    canvas = Image.new("RGB", (width, height + line * len(boxes) + 6), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (box, label) in enumerate(boxes):
        colour = _COLOURS[i % len(_COLOURS)]
        draw.rectangle(list(box.pixels(width, height)), outline=colour, width=3)
        draw.text((6, height + 3 + i * line), label, fill=colour, font=font)
    path = Path(path)
    canvas.save(path)
    return path


@dataclass(frozen=True)
class Tile:
    """One cell of a contact sheet: an image, up to three lines of text, and an optional box on it."""

    image: Tensor
    lines: tuple[str, ...]
    box: Box | None = None


def contact_sheet(tiles: Sequence[Tile], path: str | Path, title: str = "", columns: int = 5,
                  thumb: int = 160) -> Path:
    """A grid of tiles (thumbnails `thumb` px, text under each, boxes in red) under a title; written as PNG."""
    from PIL import Image, ImageDraw

    font, small = _font(14), _font(11)
    text_h, head = 46, 26 if title else 4
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, math.ceil(len(tiles) / columns))
    canvas = Image.new("RGB", (columns * (thumb + 8) + 8, head + rows * (thumb + text_h + 8)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 5), title[:120], fill="black", font=font)
    for i, tile in enumerate(tiles):
        x0 = 8 + (i % columns) * (thumb + 8)
        y0 = head + (i // columns) * (thumb + text_h + 8)
        w, h = _fit(int(tile.image.shape[-1]), int(tile.image.shape[-2]), thumb)
        canvas.paste(_pil(tile.image).resize((w, h), Image.Resampling.BILINEAR), (x0, y0))
        if tile.box is not None:
            bx0, by0, bx1, by1 = tile.box.pixels(w, h)
            draw.rectangle([x0 + bx0, y0 + by0, x0 + bx1, y0 + by1], outline=_RED, width=2)
        for j, text in enumerate(tile.lines[:3]):
            draw.text((x0, y0 + thumb + 2 + j * 14), text[:28], fill="black" if j == 0 else (90, 90, 90),
                      font=font if j == 0 else small)
    path = Path(path)
    canvas.save(path)
    return path
