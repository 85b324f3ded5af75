"""Packed text tokens: per-token work on the real tokens of a padded batch only.

Texts are padded to the longest of their batch (the demo's are ~47 % real tokens), yet only attention mixes
positions: every linear, norm and FFN gives the same numbers on the real tokens [T, D] alone, and attention
scatters them into padded [B, L, D] views. Exact: the same sums per token.

Finding the real tokens reads the mask on the host, a device sync; mode "cpu" (the default of the encoders
that pack) packs CPU tensors only, where that read costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

__all__ = ["PACK_HELP", "PackMode", "TokenPacking"]

PackMode = Literal["cpu", "always", "never"]
PACK_HELP = (
    "run linears, norms and FFNs on the real (unpadded) text tokens only, attention on padded views (exact). "
    "Finding the real tokens reads the mask on the host: 'cpu' packs only CPU tensors, where that costs no "
    "device sync"
)


@dataclass(frozen=True)
class TokenPacking:
    """The real tokens of a padded text batch [B, L]: index [T] of their flat positions b·L + l."""

    index: Tensor
    rows: int
    length: int

    @staticmethod
    def allowed(mode: PackMode, tensor: Tensor) -> bool:
        """Whether `mode` lets a layout be planned from `tensor`'s values (a host read) on its device."""
        return mode == "always" or (mode == "cpu" and tensor.device.type == "cpu")

    @staticmethod
    def plan(mask: Tensor, mode: PackMode) -> TokenPacking | None:
        """The packing of key-padding mask [B, L] under `mode`; None where it does not apply or every token is real."""
        if not TokenPacking.allowed(mode, mask) or bool(mask.all()):
            return None
        return TokenPacking(mask.flatten().nonzero().squeeze(1), int(mask.shape[0]), int(mask.shape[1]))

    def pack(self, x: Tensor) -> Tensor:
        """[B, L, D] → [T, D]."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """[T, D] → [B, L, D], zeros at padded positions."""
        out = x.new_zeros(self.rows * self.length, x.shape[-1]).index_copy(0, self.index, x)
        return out.view(self.rows, self.length, -1)
