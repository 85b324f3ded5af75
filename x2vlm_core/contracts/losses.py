"""Loss contracts: what a pretraining objective receives and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn

from x2vlm_core.contracts.data import Batch
from x2vlm_core.contracts.text import Tokenizer

__all__ = ["LossContext", "LossModule", "LossOutput", "StepState"]


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss and detached scalars to log (names without the loss's prefix)."""

    loss: Tensor
    logs: dict[str, Tensor]


@dataclass(frozen=True)
class StepState:
    """What one forward pass computed once, shared by every loss.

    visual [M, 1+N, Dv] concept tokens with visual_mask [M, 1+N] (bool, True = attend);
    bank [Bi+Bv, 1+N, Dv] full image/video tokens; text [M, L, Df] text tokens at fusion width;
    image_feat, text_feat [M, E] L2-normalised; temperature: scalar tensor (clamped).
    """

    batch: Batch
    visual: Tensor
    visual_mask: Tensor
    bank: Tensor
    text: Tensor
    image_feat: Tensor
    text_feat: Tensor
    temperature: Tensor


class LossContext(Protocol):
    """The parts of the model a loss may call (X2VLM implements it)."""

    itm_head: nn.Module
    bbox_head: nn.Module

    @property
    def tokenizer(self) -> Tokenizer: ...

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """[B, L] → text tokens at fusion width [B, L, Df]."""
        ...

    def fuse(self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor) -> Tensor:
        """→ fusion tokens [B, L, Df]."""
        ...

    def mlm_logits(self, fused: Tensor) -> Tensor:
        """fusion tokens [..., Df] → vocabulary logits [..., V]."""
        ...

    def gather(self, x: Tensor) -> Tensor:
        """All-gather across ranks along dim 0 (identity on one process); gradient flows to the local slice."""
        ...

    def rank_offset(self, local: int) -> int:
        """Index of this rank's first row in gathered tensors."""
        ...


class LossModule(nn.Module):
    """A pretraining objective: (model, step state) → LossOutput. Weight is applied by the model."""

    def forward(self, model: LossContext, state: StepState) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError
