"""Winoground scores (Thrush et al., CVPR 2022) from per-example 2×2 score blocks, and the score combiner.

scores [N, 2, 2]: scores[n, i, j] = how well caption i of example n matches image j; caption i
describes image i. Per example:
  text  correct: each image prefers its own caption  — s[0,0] > s[1,0] and s[1,1] > s[0,1];
  image correct: each caption prefers its own image  — s[0,0] > s[0,1] and s[1,1] > s[1,0];
  group correct: both.
Comparisons are strict, so a tie is wrong. With random scores the expected values are 1/4, 1/4 and 1/6
(CHANCE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CHANCE", "WinogroundScores", "combine_scores", "winoground_scores"]

CHANCE: dict[str, float] = {"text": 0.25, "image": 0.25, "group": 1.0 / 6.0}

# Retrieval re-ranking clamps log p(match) here too: a saturated head gives -inf, which would tie.
_LOG_PROB_FLOOR = -100.0


@dataclass(frozen=True)
class WinogroundScores:
    """Fractions of examples correct; *_correct [N] bool per example; per_tag: tag → (text, image, group)."""

    text: float
    image: float
    group: float
    text_correct: Tensor
    image_correct: Tensor
    group_correct: Tensor
    per_tag: dict[str, tuple[float, float, float]]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}text": self.text, f"{prefix}image": self.image, f"{prefix}group": self.group}
        for tag, (text, image, group) in self.per_tag.items():
            out.update({f"{prefix}{tag}/text": text, f"{prefix}{tag}/image": image, f"{prefix}{tag}/group": group})
        return out


def _mean(flags: Tensor) -> float:
    return float(flags.float().mean())


def winoground_scores(scores: Tensor, tags: Sequence[str] | None = None) -> WinogroundScores:
    """scores [N, 2, 2] (caption i, image j) → text, image and group scores; tags [N] optional, for per-tag means."""
    if scores.dim() != 3 or scores.shape[1:] != (2, 2) or scores.shape[0] == 0:
        raise ValueError(
            f"winoground_scores: scores must be [N, 2, 2] (example, caption, image) with N ≥ 1, got {tuple(scores.shape)}"
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError("winoground_scores: scores contain NaN; fix the scorer before evaluating")
    if tags is not None and len(tags) != scores.shape[0]:
        raise ValueError(
            f"winoground_scores: got {len(tags)} tags for {scores.shape[0]} examples; pass one per example"
        )
    c0_i0, c0_i1 = scores[:, 0, 0], scores[:, 0, 1]
    c1_i0, c1_i1 = scores[:, 1, 0], scores[:, 1, 1]
    text_ok = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
    image_ok = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
    group_ok = text_ok & image_ok
    per_tag: dict[str, tuple[float, float, float]] = {}
    for tag in sorted(set(tags or ())):
        pick = torch.tensor([t == tag for t in tags or ()], device=scores.device)
        per_tag[tag] = (_mean(text_ok[pick]), _mean(image_ok[pick]), _mean(group_ok[pick]))
    return WinogroundScores(
        text=_mean(text_ok),
        image=_mean(image_ok),
        group=_mean(group_ok),
        text_correct=text_ok.cpu(),
        image_correct=image_ok.cpu(),
        group_correct=group_ok.cpu(),
        per_tag=per_tag,
    )


def combine_scores(similarity: Tensor, match_log_prob: Tensor, temperature: float) -> Tensor:
    """Contrastive similarity and matching log-probability (same shape, e.g. [N, 2, 2]) → sim / τ + log p(match).

    Both terms are log-probabilities up to a per-query constant, so their sum ranks by joint evidence,
    as retrieval re-ranking does.
    """
    if similarity.shape != match_log_prob.shape:
        raise ValueError(
            f"combine_scores: similarity {tuple(similarity.shape)} and match_log_prob {tuple(match_log_prob.shape)} "
            "must have the same shape"
        )
    if not temperature > 0.0:
        raise ValueError(f"combine_scores: temperature must be > 0 (the model's contrastive τ), got {temperature}")
    return similarity.float() / temperature + match_log_prob.float().clamp_min(_LOG_PROB_FLOOR)
