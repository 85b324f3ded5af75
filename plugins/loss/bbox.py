"""Box prediction loss: locate a concept's text in the full image.

X²-VLM (Zeng et al., TPAMI 2023): fusion(full image tokens, concept text) → [CLS] → bbox head
(sigmoid, (cx, cy, w, h)) → L1 + (1 − GIoU), each averaged over the number of boxes. Whole-image
pairs are excluded by default (their box is always (0.5, 0.5, 1, 1)).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from x2vlm_core.plugin_api import (
    Batch,
    FusionPairs,
    LossModule,
    LossOutput,
    LossPlan,
    PluginSpec,
    StepInputs,
    box_iou_aligned,
    cxcywh_to_xyxy,
    generalized_box_iou_aligned,
    hookimpl,
    shared_denominator,
)

__all__ = ["BboxLoss", "BboxLossConfig"]


class BboxLossConfig(BaseModel):
    """Which pairs predict their box."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include_whole_image: bool = Field(
        False, description="also predict (0.5, 0.5, 1, 1) for whole-image pairs (rows [0, n_image + n_box))"
    )


class BboxLoss(LossModule):
    """Box regression on K pairs: text [K, L, D] fused with full image tokens → boxes [K, 4] → L1 + (1 − GIoU)."""

    def __init__(self, config: BboxLossConfig) -> None:
        super().__init__()
        self.config = config

    def _rows(self, batch: Batch) -> slice:
        # host ints: the batch's group counts are host ints
        return slice(0, batch.n_image + batch.n_box) if self.config.include_whole_image else batch.box_rows

    def pairs(self, inputs: StepInputs, plan: LossPlan) -> FusionPairs:
        batch = inputs.batch
        rows = self._rows(batch)
        text = torch.arange(rows.start, rows.stop, device=batch.source.device)
        # Each concept's text with the WHOLE image its box lies in (segments after the M concepts).
        return FusionPairs(text=text, segment=inputs.whole_visual_offset + batch.source[rows], head="bbox")

    def forward(self, inputs: StepInputs, plan: LossPlan, fused: Tensor | None) -> LossOutput:
        assert fused is not None  # pairs() always asks (possibly for 0 pairs)
        rows = self._rows(inputs.batch)
        pred = fused[:, 0].float()  # [K, 4] (cx, cy, w, h)
        target = inputs.batch.boxes[rows].float()
        # An empty slice sums to an exact 0 that still reaches the head, so every rank sees the same graph.
        count = shared_denominator(pred.new_tensor(float(rows.stop - rows.start)))
        l1 = (pred - target).abs().sum(-1).sum() / count
        pred_xyxy, target_xyxy = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)
        giou = (1.0 - generalized_box_iou_aligned(pred_xyxy, target_xyxy)).sum() / count
        iou = box_iou_aligned(pred_xyxy.detach(), target_xyxy).sum() / max(1, rows.stop - rows.start)
        return LossOutput(loss=l1 + giou, logs={"l1": l1.detach(), "giou": giou.detach(), "iou": iou})


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="loss", name="bbox", config=BboxLossConfig, factory=BboxLoss)]
