"""Grounding: the box head on the fused [CLS] of (whole image, phrase); accuracy at IoU ≥ 0.5 and mean IoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from x2vlm_core.contracts import VisualMemory, VLModel
from x2vlm_core.evaluation.retrieval import encode_texts
from x2vlm_core.evaluation.scores import GroundingScores, grounding_scores

__all__ = ["evaluate_grounding", "predict_boxes"]


@torch.no_grad()
def predict_boxes(
    model: VLModel, image_tokens: Tensor, image_index: Tensor, texts: Sequence[str], batch_size: int
) -> Tensor:
    """Each text's box [K, 4] (cx, cy, w, h) on its image: image_tokens [B, 1+N, Dv], image_index [K]."""
    text, text_mask, _ = encode_texts(model, texts, batch_size)
    memory = VisualMemory.whole(image_tokens)
    preds = []
    for i in range(0, len(texts), batch_size):
        idx = image_index[i : i + batch_size].to(image_tokens.device)
        cls = model.fuse(text[i : i + batch_size], text_mask[i : i + batch_size], memory, idx,
                         positions=torch.zeros_like(idx)[:, None])[:, 0]  # only [CLS] leaves the last layer
        preds.append(model.heads.bbox(cls).float())
    return torch.cat(preds) if preds else image_tokens.new_zeros((0, 4))


def evaluate_grounding(
    model: VLModel, image_tokens: Tensor, image_index: Tensor, texts: Sequence[str], boxes: Tensor, batch_size: int
) -> tuple[GroundingScores, Tensor]:
    """Scores of the predicted boxes against `boxes` [K, 4] (cx, cy, w, h), and the predictions [K, 4] (CPU)."""
    pred = predict_boxes(model, image_tokens, image_index, texts, batch_size)
    return grounding_scores(pred, boxes.to(pred.device)), pred.cpu()
