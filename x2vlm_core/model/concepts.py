"""Multi-grained visual concepts from one vision pass: box → patch mask → concept tokens.

X²-VLM (Zeng et al., TPAMI 2023) encodes each image once; a concept (object, region, whole image)
is the image's tokens with its attention mask restricted to the patches its box overlaps, and its
[CLS] is the mean of those patches. Everything here is vectorised over boxes (no Python loops, no
host-device syncs), so it runs inside the training step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["concept_tokens", "patch_mask"]

# Box edges within this fraction of a patch of a grid line count as on the line: boxes converted
# from pixels or between formats land a few ulps off borders, which must not grab an extra column.
_BORDER_TOLERANCE = 1e-4


def _cells(lo: Tensor, hi: Tensor, centre: Tensor, n: int) -> Tensor:
    """Which of n grid cells [K, n] (bool) the interval [lo, hi] (in [0, 1] units) overlaps."""
    first = torch.floor(lo * n + _BORDER_TOLERANCE).clamp(0, n - 1)
    last = (torch.ceil(hi * n - _BORDER_TOLERANCE) - 1).clamp(0, n - 1)
    # An interval thinner than the tolerance (or outside the image) selects the cell holding its centre.
    empty = last < first
    middle = torch.floor(centre * n).clamp(0, n - 1)
    first = torch.where(empty, middle, first)
    last = torch.where(empty, middle, last)
    cells = torch.arange(n, device=lo.device, dtype=lo.dtype)
    return (cells >= first[:, None]) & (cells <= last[:, None])


def patch_mask(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patches each box overlaps: boxes [M, 4] (cx, cy, w, h) in [0, 1], grid (rows, cols) → bool [M, rows*cols].

    Columns floor(x0·cols) .. ceil(x1·cols) - 1 (rows likewise), clamped to the grid; a box thinner
    than a patch border's tolerance selects the cell containing its centre, so every box selects at
    least one patch. Patch order is row-major (row * cols + col), as ViT tokens are.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"patch_mask: boxes must be [M, 4] (cx, cy, w, h), got {tuple(boxes.shape)}")
    rows, cols = int(grid[0]), int(grid[1])
    if rows <= 0 or cols <= 0:
        raise ValueError(f"patch_mask: grid must be two positive ints (rows, cols), got {grid}")
    # At least float32: half-precision boxes would be off by more than the border tolerance.
    cx, cy, w, h = boxes.to(torch.promote_types(boxes.dtype, torch.float32)).unbind(-1)
    col = _cells(cx - 0.5 * w, cx + 0.5 * w, cx, cols)  # [M, cols]
    row = _cells(cy - 0.5 * h, cy + 0.5 * h, cy, rows)  # [M, rows]
    return (row[:, :, None] & col[:, None, :]).reshape(boxes.shape[0], rows * cols)


def concept_tokens(tokens: Tensor, index: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Concept tokens from image tokens: tokens [B, 1+N, D], index [M] long, mask bool [M, N] →
    (tokens [M, 1+N, D] with token 0 = mean of the selected patches, attn_mask bool [M, 1+N] = [True, mask]).

    Patches keep their positions (unselected ones are hidden by the mask, not removed), so a
    whole-image box gives exactly the image's tokens.
    """
    if tokens.dim() != 3:
        raise ValueError(f"concept_tokens: tokens must be [B, 1+N, D], got {tuple(tokens.shape)}")
    n = tokens.shape[1] - 1
    if mask.dim() != 2 or mask.shape[1] != n or index.shape != mask.shape[:1]:
        raise ValueError(
            f"concept_tokens: expected index [M] and mask [M, {n}] for tokens {tuple(tokens.shape)}, "
            f"got index {tuple(index.shape)} and mask {tuple(mask.shape)}"
        )
    patches = tokens.index_select(0, index)[:, 1:]  # [M, N, D]
    # Mean of the selected patches as a masked matmul; clamp guards an (invalid) all-False mask.
    weights = mask.to(patches.dtype) / mask.sum(-1, keepdim=True).clamp_min(1).to(patches.dtype)
    cls = torch.einsum("mn,mnd->md", weights, patches)
    out = torch.cat((cls[:, None], patches), dim=1)
    attn = torch.cat((mask.new_ones((mask.shape[0], 1)), mask), dim=1)
    return out, attn
