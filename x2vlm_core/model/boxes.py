"""Vectorised box utilities: format conversion, clamping, pairwise-aligned IoU and GIoU.

Boxes are [K, 4] (any leading shape works): (cx, cy, w, h) or (x0, y0, x1, y1), normalised to [0, 1].
GIoU: Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
Degenerate boxes (zero area, or x1 < x0) never produce NaN or inf: areas are clamped at zero and every
division is guarded, so IoU of two empty boxes is 0 and GIoU lies in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou_aligned",
    "clamp_boxes",
    "cxcywh_to_xyxy",
    "generalized_box_iou_aligned",
    "xyxy_to_cxcywh",
]

# Guards the divisions; far below any real box area in normalised units (one pixel of 4096² ≈ 6e-8).
_EPS = 1e-12


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) [..., 4] → (x0, y0, x1, y1) [..., 4]."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x0, y0, x1, y1) [..., 4] → (cx, cy, w, h) [..., 4]."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack((0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0), dim=-1)


def clamp_boxes(boxes: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Clamp (x0, y0, x1, y1) [..., 4] into [low, high] and make x1 >= x0, y1 >= y0."""
    x0, y0, x1, y1 = boxes.clamp(low, high).unbind(-1)
    return torch.stack((x0, y0, torch.maximum(x0, x1), torch.maximum(y0, y1)), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of (x0, y0, x1, y1) [..., 4] → [...]; inverted boxes count as empty."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)


def _aligned_parts(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float32 (at least) copies of a, b plus intersection and union areas [...] of aligned pairs."""
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(
            f"aligned box ops need two [..., 4] tensors of the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    # Half precision loses the small differences IoU is made of; compute in float32 or better.
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    return a, b, inter, union


def box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """IoU of row-aligned (x0, y0, x1, y1) boxes a[k], b[k]: [..., 4] × [..., 4] → [...] (float32+)."""
    _, _, inter, union = _aligned_parts(a, b)
    return inter / union.clamp_min(_EPS)


def generalized_box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of row-aligned (x0, y0, x1, y1) boxes: [..., 4] × [..., 4] → [...] in [-1, 1] (float32+)."""
    a, b, inter, union = _aligned_parts(a, b)
    iou = inter / union.clamp_min(_EPS)
    lo = torch.minimum(a[..., :2], b[..., :2])
    hi = torch.maximum(a[..., 2:], b[..., 2:])
    enclosing = (hi - lo).clamp_min(0).prod(-1)
    # enclosing >= union for valid boxes; the max keeps the penalty in [0, 1] for inverted ones too.
    enclosing = torch.maximum(enclosing, union)
    return iou - (enclosing - union) / enclosing.clamp_min(_EPS)
