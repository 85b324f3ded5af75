"""Retrieval recall and grounding scores as pure functions of model outputs (no model, no data loading).

retrieval_recall: text→visual similarity [T, V] and each text's visual [T] → recall@k both ways.
grounding_scores: predicted and target boxes [K, 4] in normalised (cx, cy, w, h) → accuracy at an IoU
threshold, mean IoU and per-box IoU [K].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from x2vlm_core.model.boxes import box_iou_aligned, cxcywh_to_xyxy

__all__ = ["GroundingScores", "RetrievalMetrics", "grounding_scores", "recall_at", "retrieval_recall"]

_KS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@K both ways: i2t (visual → text) and t2i (text → visual), and their mean."""

    i2t: dict[int, float]
    t2i: dict[int, float]

    @property
    def mean(self) -> float:
        values = [*self.i2t.values(), *self.t2i.values()]
        return sum(values) / len(values)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}i2t_r{k}": v for k, v in self.i2t.items()}
        out.update({f"{prefix}t2i_r{k}": v for k, v in self.t2i.items()})
        out[f"{prefix}mean_recall"] = self.mean
        return out


def recall_at(scores: Tensor, positives: Tensor, ks: Sequence[int] = _KS) -> dict[int, float]:
    """scores [Q, C], positives bool [Q, C] → fraction of queries with a positive in their top-k."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hit = positives.gather(1, top)
    return {k: float(hit[:, : min(k, k_max)].any(dim=1).float().mean()) for k in ks}


def _check_retrieval_inputs(sim_t2i: Tensor, text_to_visual: Tensor, ks: Sequence[int]) -> None:
    """Raise ValueError naming the first malformed input of retrieval_recall."""
    if sim_t2i.dim() != 2 or sim_t2i.shape[0] == 0 or sim_t2i.shape[1] == 0:
        raise ValueError(f"retrieval_recall: sim_t2i must be a non-empty [T, V] matrix, got {tuple(sim_t2i.shape)}")
    n_text, n_visual = sim_t2i.shape
    if text_to_visual.shape != (n_text,):
        raise ValueError(
            f"retrieval_recall: text_to_visual must be [T] = [{n_text}] (one visual row per text), "
            f"got {tuple(text_to_visual.shape)}"
        )
    if text_to_visual.dtype.is_floating_point or text_to_visual.dtype == torch.bool:
        raise ValueError(f"retrieval_recall: text_to_visual must hold integer row indices, got {text_to_visual.dtype}")
    if int(text_to_visual.min()) < 0 or int(text_to_visual.max()) >= n_visual:
        raise ValueError(
            f"retrieval_recall: text_to_visual values must lie in [0, {n_visual}) (columns of sim_t2i), "
            f"got range [{int(text_to_visual.min())}, {int(text_to_visual.max())}]"
        )
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"retrieval_recall: ks must be positive integers, got {tuple(ks)}")


def retrieval_recall(
    sim_t2i: Tensor, text_to_visual: Tensor, ks: Sequence[int] = (1, 5, 10), sim_i2t: Tensor | None = None
) -> RetrievalMetrics:
    """Recall@k both ways from similarities sim_t2i [T, V] and each text's visual index text_to_visual [T]
    (sim_i2t [V, T]: the visual→text scores when they differ from sim_t2i.T, e.g. after re-ranking).

    t2i: fraction of texts whose own visual is among their top-k visuals. i2t: fraction of visuals with
    at least one of their texts (several texts may share one visual) among their top-k texts. Every
    visual needs at least one text, otherwise its i2t recall would be 0 by construction. Ties between
    equal scores are broken by torch.topk (order unspecified); k above the candidate count counts all.
    """
    _check_retrieval_inputs(sim_t2i, text_to_visual, ks)
    n_visual = sim_t2i.shape[1]
    positives = text_to_visual.to(sim_t2i.device)[:, None] == torch.arange(n_visual, device=sim_t2i.device)[None]
    orphans = (~positives.any(dim=0)).nonzero().flatten().tolist()
    if orphans:
        raise ValueError(
            f"retrieval_recall: visual columns {orphans[:10]} have no text in text_to_visual; drop those "
            "columns from sim_t2i (an i2t query without any positive cannot be scored)"
        )
    scores = sim_t2i.float()
    i2t = scores.T if sim_i2t is None else sim_i2t.float()
    if i2t.shape != scores.T.shape:
        raise ValueError(f"retrieval_recall: sim_i2t must be [V, T] = {tuple(scores.T.shape)}, got {tuple(i2t.shape)}")
    return RetrievalMetrics(i2t=recall_at(i2t, positives.T, ks), t2i=recall_at(scores, positives, ks))


@dataclass(frozen=True)
class GroundingScores:
    """accuracy: fraction of boxes with IoU ≥ threshold; mean_iou; iou [K]: per-box IoU (float32)."""

    accuracy: float
    mean_iou: float
    iou: Tensor
    threshold: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}acc@{self.threshold:g}": self.accuracy, f"{prefix}mean_iou": self.mean_iou}


def grounding_scores(pred: Tensor, target: Tensor, threshold: float = 0.5) -> GroundingScores:
    """IoU of predicted vs target boxes, both [K, 4] normalised (cx, cy, w, h) → GroundingScores.

    A box counts as correct when its IoU is at least `threshold` (≥, so IoU exactly 0.5 counts at 0.5).
    """
    if pred.dim() != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
        raise ValueError(
            f"grounding_scores: pred and target must both be [K, 4] (cx, cy, w, h), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.shape[0] == 0:
        raise ValueError("grounding_scores: got 0 boxes; pass at least one (pred, target) pair")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"grounding_scores: threshold must lie in (0, 1], got {threshold}")
    iou = box_iou_aligned(cxcywh_to_xyxy(pred.float()), cxcywh_to_xyxy(target.to(pred.device).float()))
    return GroundingScores(
        accuracy=float((iou >= threshold).float().mean()),
        mean_iou=float(iou.mean()),
        iou=iou.cpu(),
        threshold=threshold,
    )
