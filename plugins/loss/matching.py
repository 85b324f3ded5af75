"""Matching (ITM) loss with contrastive-similarity hard negatives.

X²-VLM (Zeng et al., TPAMI 2023), following ALBEF: for every concept one negative text and for every
text one negative concept, sampled ∝ softmax(sim / τ) among the local pairs that are not positives
(shared visual_id or text_id). The 3·M pairs go through fusion in one call; a 2-way head on the fused
[CLS] tells matched from unmatched. Rows without any valid negative are weighted out (the reference
code's NaN source: an all-zero sampling row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from x2vlm_core.plugin_api import LossContext, LossModule, LossOutput, PluginSpec, StepState, hookimpl

__all__ = ["HardNegatives", "MatchingLoss", "MatchingLossConfig", "sample_hard_negatives"]


class MatchingLossConfig(BaseModel):
    """No options: sampling uses the model's temperature; the weight is set by x2vlm_core."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class HardNegatives:
    """text_for_concept [M] long: a negative text per concept; concept_for_text [M] long: a negative
    concept per text; *_valid [M] bool: whether that row had any negative at all."""

    text_for_concept: Tensor
    concept_for_text: Tensor
    text_valid: Tensor
    concept_valid: Tensor


def _sample_rows(
    scores: Tensor, forbidden: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One index per row ∝ softmax(scores) over allowed columns: scores [M, M] float32 → (idx [M], valid [M])."""
    valid = (~forbidden).any(-1)
    masked = scores.masked_fill(forbidden, float("-inf"))
    # A row with nothing allowed samples uniformly (its result is weighted out); every row keeps a
    # finite entry, so softmax never sees an all -inf row and multinomial never an all-zero one.
    masked = torch.where(valid[:, None], masked, torch.zeros_like(masked))
    probs = torch.softmax(masked, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1), valid


@torch.no_grad()
def sample_hard_negatives(
    image_feat: Tensor,
    text_feat: Tensor,
    visual_id: Tensor,
    text_id: Tensor,
    temperature: Tensor,
    generator: torch.Generator | None = None,
) -> HardNegatives:
    """Hard negatives among local pairs: feats [M, E], ids [M] → HardNegatives (no grad, float32)."""
    sim = image_feat.float() @ text_feat.float().t() / temperature.float()  # [M concepts, M texts]
    positive = (visual_id[:, None] == visual_id[None, :]) | (text_id[:, None] == text_id[None, :])
    text_for_concept, text_valid = _sample_rows(sim, positive, generator)
    concept_for_text, concept_valid = _sample_rows(sim.t(), positive.t(), generator)
    return HardNegatives(text_for_concept, concept_for_text, text_valid, concept_valid)


class MatchingLoss(LossModule):
    """Concept–text matching: fuse [positives; (concept, hard neg text); (hard neg concept, text)] → 2-way CE."""

    def __init__(self, config: MatchingLossConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, model: LossContext, state: StepState) -> LossOutput:
        batch = state.batch
        m = batch.size
        neg = sample_hard_negatives(
            state.image_feat, state.text_feat, batch.visual_id, batch.text_id, state.temperature
        )
        text, text_mask = state.text, batch.text.mask
        visual, visual_mask = state.visual, state.visual_mask
        fused = model.fuse(
            torch.cat((text, text.index_select(0, neg.text_for_concept), text)),
            torch.cat((text_mask, text_mask.index_select(0, neg.text_for_concept), text_mask)),
            torch.cat((visual, visual, visual.index_select(0, neg.concept_for_text))),
            torch.cat((visual_mask, visual_mask, visual_mask.index_select(0, neg.concept_for_text))),
        )
        logits = model.itm_head(fused[:, 0]).float()  # [3M, 2]
        labels = torch.cat(
            (
                torch.ones(m, dtype=torch.long, device=logits.device),
                torch.zeros(2 * m, dtype=torch.long, device=logits.device),
            )
        )
        weight = torch.cat(
            (torch.ones(m, device=logits.device), neg.text_valid.float(), neg.concept_valid.float())
        )
        # At least the M positive rows carry weight, so the denominator is >= 1 whenever M >= 1.
        total = weight.sum().clamp_min(1.0)
        loss = (F.cross_entropy(logits, labels, reduction="none") * weight).sum() / total
        hit = (logits.detach().argmax(-1) == labels).float()
        return LossOutput(loss=loss, logs={"acc": (hit * weight).sum() / total})


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="loss", name="matching", config=MatchingLossConfig, factory=MatchingLoss)]
