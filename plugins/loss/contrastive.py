"""Contrastive (ITC) loss between visual concepts and texts, multi-positive and all-gathered.

X²-VLM (Zeng et al., TPAMI 2023), following ALBEF/CLIP: s = v · w / τ, symmetric cross-entropy over
in-batch (and, across ranks, all-gathered) candidates. Pairs sharing a visual_id or a text_id are all
positives: the target is uniform over them, so duplicate images or captions are not pushed apart.

`box_pairs: false` (here, in matching and in mlm) leaves the object/region rows out of the alignment
losses — the paper's ablation without multi-grained alignment; the bbox loss still trains on them.
`alignment_rows` says which rows of a Batch [M] the alignment losses then use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from x2vlm_core.plugin_api import (
    Batch,
    LossModule,
    LossOutput,
    LossPlan,
    PluginSpec,
    StepInputs,
    gather_rows,
    hookimpl,
    shared_denominator,
)

__all__ = [
    "BOX_PAIRS_HELP",
    "ContrastiveLoss",
    "ContrastiveLossConfig",
    "ContrastiveTerms",
    "alignment_rows",
    "contrastive_terms",
]

BOX_PAIRS_HELP = (
    "align object/region (box) pairs too; false keeps only whole-image and video pairs (the ablation "
    "without multi-grained alignment; the bbox loss still uses the boxes)"
)


def alignment_rows(batch: Batch, box_pairs: bool) -> Tensor | None:
    """Rows [K] long of the batch an alignment loss uses: None = all M rows; without box pairs, the
    whole-image rows [0, n_image) and the video rows after the box rows (host ints: no sync)."""
    if box_pairs or batch.n_box == 0:
        return None
    device = batch.source.device
    after_boxes = batch.n_image + batch.n_box
    return torch.cat((torch.arange(batch.n_image, device=device), torch.arange(after_boxes, batch.size, device=device)))


class ContrastiveLossConfig(BaseModel):
    """Which pairs are aligned; the temperature is the model's (learnable, clamped), the weight x2vlm_core's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box_pairs: bool = Field(True, description=BOX_PAIRS_HELP)


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
        image_feat, text_feat, visual_id, text_id = inputs.image_feat, inputs.text_feat, batch.visual_id, batch.text_id
        kept = alignment_rows(batch, self.config.box_pairs)
        if kept is not None:
            image_feat, text_feat, visual_id, text_id = (
                x.index_select(0, kept) for x in (image_feat, text_feat, visual_id, text_id)
            )
        image_all = gather_rows(image_feat)
        text_all = gather_rows(text_feat)
        # Ids are gathered too: a pair on another rank with the same image/caption is a positive.
        visual_all = gather_rows(visual_id)
        text_id_all = gather_rows(text_id)
        if image_all.shape[0] == 0:  # no aligned row on any rank (box pairs only, box_pairs false)
            zero = (image_feat.float().sum() + text_feat.float().sum()) * 0.0  # still on the graph
            return LossOutput(loss=zero, logs={"i2t_acc": zero.detach(), "t2i_acc": zero.detach(),
                                               "temperature": inputs.temperature.detach().float()})
        positives = (visual_id[:, None] == visual_all[None, :]) | (text_id[:, None] == text_id_all[None, :])
        terms = contrastive_terms(image_feat, text_feat, image_all, text_all, positives, inputs.temperature)
        n = image_feat.shape[0]  # host int
        rows = shared_denominator(image_feat.new_tensor(float(n)))
        loss = 0.5 * (terms.i2t.sum() + terms.t2i.sum()) / rows
        logs = {
            "i2t_acc": _share(terms.i2t_hit, n),
            "t2i_acc": _share(terms.t2i_hit, n),
            "temperature": inputs.temperature.detach().float(),
        }
        return LossOutput(loss=loss, logs=logs)


def _share(hits: Tensor, n: int) -> Tensor:
    # a batch without any aligned row (box pairs only, box_pairs false) logs 0, not NaN
    return hits.float().mean().detach() if n else hits.new_zeros((), dtype=torch.float32)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(kind="loss", name="contrastive", config=ContrastiveLossConfig, factory=ContrastiveLoss)
    ]
