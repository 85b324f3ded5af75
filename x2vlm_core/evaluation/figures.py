"""PNG figures for a run directory, drawn with Pillow (no plotting stack needed).

plot_curves: training curves; plot_grounding: images with true and predicted boxes; plot_captions: images
(or clip frames side by side) with their generated caption (blue) and reference captions (black) below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["plot_captions", "plot_curves", "plot_grounding"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127)]


def plot_curves(series: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """One small panel per series (x = step, y = value), in a grid; written as PNG."""
    names = [n for n, pts in series.items() if pts]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    pw, ph, pad = 320, 200, 36
    img = Image.new("RGB", (cols * pw, rows * ph + 24), "white")
    draw = ImageDraw.Draw(img)
    draw.text((6, 4), title, fill="black")
    for i, name in enumerate(names):
        pts = list(series[name])
        x0, y0 = (i % cols) * pw, 24 + (i // cols) * ph
        box = (x0 + pad, y0 + 16, x0 + pw - 10, y0 + ph - 22)
        draw.rectangle(box, outline=(180, 180, 180))
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts if math.isfinite(p[1])]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

        line = [_to_px(x, y, box, (xlo, xhi), (lo, hi)) for x, y in pts if math.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=_COLOURS[i % len(_COLOURS)], width=2)
        elif line:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=_COLOURS[0])
        draw.text((x0 + pad, y0 + 2), name, fill="black")
        draw.text((x0 + 2, box[1]), f"{hi:.3g}", fill=(90, 90, 90))
        draw.text((x0 + 2, box[3] - 10), f"{lo:.3g}", fill=(90, 90, 90))
        draw.text((box[0], box[3] + 4), f"{xlo}", fill=(90, 90, 90))
        draw.text((box[2] - 30, box[3] + 4), f"{xhi}", fill=(90, 90, 90))
    path = Path(path)
    img.save(path)
    return path


def _to_px(x: float, y: float, box: tuple[int, int, int, int], xr: tuple[float, float],
           yr: tuple[float, float]) -> tuple[float, float]:
    return (box[0] + (x - xr[0]) / (xr[1] - xr[0]) * (box[2] - box[0]),
            box[3] - (y - yr[0]) / (yr[1] - yr[0]) * (box[3] - box[1]))


def plot_grounding(
    images: Tensor, texts: Sequence[str], true: Tensor, pred: Tensor, path: str | Path, columns: int = 4, scale: int = 3
) -> Path:
    """Grid of images (uint8 [K, 3, H, W]) with true (green) and predicted (red) boxes (cx, cy, w, h)."""
    k, _, h, w = images.shape
    cw, ch = w * scale, h * scale + 28
    rows = max(1, math.ceil(k / columns))
    canvas = Image.new("RGB", (columns * cw, rows * ch), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(k):
        x0, y0 = (i % columns) * cw, (i // columns) * ch
        tile = Image.fromarray(images[i].permute(1, 2, 0).to(torch.uint8).numpy()).resize((w * scale, h * scale))
        canvas.paste(tile, (x0, y0))
        for box, colour in ((true[i], (0, 200, 0)), (pred[i], (230, 0, 0))):
            cx, cy, bw, bh = (float(v) for v in box)
            draw.rectangle(
                [x0 + (cx - bw / 2) * w * scale, y0 + (cy - bh / 2) * h * scale,
                 x0 + (cx + bw / 2) * w * scale, y0 + (cy + bh / 2) * h * scale],
                outline=colour, width=2,
            )
        draw.text((x0 + 2, y0 + h * scale + 2), texts[i][:40], fill="black")
    path = Path(path)
    canvas.save(path)
    return path


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """Greedy word wrap of `text` to lines at most `width` pixels wide (a word longer than a line is cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = max(1, int(len(word) * width / draw.textlength(word, font=font)))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


def _tile(visual: Tensor, width: int) -> Image.Image:
    """uint8 [3, H, W] image, or [F, 3, H, W] clip (frames side by side), scaled to `width` pixels wide."""
    frames = visual[None] if visual.dim() == 3 else visual
    strip = torch.cat(list(frames), dim=-1)  # [3, H, F·W]
    image = Image.fromarray(strip.permute(1, 2, 0).to(torch.uint8).cpu().numpy())
    return image.resize((width, max(1, round(image.height * width / image.width))))


def plot_captions(
    visuals: Tensor, generated: Sequence[str], references: Sequence[Sequence[str]], path: str | Path,
    columns: int = 4, width: int = 256, max_references: int = 3,
) -> Path:
    """Grid of images uint8 [K, 3, H, W] (or clips [K, F, 3, H, W]), each with its generated caption (blue)
    and up to `max_references` reference captions (black, "+n more" when there are more); written as PNG."""
    k = visuals.shape[0]
    if len(generated) != k or len(references) != k:
        raise ValueError(f"plot_captions: {k} visuals, {len(generated)} captions, {len(references)} reference lists")
    font = ImageFont.load_default()
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = 12
    tiles, texts = [], []
    for i in range(k):
        tiles.append(_tile(visuals[i], width))
        lines = [(line, (20, 60, 200)) for line in _wrap(scratch, f"> {generated[i]}", width - 4, font)]
        refs = list(references[i])
        for ref in refs[:max_references]:
            lines += [(line, (0, 0, 0)) for line in _wrap(scratch, f"- {ref}", width - 4, font)]
        if len(refs) > max_references:
            lines.append((f"  (+{len(refs) - max_references} more)", (110, 110, 110)))
        texts.append(lines)
    rows = max(1, math.ceil(k / columns))
    cell = max((t.height for t in tiles), default=1) + 6 + line_height * max((len(t) for t in texts), default=1)
    canvas = Image.new("RGB", (min(columns, max(k, 1)) * width, rows * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(k):
        x0, y0 = (i % columns) * width, (i // columns) * cell
        canvas.paste(tiles[i], (x0, y0))
        y = y0 + tiles[i].height + 3
        for line, colour in texts[i]:
            draw.text((x0 + 2, y), line, fill=colour, font=font)
            y += line_height
    path = Path(path)
    canvas.save(path)
    return path
