"""Cross-attention with the queries grouped by the image they read: keys/values copied per group, not per pair.

A fusion pair attends to one segment s of the visual memory: keys cat(cls[s], patches[image[s]]). Copying
those keys/values per pair ([P, 1+N, D], and their gradients in the backward) cost the demo's CPU step about
as much as the cross-attention itself. Here the query tokens of every pair that reads image i are stacked
into groups of G rows (an image with more tokens gets several groups), and each group attends to its image's
keys once: [K segment [CLS] slots; N patches], each token allowed only its own segment's slot and patches.
Exact: the same softmax over the same allowed keys. Planning reads token counts on the host (three device syncs), so it
is done once per fusion call (twice with read positions) and, like packing, by default for CPU tensors only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x2vlm_core.plugin_api import VisualMemory, attendable, split_heads

__all__ = ["CrossGroups"]


def _rank_within(keys: Tensor, buckets: int) -> tuple[Tensor, Tensor]:
    """Rank of each element among the elements with the same key (in order), and the count per key [buckets]."""
    counts = torch.bincount(keys, minlength=buckets)
    order = torch.argsort(keys, stable=True)
    start = torch.cumsum(counts, 0) - counts
    ranked = torch.arange(keys.shape[0], device=keys.device) - start.index_select(0, keys.index_select(0, order))
    return torch.empty_like(keys).index_copy_(0, order, ranked), counts


def _group_size(counts: list[int]) -> int:
    """Rows per group G among G = ceil(max / j), j = 1..8: the least padded rows sum(ceil(c / G))·G plus 4 per
    group (each group copies its image's keys/values, and their gradient, about the cost of 4 query rows)."""
    most = max(counts)
    candidates = {-(-most // j) for j in range(1, 9)}

    def cost(g: int) -> int:
        groups = sum(-(-c // g) for c in counts)
        return groups * g + 4 * groups

    return min(candidates, key=lambda g: (cost(g), -g))


@dataclass(frozen=True)
class CrossGroups:
    """The grouped layout of T query tokens: slot [T] (row in [V·G]), group_image [V] (bank row per group),
    size G, mask [V, 1, G, K+N] (allowed keys), cls_slot [S] (row of each segment's [CLS] in [B·K]), slots K;
    one_per_image: group v reads bank row v (no copy of the keys per group)."""

    slot: Tensor
    group_image: Tensor
    size: int
    mask: Tensor
    cls_slot: Tensor
    slots: int
    one_per_image: bool

    @staticmethod
    def plan(memory: VisualMemory, token_segment: Tensor) -> CrossGroups | None:
        """The groups of query tokens reading segments token_segment [T]; None when there is no token."""
        if token_segment.numel() == 0:
            return None
        rows = int(memory.patches.shape[0])
        segment_rank, per_image = _rank_within(memory.image, rows)
        slots = int(per_image.max())
        image = memory.image.index_select(0, token_segment)
        rank, counts = _rank_within(image, rows)
        per_row = counts.tolist()
        size = _group_size([c for c in per_row if c])
        groups = (counts + size - 1) // size
        first = torch.cumsum(groups, 0) - groups
        slot = (first.index_select(0, image) + rank // size) * size + rank % size
        total = int(groups.sum())
        own = segment_rank.index_select(0, token_segment)
        allowed = torch.cat((torch.arange(slots, device=own.device)[None] == own[:, None],
                             memory.mask.index_select(0, token_segment)), dim=1)  # [T, K+N]
        # group rows that no token fills allow no key; attendable() opens them: finite outputs, never read
        mask = attendable(allowed.new_zeros(total * size, allowed.shape[1]).index_copy_(0, slot, allowed))
        return CrossGroups(
            slot=slot,
            group_image=torch.repeat_interleave(torch.arange(rows, device=image.device), groups, output_size=total),
            size=size, mask=mask.view(total, 1, size, -1), cls_slot=memory.image * slots + segment_rank,
            slots=slots, one_per_image=all(0 < c <= size for c in per_row),
        )

    def keys(self, linear: nn.Linear, memory: VisualMemory) -> Tensor:
        """One projection per image: [K segment [CLS] slots; N patches] → per group [V, K+N, D]."""
        rows = memory.patches.shape[0]
        cls = linear(memory.cls)
        slotted = cls.new_zeros(rows * self.slots, cls.shape[-1]).index_copy(0, self.cls_slot, cls)
        per_image = torch.cat((slotted.view(rows, self.slots, -1), linear(memory.patches)), dim=1)
        if self.one_per_image:
            return per_image
        return per_image.index_select(0, self.group_image)

    def attend(self, queries: Tensor, keys: Tensor, values: Tensor, heads: int, dropout: float) -> Tensor:
        """Projected query tokens [T, D] over grouped keys/values [V, K+N, D] → context [T, D]."""
        groups = self.group_image.shape[0]
        q = queries.new_zeros(groups * self.size, queries.shape[-1]).index_copy(0, self.slot, queries)
        context = F.scaled_dot_product_attention(
            split_heads(q.view(groups, self.size, -1), heads), split_heads(keys, heads), split_heads(values, heads),
            attn_mask=self.mask, dropout_p=dropout,
        )
        return context.transpose(1, 2).reshape(groups * self.size, -1).index_select(0, self.slot)
