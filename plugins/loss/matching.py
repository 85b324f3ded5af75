"""Matching (ITM) loss with contrastive-similarity hard negatives.

X²-VLM (Zeng et al., TPAMI 2023), following ALBEF: for every concept one negative text and for every
text one negative concept, sampled ∝ softmax(sim / τ) among the local pairs that are not positives
(shared visual_id or text_id). The 3·M pairs go through fusion in one call; a 2-way head on the fused
[CLS] tells matched from unmatched. Rows without any valid negative are weighted out (the reference
code's NaN source: an all-zero sampling row). With `box_pairs: false` only the whole-image and video
rows take part (positives and negatives alike): the ablation without multi-grained alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from plugins.loss.contrastive import BOX_PAIRS_HELP, alignment_rows
from x2vlm_core.plugin_api import (
    FusionPairs,
    LossModule,
    LossOutput,
    LossPlan,
    PluginSpec,
    StepInputs,
    hookimpl,
    shared_denominator,
)

__all__ = ["HardNegatives", "MatchingLoss", "MatchingLossConfig", "sample_hard_negatives"]


class MatchingLossConfig(BaseModel):
    """Which pairs are matched; sampling uses the model's temperature, the weight is set by x2vlm_core."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_pairs: bool = Field(True, description=BOX_PAIRS_HELP)


@dataclass(frozen=True)
class HardNegatives:
    """text_for_concept [M] long: a negative text per concept; concept_for_text [M] long: a negative
    concept per text; *_valid [M] bool: whether that row had any negative at all."""

    text_for_concept: Tensor
    concept_for_text: Tensor
    text_valid: Tensor
    concept_valid: Tensor


def _positive(visual_id: Tensor, text_id: Tensor) -> Tensor:
    """[M, M] bool: pairs sharing a visual or a text id (never negatives of each other)."""
    return (visual_id[:, None] == visual_id[None, :]) | (text_id[:, None] == text_id[None, :])


@torch.compiler.disable  # eager in a compiled step: the eager step's draws (mlm.mask_tokens says why)
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
    positive = _positive(visual_id, text_id)
    text_for_concept, text_valid = _sample_rows(sim, positive, generator)
    concept_for_text, concept_valid = _sample_rows(sim.t(), positive.t(), generator)
    return HardNegatives(text_for_concept, concept_for_text, text_valid, concept_valid)


class MatchingLoss(LossModule):
    """Concept–text matching: fuse [positives; (concept, hard neg text); (hard neg concept, text)] → 2-way CE."""

    def __init__(self, config: MatchingLossConfig) -> None:
        super().__init__()
        self.config = config

    def _ids(self, inputs: StepInputs) -> tuple[Tensor | None, Tensor, Tensor]:
        """(kept rows or None = all, their visual ids, their text ids)."""
        batch = inputs.batch
        kept = alignment_rows(batch, self.config.box_pairs)
        if kept is None:
            return None, batch.visual_id, batch.text_id
        return kept, batch.visual_id.index_select(0, kept), batch.text_id.index_select(0, kept)

    def pairs(self, inputs: StepInputs, plan: LossPlan) -> FusionPairs:
        kept, visual_id, text_id = self._ids(inputs)
        if visual_id.shape[0] == 0:  # nothing kept (a batch of box pairs only): no pair to sample from
            nothing = visual_id.new_zeros(0)
            return FusionPairs(text=nothing, segment=nothing, head="itm")
        image_feat, text_feat = inputs.image_feat, inputs.text_feat
        if kept is not None:
            image_feat, text_feat = image_feat.index_select(0, kept), text_feat.index_select(0, kept)
        neg = sample_hard_negatives(image_feat, text_feat, visual_id, text_id, inputs.temperature)
        # Text rows [0, M) are the batch's own texts; segments [0, M) their visual concepts. Negatives index
        # the kept rows, so they map back through `rows`.
        rows = torch.arange(visual_id.shape[0], device=visual_id.device) if kept is None else kept
        return FusionPairs(
            text=torch.cat((rows, rows[neg.text_for_concept], rows)),
            segment=torch.cat((rows, rows, rows[neg.concept_for_text])),
            head="itm",
        )

    def forward(self, inputs: StepInputs, plan: LossPlan, fused: Tensor | None) -> LossOutput:
        assert fused is not None  # pairs() always asks
        _, visual_id, text_id = self._ids(inputs)
        m = int(visual_id.shape[0])  # host int: a shape
        logits = fused[:, 0].float()  # [3M, 2]
        labels = torch.cat(
            (
                torch.ones(m, dtype=torch.long, device=logits.device),
                torch.zeros(2 * m, dtype=torch.long, device=logits.device),
            )
        )
        # A row without any allowed negative was sampled uniformly: weight it out (the same test as the sampler's).
        valid = (~_positive(visual_id, text_id)).any(-1)
        weight = torch.cat((torch.ones(m, device=logits.device), valid.float(), valid.float()))
        # At least the M positive rows carry weight, so the denominator is >= 1 whenever M >= 1.
        total = shared_denominator(weight.sum())
        loss = (F.cross_entropy(logits, labels, reduction="none") * weight).sum() / total
        hit = (logits.detach().argmax(-1) == labels).float()
        return LossOutput(loss=loss, logs={"acc": (hit * weight).sum() / weight.sum().clamp_min(1.0)})


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="loss", name="matching", config=MatchingLossConfig, factory=MatchingLoss)]
