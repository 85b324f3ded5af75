"""Grounding: the bbox head on the fused [CLS] of (full image, phrase); accuracy at IoU ≥ 0.5 and mean IoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from x2vlm_core.contracts import VisualMemory
from x2vlm_core.evaluation.retrieval import encode_texts
from x2vlm_core.model import X2VLM
from x2vlm_core.model.boxes import box_iou_aligned, cxcywh_to_xyxy

__all__ = ["GroundingMetrics", "evaluate_grounding"]


@dataclass(frozen=True)
class GroundingMetrics:
    """accuracy = fraction of predicted boxes with IoU ≥ 0.5; boxes [K, 4] predicted (cx, cy, w, h)."""

    accuracy: float
    mean_iou: float
    boxes: Tensor

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}acc@0.5": self.accuracy, f"{prefix}mean_iou": self.mean_iou}


@torch.no_grad()
def evaluate_grounding(
    model: X2VLM, image_tokens: Tensor, image_index: Tensor, texts: Sequence[str], boxes: Tensor, batch_size: int
) -> GroundingMetrics:
    """Predict each text's box on its full image (bbox head on the fusion [CLS]); boxes [K, 4] (cx, cy, w, h)."""
    model.eval()
    device = image_tokens.device
    text, text_mask, _ = encode_texts(model, texts, batch_size)
    preds = []
    memory = VisualMemory.whole(image_tokens)
    for i in range(0, len(texts), batch_size):
        idx = image_index[i : i + batch_size].to(device)
        cls = model.fuse(text[i : i + batch_size], text_mask[i : i + batch_size], memory, idx,
                         positions=torch.zeros_like(idx)[:, None])[:, 0]
        preds.append(model.heads.bbox(cls).float())
    pred = torch.cat(preds) if preds else boxes.new_zeros((0, 4))
    iou = box_iou_aligned(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(boxes.to(device).float()))
    return GroundingMetrics(
        accuracy=float((iou >= 0.5).float().mean()) if len(texts) else 0.0,
        mean_iou=float(iou.mean()) if len(texts) else 0.0,
        boxes=pred.cpu(),
    )
