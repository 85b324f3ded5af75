"""The pretraining step as x2vlm 0.1 computed it, kept as the reference of the step-equality test.

Three separate fusion calls (matching, MLM, box), two text-encoder calls (plain texts, then the MLM's
masked copies), and every pair's visual tokens materialised and projected per pair. Negatives and masks
are given, so the reference and today's step see the same randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from plugins.loss.contrastive import contrastive_terms
from plugins.loss.matching import HardNegatives
from plugins.loss.mlm import MaskedText
from x2vlm_core.contracts import Batch, VisualMemory
from x2vlm_core.model import X2VLM
from x2vlm_core.model.boxes import cxcywh_to_xyxy, generalized_box_iou_aligned
from x2vlm_core.model.concepts import concept_tokens, patch_mask

__all__ = ["reference_losses"]


def _fuse(model: X2VLM, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor) -> Tensor:
    """0.1's fuse(): every pair brings its own visual tokens [P, 1+N, Dv] and mask [P, 1+N]."""
    rows = torch.arange(vision.shape[0], device=vision.device)
    memory = VisualMemory(patches=vision[:, 1:], cls=vision[:, 0], image=rows, mask=vision_mask[:, 1:])
    return model.fusion(text, text_mask, memory, rows).tokens


@dataclass(frozen=True)
class _State:
    visual: Tensor
    visual_mask: Tensor
    bank: Tensor
    text: Tensor
    image_feat: Tensor
    text_feat: Tensor
    temperature: Tensor


def _state(model: X2VLM, batch: Batch) -> _State:
    heads = model.heads
    bank = model.encode_visual(batch.images, batch.videos)
    visual, visual_mask = concept_tokens(bank, batch.source, patch_mask(batch.boxes, model.vision.grid))
    raw = model.text(batch.text.ids, batch.text.mask).tokens
    return _State(
        visual=visual, visual_mask=visual_mask, bank=bank, text=heads.text_to_fusion(raw),
        image_feat=F.normalize(heads.vision_proj(visual[:, 0]).float(), dim=-1),
        text_feat=F.normalize(heads.text_proj(raw[:, 0]).float(), dim=-1),
        temperature=heads.temperature,
    )


def _contrastive(batch: Batch, s: _State) -> Tensor:
    positives = (batch.visual_id[:, None] == batch.visual_id[None]) | (batch.text_id[:, None] == batch.text_id[None])
    terms = contrastive_terms(s.image_feat, s.text_feat, s.image_feat, s.text_feat, positives, s.temperature)
    return 0.5 * (terms.i2t.mean() + terms.t2i.mean())


def _matching(model: X2VLM, batch: Batch, s: _State, neg: HardNegatives) -> Tensor:
    m = batch.size
    text, mask = s.text, batch.text.mask
    fused = _fuse(
        model,
        torch.cat((text, text.index_select(0, neg.text_for_concept), text)),
        torch.cat((mask, mask.index_select(0, neg.text_for_concept), mask)),
        torch.cat((s.visual, s.visual, s.visual.index_select(0, neg.concept_for_text))),
        torch.cat((s.visual_mask, s.visual_mask, s.visual_mask.index_select(0, neg.concept_for_text))),
    )
    logits = model.heads.itm(fused[:, 0]).float()
    device = logits.device
    labels = torch.cat((torch.ones(m, dtype=torch.long, device=device), torch.zeros(2 * m, dtype=torch.long, device=device)))
    weight = torch.cat((torch.ones(m, device=device), neg.text_valid.float(), neg.concept_valid.float()))
    return (F.cross_entropy(logits, labels, reduction="none") * weight).sum() / weight.sum().clamp_min(1.0)


def _mlm(model: X2VLM, batch: Batch, s: _State, masked: MaskedText) -> Tensor:
    raw = model.text(masked.ids, batch.text.mask).tokens  # 0.1 re-encoded the masked copies in a second call
    fused = _fuse(model, model.heads.text_to_fusion(raw), batch.text.mask, s.visual, s.visual_mask)
    picked = fused.gather(1, masked.positions[:, :, None].expand(-1, -1, fused.shape[-1]))
    logits = model.heads.mlm(picked).float()
    ce = F.cross_entropy(logits.flatten(0, 1), masked.labels.flatten(), reduction="none").view_as(masked.labels)
    weight = masked.valid.float()
    return (ce * weight).sum() / weight.sum().clamp_min(1.0)


def _bbox(model: X2VLM, batch: Batch, s: _State) -> Tensor:
    rows = slice(batch.n_image, batch.n_image + batch.n_box)
    count = batch.n_box
    vision = s.bank.index_select(0, batch.source[rows])
    full = torch.ones(vision.shape[:2], dtype=torch.bool, device=vision.device)
    fused = _fuse(model, s.text[rows], batch.text.mask[rows], vision, full)
    pred = model.heads.bbox(fused[:, 0]).float()
    target = batch.boxes[rows].float()
    l1 = (pred - target).abs().sum(-1).sum() / count
    giou = (1.0 - generalized_box_iou_aligned(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target))).sum() / count
    return l1 + giou


def reference_losses(model: X2VLM, batch: Batch, neg: HardNegatives, masked: MaskedText) -> dict[str, Tensor]:
    """The four pretraining losses as 0.1 computed them (one process, given negatives and masks)."""
    s = _state(model, batch)
    return {
        "contrastive": _contrastive(batch, s),
        "matching": _matching(model, batch, s, neg),
        "mlm": _mlm(model, batch, s, masked),
        "bbox": _bbox(model, batch, s),
    }
