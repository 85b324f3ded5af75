"""Contrastive (ITC) loss between visual concepts and texts, multi-positive and all-gathered.

X²-VLM (Zeng et al., TPAMI 2023), following ALBEF/CLIP: s = v · w / τ, symmetric cross-entropy over
in-batch (and, across ranks, all-gathered) candidates. Pairs sharing a visual_id or a text_id are all
positives: the target is uniform over them, so duplicate images or captions are not pushed apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from x2vlm_core.plugin_api import LossModule, LossOutput, LossPlan, PluginSpec, StepInputs, gather_rows, hookimpl, shared_denominator

__all__ = ["ContrastiveLoss", "ContrastiveLossConfig", "ContrastiveTerms", "contrastive_terms"]


class ContrastiveLossConfig(BaseModel):
    """No options: the temperature is the model's (learnable, clamped); the weight is set by x2vlm_core."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ContrastiveTerms:
    """Per local row: i2t and t2i cross-entropies [M] and whether the top-1 candidate is a positive [M]."""

    i2t: Tensor
    t2i: Tensor
    i2t_hit: Tensor
    t2i_hit: Tensor


def contrastive_terms(
    image_feat: Tensor,
    text_feat: Tensor,
    image_all: Tensor,
    text_all: Tensor,
    positives: Tensor,
    temperature: Tensor,
) -> ContrastiveTerms:
    """Multi-positive symmetric ITC: local feats [M, E], gathered feats [G, E], positives bool [M, G].

    Row i of `positives` marks the gathered columns that are positives of local pair i (it must
    include i's own column, which guarantees at least one positive per row).
    """
    # float32 logits: with τ near its 0.001 floor, half-precision products overflow.
    logits_i2t = image_feat.float() @ text_all.float().t() / temperature.float()  # [M, G]
    logits_t2i = text_feat.float() @ image_all.float().t() / temperature.float()  # [M, G]
    target = positives.float() / positives.sum(-1, keepdim=True).clamp_min(1).float()
    i2t = -(target * F.log_softmax(logits_i2t, dim=-1)).sum(-1)
    t2i = -(target * F.log_softmax(logits_t2i, dim=-1)).sum(-1)
    i2t_hit = positives.gather(1, logits_i2t.detach().argmax(-1, keepdim=True)).squeeze(1)
    t2i_hit = positives.gather(1, logits_t2i.detach().argmax(-1, keepdim=True)).squeeze(1)
    return ContrastiveTerms(i2t=i2t, t2i=t2i, i2t_hit=i2t_hit, t2i_hit=t2i_hit)


class ContrastiveLoss(LossModule):
    """Concept↔text contrastive loss: features [M, E] vs all-gathered [G, E], positives by shared ids."""

    def __init__(self, config: ContrastiveLossConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, inputs: StepInputs, plan: LossPlan, fused: Tensor | None) -> LossOutput:
        batch = inputs.batch
        image_all = gather_rows(inputs.image_feat)
        text_all = gather_rows(inputs.text_feat)
        # Ids are gathered too: a pair on another rank with the same image/caption is a positive.
        visual_all = gather_rows(batch.visual_id)
        text_id_all = gather_rows(batch.text_id)
        positives = (batch.visual_id[:, None] == visual_all[None, :]) | (
            batch.text_id[:, None] == text_id_all[None, :]
        )
        terms = contrastive_terms(
            inputs.image_feat, inputs.text_feat, image_all, text_all, positives, inputs.temperature
        )
        rows = shared_denominator(inputs.image_feat.new_tensor(float(batch.size)))
        loss = 0.5 * (terms.i2t.sum() + terms.t2i.sum()) / rows
        logs = {
            "i2t_acc": terms.i2t_hit.float().mean().detach(),
            "t2i_acc": terms.t2i_hit.float().mean().detach(),
            "temperature": inputs.temperature.detach().float(),
        }
        return LossOutput(loss=loss, logs=logs)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(kind="loss", name="contrastive", config=ContrastiveLossConfig, factory=ContrastiveLoss)
    ]
