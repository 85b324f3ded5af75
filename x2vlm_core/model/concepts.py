"""Multi-grained visual concepts from one vision pass: box → patch mask → concept tokens.

X²-VLM (Zeng et al., TPAMI 2023) encodes each image once; a concept (object, region, whole image)
is the image's tokens with its attention mask restricted to the patches its box overlaps, and its
[CLS] is the mean of those patches. Everything here is vectorised over boxes (no Python loops, no
host-device syncs), so it runs inside the training step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from x2vlm_core.contracts.encoders import VisualMemory

__all__ = ["concept_memory", "concept_tokens", "patch_mask"]

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


def concept_memory(bank: Tensor, source: Tensor, boxes: Tensor, grid: tuple[int, int]) -> VisualMemory:
    """The visual memory of a step: bank [B, 1+N, D], boxes [M, 4] (cx, cy, w, h) on bank rows source [M].

    Segments [0, M): the concepts (mask = the patches their box overlaps, [CLS] = the mean of those
    patches); segments [M, M + B): every bank row whole ([CLS] = its token 0, every patch). The patch
    tokens are stored once per bank row, not once per concept.
    """
    if bank.dim() != 3:
        raise ValueError(f"concept_memory: bank must be [B, 1+N, D], got {tuple(bank.shape)}")
    patches = bank[:, 1:]
    mask = patch_mask(boxes, grid)
    if mask.shape[1] != patches.shape[1] or source.shape != mask.shape[:1]:
        raise ValueError(
            f"concept_memory: grid {grid} and boxes {tuple(boxes.shape)} do not fit bank {tuple(bank.shape)} "
            f"with source {tuple(source.shape)}"
        )
    # Mean of the selected patches as a masked matmul; clamp guards an (invalid) all-False mask.
    weights = mask.to(patches.dtype) / mask.sum(-1, keepdim=True).clamp_min(1).to(patches.dtype)
    cls = torch.einsum("mn,mnd->md", weights, patches.index_select(0, source))
    rows = torch.arange(bank.shape[0], device=bank.device)
    whole = torch.ones(bank.shape[0], patches.shape[1], dtype=torch.bool, device=bank.device)
    return VisualMemory(
        patches=patches,
        cls=torch.cat((cls, bank[:, 0])),
        image=torch.cat((source, rows)),
        mask=torch.cat((mask, whole)),
    )
