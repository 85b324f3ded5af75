"""Box prediction loss: locate a concept's text in the full image.

X²-VLM (Zeng et al., TPAMI 2023): fusion(full image tokens, concept text) → [CLS] → bbox head
(sigmoid, (cx, cy, w, h)) → L1 + (1 − GIoU), each averaged over the number of boxes. Whole-image
pairs are excluded by default (their box is always (0.5, 0.5, 1, 1)).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from x2vlm_core.plugin_api import (
    LossContext,
    LossModule,
    LossOutput,
    PluginSpec,
    StepState,
    box_iou_aligned,
    cxcywh_to_xyxy,
    generalized_box_iou_aligned,
    hookimpl,
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

    def forward(self, model: LossContext, state: StepState) -> LossOutput:
        batch = state.batch
        start = 0 if self.config.include_whole_image else batch.n_image
        stop = batch.n_image + batch.n_box
        count = stop - start  # host int: the batch's group counts are host ints
        if count == 0:
            # Empty slices sum to an exact 0 that still reaches the head and the text tokens, so
            # backward and DDP see the same graph on every rank and nothing becomes NaN.
            zero = state.text[start:stop].float().sum() + sum(
                p.flatten()[:0].float().sum() for p in model.bbox_head.parameters()
            )
            return LossOutput(
                loss=zero, logs={"l1": zero.detach(), "giou": zero.detach(), "iou": zero.detach()}
            )
        rows = slice(start, stop)
        vision = state.bank.index_select(0, batch.source[rows])  # [K, 1+N, D]
        vision_mask = torch.ones(vision.shape[:2], dtype=torch.bool, device=vision.device)
        fused = model.fuse(state.text[rows], batch.text.mask[rows], vision, vision_mask)
        pred = model.bbox_head(fused[:, 0]).float()  # [K, 4] (cx, cy, w, h)
        target = batch.boxes[rows].float()
        l1 = (pred - target).abs().sum(-1).sum() / count
        pred_xyxy, target_xyxy = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)
        giou = (1.0 - generalized_box_iou_aligned(pred_xyxy, target_xyxy)).sum() / count
        iou = box_iou_aligned(pred_xyxy.detach(), target_xyxy).mean()
        return LossOutput(loss=l1 + giou, logs={"l1": l1.detach(), "giou": giou.detach(), "iou": iou})


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="loss", name="bbox", config=BboxLossConfig, factory=BboxLoss)]
