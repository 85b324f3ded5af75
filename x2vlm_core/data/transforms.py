"""Image transforms that keep boxes (cx, cy, w, h normalised) and texts consistent with the pixels.

Images are uint8 [..., 3, H, W] (a video's frames [F, 3, H, W] get one shared transform); boxes [K, 4].
Randomness comes only from a caller's seeded torch.Generator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.nn import functional as F

from x2vlm_core.contracts import Sample

__all__ = [
    "FLIP_WORDS",
    "SampleAugment",
    "crop_boxes",
    "flip_texts",
    "hflip",
    "normalise",
    "random_crop_window",
    "resize",
    "resized_crop",
]

# Direction words swapped by a horizontal flip, per language (lower case; both directions listed once).
# A language not in this table never flips (we cannot tell whether its captions mention directions).
FLIP_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("left", "right"), ("leftmost", "rightmost"), ("lefthand", "righthand")),
    "de": (
        ("links", "rechts"),
        ("linke", "rechte"),
        ("linken", "rechten"),
        ("linker", "rechter"),
        ("linkes", "rechtes"),
        ("linkem", "rechtem"),
    ),
    "fr": (("gauche", "droite"), ("gauches", "droites")),
    "es": (("izquierda", "derecha"), ("izquierdo", "derecho"), ("izquierdas", "derechas")),
    "it": (("sinistra", "destra"), ("sinistro", "destro")),
    "cs": (("vlevo", "vpravo"), ("levý", "pravý"), ("levá", "pravá"), ("levé", "pravé"), ("levou", "pravou")),
    "zh": (("左", "右"),),
    "ja": (("左", "右"),),
}
# Words that mention a side but cannot be swapped word-for-word (ambiguous or inflected beyond the
# table): a caption containing one makes the whole sample skip the flip.
_FLIP_BLOCKERS: dict[str, frozenset[str]] = {
    "fr": frozenset({"droit", "droits"}),  # "straight" or "right (side)"
}
_CJK = {"zh", "ja"}


def resize(image: Tensor, size: int) -> Tensor:
    """uint8 [..., 3, H, W] → uint8 [..., 3, size, size] (antialiased bilinear; normalised boxes are unchanged)."""
    if image.shape[-2:] == (size, size):
        return image
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    if flat.dtype == torch.uint8 and flat.device.type == "cpu":  # torch's uint8 kernel: ~2x faster, within 1 level
        out = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        out = F.interpolate(flat.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.reshape(*lead, 3, size, size)


def random_crop_window(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering scale × area with aspect ratio in `ratio`; whole image if none fits."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    return 0, 0, height, width


def crop_boxes(
    boxes: Tensor, window: tuple[int, int, int, int], height: int, width: int, min_inside: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Boxes [K, 4] of an H×W image → (boxes [K, 4] relative to the crop window, clipped; keep [K] bool).

    A box keeps when at least `min_inside` of its area lies inside the window.
    """
    top, left, h, w = window
    scale = boxes.new_tensor([width, height, width, height])
    cx, cy, bw, bh = (boxes * scale).unbind(-1)
    x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
    ix0, iy0 = x0.clamp(min=left), y0.clamp(min=top)
    ix1, iy1 = x1.clamp(max=left + w), y1.clamp(max=top + h)
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    keep = inter >= min_inside * (bw * bh).clamp(min=1e-12)
    out = torch.stack(
        [
            ((ix0 + ix1) / 2 - left) / w,
            ((iy0 + iy1) / 2 - top) / h,
            (ix1 - ix0).clamp(min=0) / w,
            (iy1 - iy0).clamp(min=0) / h,
        ],
        dim=-1,
    )
    return out, keep


def resized_crop(image: Tensor, window: tuple[int, int, int, int], size: int) -> Tensor:
    """Crop uint8 [..., 3, H, W] to window (top, left, h, w) and resize to [..., 3, size, size]."""
    top, left, h, w = window
    return resize(image[..., top : top + h, left : left + w], size)


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror uint8 [..., 3, H, W] left-right; boxes [K, 4] get cx → 1 - cx."""
    flipped = boxes.clone()
    flipped[..., 0] = 1.0 - boxes[..., 0]
    return image.flip(-1), flipped


def _flip_pattern(language: str) -> tuple[re.Pattern[str], dict[str, str]] | None:
    pairs = FLIP_WORDS.get(language)
    if pairs is None:
        return None
    swap = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    words = sorted(swap, key=len, reverse=True)
    alternatives = "|".join(map(re.escape, words))
    # CJK has no spaces: swap the characters wherever they are; otherwise whole words only
    pattern = f"({alternatives})" if language in _CJK else rf"\b({alternatives})\b"
    return re.compile(pattern, re.IGNORECASE), swap


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def flip_texts(texts: tuple[str, ...], language: str) -> tuple[str, ...] | None:
    """Swap left/right words in every text for a mirrored image; None when the language can't be flipped
    safely (no word table, or a caption contains an ambiguous direction word)."""
    compiled = _flip_pattern(language)
    if compiled is None:
        return None
    pattern, swap = compiled
    blockers = _FLIP_BLOCKERS.get(language, frozenset())
    if blockers and any(w in blockers for t in texts for w in re.findall(r"\w+", t.lower())):
        return None
    return tuple(pattern.sub(lambda m: _match_case(swap[m.group(0).lower()], m.group(0)), t) for t in texts)


def normalise(image: Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Tensor:
    """uint8 [..., 3, H, W] → float [..., 3, H, W]: (x / 255 - mean) / std per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    # x / (255 s) - m / s, in place on a fresh float copy (never on the caller's tensor)
    return image.to(torch.float32, copy=True).mul_(1.0 / (255.0 * s)).sub_(m / s)


@dataclass(frozen=True)
class SampleAugment:
    """Random resized crop + horizontal flip of a Sample, keeping concepts' boxes and all texts right.

    Output images/frames are size × size uint8. Concepts less than half inside the crop are dropped.
    """

    size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        pixels = sample.image if sample.image is not None else sample.frames
        if pixels is None:
            raise ValueError(f"sample {sample.key!r} of {sample.source!r} has neither image nor frames")
        height, width = pixels.shape[-2:]
        window = random_crop_window(height, width, self.scale, self.ratio, generator)
        pixels = resized_crop(pixels, window, self.size)
        boxes = torch.tensor([c.box for c in sample.concepts], dtype=torch.float32).reshape(-1, 4)
        boxes, keep = crop_boxes(boxes, window, height, width)
        kept = keep.tolist()
        concepts = [c for c, k in zip(sample.concepts, kept, strict=True) if k]
        boxes = boxes[keep]
        captions = sample.captions
        if float(torch.rand(1, generator=generator)) < self.flip_prob:
            texts = flip_texts(captions + tuple(c.text for c in concepts), sample.language)
            if texts is not None:  # mirror only when every text can follow
                pixels, boxes = hflip(pixels, boxes)
                captions, concept_texts = texts[: len(captions)], texts[len(captions) :]
                concepts = [replace(c, text=t) for c, t in zip(concepts, concept_texts, strict=True)]
        new_concepts = tuple(
            replace(c, box=(b[0], b[1], b[2], b[3])) for c, b in zip(concepts, boxes.tolist(), strict=True)
        )
        if sample.image is not None:
            return replace(sample, image=pixels, captions=captions, concepts=new_concepts)
        return replace(sample, frames=pixels, captions=captions, concepts=new_concepts)
