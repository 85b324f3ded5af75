"""Loss contracts: what an objective asks of a step and what it receives, as plain tensors.

A step (x2vlm_core/model/step.py) runs every loss in three phases, so that all of them share ONE
text-encoder call and ONE fusion call:

1. `prepare(batch, tokenizer)` → a LossPlan: extra texts to encode with the batch's own (e.g. masked
   copies for MLM) and whatever the loss needs to remember (e.g. the MLM labels).
2. `pairs(inputs, plan)` → FusionPairs or None: which (text row, visual segment) pairs to fuse, which
   fused positions to read and which head to apply to them. Hard negatives are chosen here, from the
   contrastive features in `inputs`.
3. `forward(inputs, plan, fused)` → LossOutput: the loss from tensors (fused = the head's output at the
   requested positions, or the fused tokens when no head was asked for).

Shapes: M pairs of the batch, E embedding width, P fused pairs, R read positions, D fusion width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from x2vlm_core.contracts.data import Batch
from x2vlm_core.contracts.text import TokenizedText, Tokenizer

__all__ = ["FusionPairs", "Head", "LossModule", "LossOutput", "LossPlan", "StepInputs"]

# Heads the model applies to fused positions for a loss: itm → [P, R, 2], bbox → [P, R, 4] (cx, cy, w, h)
# in [0, 1], mlm → [P, R, V]; None → the fused tokens [P, R, D].
Head = Literal["itm", "bbox", "mlm"]


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss and detached scalars to log (names without the loss's prefix)."""

    loss: Tensor
    logs: dict[str, Tensor]


@dataclass(frozen=True)
class LossPlan:
    """What a loss asked for before encoding. `texts`: extra texts [T, L] for the step's text-encoder call
    (same L as the batch's texts); the step fills `first_row` with the row of texts[0] in its text table
    (the batch's M texts come first). Subclass it to carry a loss's own state (e.g. MLM labels)."""

    texts: TokenizedText | None = None
    first_row: int = -1


@dataclass(frozen=True)
class StepInputs:
    """What one step computed once, shared by every loss.

    batch: the Batch; image_feat, text_feat [M, E]: L2-normalised contrastive features of the batch's pairs
    (concept i ↔ text i); temperature: scalar (clamped); tokenizer: special ids and vocabulary size.
    The step's visual segments (what FusionPairs.segment indexes): [0, M) the batch's concepts (row i =
    pair i's visual concept), then [M, M + Bi + Bv) the batch's whole images and whole videos.
    """

    batch: Batch
    image_feat: Tensor
    text_feat: Tensor
    temperature: Tensor
    tokenizer: Tokenizer

    @property
    def whole_visual_offset(self) -> int:
        """Segment row of the batch's first whole image (whole videos follow the images)."""
        return self.batch.size


@dataclass(frozen=True)
class FusionPairs:
    """P pairs a loss asks the step to fuse: text [P] long (rows of the step's text table), segment [P] long
    (rows of the step's visual segments, see StepInputs), positions [P, R] long (fused text positions to read;
    None = [CLS] only, R = 1) and the head applied there."""

    text: Tensor
    segment: Tensor
    positions: Tensor | None = None
    head: Head | None = None


class LossModule(nn.Module):
    """A pretraining/fine-tuning objective. The weight is applied by the step (config `weight`).

    Normalise by counts over ALL ranks (x2vlm_core.plugin_api.shared_denominator): data-parallel
    training then equals one process on the global batch, also when ranks hold different pair counts.
    """

    def prepare(self, batch: Batch, tokenizer: Tokenizer) -> LossPlan:
        """Extra texts to encode and state to keep (default: nothing)."""
        return LossPlan()

    def pairs(self, inputs: StepInputs, plan: LossPlan) -> FusionPairs | None:
        """Pairs to fuse (default: none, for losses on the contrastive features alone)."""
        return None

    def forward(
        self, inputs: StepInputs, plan: LossPlan, fused: Tensor | None
    ) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError
