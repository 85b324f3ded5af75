"""Attribute recognition: mean average precision over attributes and top-1 accuracy over objects.

scores [K, A]: K object boxes × A attribute phrases (higher = more likely); labels [K, A] bool: an
object's attributes (several per object). Optional groups (e.g. "colour" → column indices) give the
same two numbers restricted to each group's columns.

AP of attribute a ranks the K objects by scores[:, a], highest first. Ties are one step: objects with
equal scores are admitted together, so every positive among them gets the precision over the whole
tied block (the order-independent convention of scikit-learn's average_precision_score):
    AP = Σ_blocks (positives in block / all positives) · precision after the block.
mAP averages AP over the attributes with at least one positive (AP is undefined without any).

Top-1 of an object is correct when its top-scored attribute is one of its labels; when several
attributes tie for the top score, the object scores the fraction of them that are labels (the
expected accuracy of a random tie-break). Objects without any label are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AttributeScores", "attribute_scores", "average_precision"]


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Per-column AP: scores [K, A] float, labels [K, A] bool → [A] float64 (NaN where a column has no positive)."""
    s = scores.double().T  # [A, K]
    y = labels.T.double()
    order = torch.argsort(s, dim=1, descending=True)
    s_sorted, y_sorted = s.gather(1, order), y.gather(1, order)
    # Index of the last object in each object's tie block (ascending copy for searchsorted).
    ascending = -s_sorted
    block_end = torch.searchsorted(ascending.contiguous(), ascending.contiguous(), right=True) - 1
    true_pos = y_sorted.cumsum(1)
    precision_at_end = true_pos.gather(1, block_end) / (block_end + 1).double()
    n_pos = y_sorted.sum(1)
    ap = (y_sorted * precision_at_end).sum(1) / n_pos.clamp_min(1.0)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, math.nan))


def _top1(scores: Tensor, labels: Tensor) -> float:
    """Mean top-1 credit over objects with ≥ 1 label: scores [K, A], labels [K, A] bool; NaN if none qualify."""
    has_label = labels.any(1)
    if not bool(has_label.any()):
        return math.nan
    s, y = scores[has_label].double(), labels[has_label]
    at_top = s == s.max(1, keepdim=True).values
    credit = (at_top & y).sum(1).double() / at_top.sum(1).double()
    return float(credit.mean())


def _nanmean(values: Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


@dataclass(frozen=True)
class AttributeScores:
    """mean_ap and top1 over all attributes; ap [A] (NaN: no positive); per_group: name → (mAP, top-1),
    NaN where a group has no positive (no labelled object for that group)."""

    mean_ap: float
    top1: float
    ap: Tensor
    per_group: dict[str, tuple[float, float]]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}attr_map": self.mean_ap, f"{prefix}attr_top1": self.top1}
        for name, (mean_ap, top1) in self.per_group.items():
            out.update({f"{prefix}attr_map/{name}": mean_ap, f"{prefix}attr_top1/{name}": top1})
        return out


def _check(scores: Tensor, labels: Tensor, groups: Mapping[str, Sequence[int]]) -> None:
    if scores.dim() != 2 or scores.shape != labels.shape or scores.numel() == 0:
        raise ValueError(
            f"attribute_scores: scores and labels must both be non-empty [K, A] (objects × attributes), got "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype != torch.bool:
        raise ValueError(f"attribute_scores: labels must be bool (True = the object has it), got {labels.dtype}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("attribute_scores: scores contain NaN; fix the scorer before evaluating")
    if not bool(labels.any()):
        raise ValueError("attribute_scores: labels have no positive at all; AP is undefined for every attribute")
    n_attr = scores.shape[1]
    for name, columns in groups.items():
        bad = [c for c in columns if not 0 <= c < n_attr]
        if not columns or bad:
            raise ValueError(
                f"attribute_scores: group {name!r} needs column indices in [0, {n_attr}), got {list(columns)}"
            )


def attribute_scores(
    scores: Tensor, labels: Tensor, groups: Mapping[str, Sequence[int]] | None = None
) -> AttributeScores:
    """scores [K, A], labels [K, A] bool, groups name → attribute columns → AttributeScores (see module doc)."""
    groups = groups or {}
    _check(scores, labels, groups)
    scores, labels = scores.detach().cpu(), labels.cpu()
    ap = average_precision(scores, labels)
    per_group: dict[str, tuple[float, float]] = {}
    for name, columns in groups.items():
        cols = torch.tensor(list(columns), dtype=torch.long)
        per_group[name] = (_nanmean(ap[cols]), _top1(scores[:, cols], labels[:, cols]))
    return AttributeScores(mean_ap=_nanmean(ap), top1=_top1(scores, labels), ap=ap, per_group=per_group)
