"""Masked language modelling conditioned on the visual concept.

X²-VLM (Zeng et al., TPAMI 2023), after BERT: per text k = min(max_masks, max(1, round(ratio·len)))
tokens are chosen (whole words by default); 80% become [MASK], 10% a random non-special token, 10%
stay; the masked text is re-encoded, fused with the concept tokens, and the chosen positions are
predicted. Predictions are gathered into a fixed [M, max_masks] layout, so nothing depends on
data-dependent shapes (no boolean indexing, no host-device syncs). With `box_pairs: false` only the
whole-image and video texts are masked and predicted (the ablation without multi-grained alignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from plugins.loss.contrastive import BOX_PAIRS_HELP, alignment_rows
from x2vlm_core.plugin_api import (
    Batch,
    FusionPairs,
    LossModule,
    LossOutput,
    LossPlan,
    PluginSpec,
    StepInputs,
    TokenizedText,
    Tokenizer,
    hookimpl,
    shared_denominator,
)

__all__ = ["MaskedText", "MlmLoss", "MlmLossConfig", "MlmPlan", "mask_tokens"]


class MlmLossConfig(BaseModel):
    """How many tokens to mask per text and how to corrupt them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_ratio: float = Field(
        0.4, gt=0.0, le=1.0, description="fraction of a text's non-special tokens to predict"
    )
    max_masks: int = Field(
        12, gt=0, description="at most this many predicted tokens per text (fixed layout width)"
    )
    whole_word: bool = Field(True, description="choose whole words (all their sub-tokens together)")
    p_mask: float = Field(0.8, ge=0.0, le=1.0, description="chosen tokens replaced by [MASK]")
    p_random: float = Field(
        0.1, ge=0.0, le=1.0, description="chosen tokens replaced by a random non-special token"
    )
    p_keep: float = Field(0.1, ge=0.0, le=1.0, description="chosen tokens left unchanged")
    box_pairs: bool = Field(True, description=BOX_PAIRS_HELP)

    @model_validator(mode="after")
    def _probabilities_sum_to_one(self) -> MlmLossConfig:
        total = self.p_mask + self.p_random + self.p_keep
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"p_mask + p_random + p_keep must be 1, got {total:g}")
        return self


@dataclass(frozen=True)
class MaskedText:
    """ids [M, L]: corrupted input; positions [M, P] long: predicted positions (P = max_masks);
    labels [M, P] long: original ids there; valid [M, P] bool: which layout slots are real."""

    ids: Tensor
    positions: Tensor
    labels: Tensor
    valid: Tensor


def _random_non_special(
    shape: torch.Size,
    vocab_size: int,
    special: tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Uniform ids from [0, vocab_size) minus the special ids, exactly, without a lookup table."""
    holes = sorted({s for s in special if 0 <= s < vocab_size})
    if vocab_size - len(holes) <= 0:
        raise ValueError(f"mlm: vocabulary of {vocab_size} ids has no non-special token to sample")
    draw = torch.randint(0, vocab_size - len(holes), shape, device=device, generator=generator)
    # Shift past each special id in increasing order: a bijection onto the non-special ids.
    for hole in holes:
        draw = draw + (draw >= hole).long()
    return draw


# Random draws stay eager in a compiled step: the numbers an eager step draws (exact resume holds), and
# dynamo cannot trace generator draws of a dynamic shape.
@torch.compiler.disable
def mask_tokens(
    text: TokenizedText,
    special_ids: tuple[int, ...],
    vocab_size: int,
    mask_id: int,
    config: MlmLossConfig,
    generator: torch.Generator | None = None,
) -> MaskedText:
    """Choose and corrupt MLM targets: text [M, L] → MaskedText (layout width P = config.max_masks).

    Never chosen: pads (mask False), special ids, tokens with word_id -1. Without whole_word exactly
    k tokens per row are chosen; with it, whole words in random order while they fit in k (always at
    least the first word, truncated only if one word alone has more than max_masks sub-tokens).
    """
    ids, word_ids = text.ids, text.word_ids
    m, length = ids.shape
    device = ids.device
    special = torch.tensor(sorted(set(special_ids)), device=device, dtype=ids.dtype)
    candidate = text.mask & (word_ids >= 0) & ~torch.isin(ids, special)
    count = candidate.sum(-1)
    k = torch.round(config.mask_ratio * count.float()).long().clamp(1, config.max_masks)
    k = torch.minimum(k, count)  # rows with no candidate choose nothing

    positions = torch.arange(length, device=device).expand(m, length)
    group = word_ids.clamp(0, length - 1) if config.whole_word else positions
    # One random score per group (word or token), shared by its tokens; non-candidates sort last.
    score = torch.rand((m, length), device=device, generator=generator).gather(1, group)
    score = torch.where(candidate, score, torch.full_like(score, 2.0))
    order = torch.sort(score, dim=-1, stable=True).indices
    # Running count of candidate tokens in random-group order, scattered back to token positions.
    running = torch.cumsum(candidate.gather(1, order).long(), dim=-1)
    running = torch.empty_like(running).scatter_(1, order, running)
    # Per group: the running count at its last and first token (non-candidates go to a spare slot).
    slot = torch.where(candidate, group, torch.full_like(group, length))
    big = torch.full((m, length + 1), length + 1, device=device, dtype=running.dtype)
    end = (
        torch.zeros((m, length + 1), device=device, dtype=running.dtype)
        .scatter_reduce(1, slot, running, reduce="amax", include_self=True)
        .gather(1, slot)
    )
    start = big.scatter_reduce(1, slot, running, reduce="amin", include_self=True).gather(1, slot)
    chosen = candidate & ((end <= k[:, None]) | (start == 1)) & (running <= config.max_masks)

    # Fixed layout: chosen positions first (in text order), padded with unchosen ones marked invalid.
    layout = torch.sort(torch.where(chosen, positions, positions + length), dim=-1).indices
    width = config.max_masks
    if length < width:
        layout = torch.cat((layout, layout.new_zeros((m, width - length))), dim=1)
    layout = layout[:, :width]
    valid = chosen.gather(1, layout)
    if length < width:
        valid[:, length:] = False

    # 80/10/10 corruption of the chosen tokens.
    u = torch.rand((m, length), device=device, generator=generator)
    replace_mask = chosen & (u < config.p_mask)
    replace_random = chosen & (u >= config.p_mask) & (u < config.p_mask + config.p_random)
    random_ids = _random_non_special(ids.shape, vocab_size, tuple(special_ids), device, generator).to(
        ids.dtype
    )
    corrupted = torch.where(replace_mask, torch.full_like(ids, mask_id), ids)
    corrupted = torch.where(replace_random, random_ids, corrupted)
    return MaskedText(ids=corrupted, positions=layout, labels=ids.gather(1, layout), valid=valid)


@dataclass(frozen=True)
class MlmPlan(LossPlan):
    """The masked copies (as `texts`, encoded in the step's text call) and their targets; `rows` [K]: the
    batch rows they copy (None = all M, in order)."""

    masked: MaskedText | None = None
    rows: Tensor | None = None


class MlmLoss(LossModule):
    """MLM on concept-conditioned fusion: masked text [M, L] + concept tokens → logits [M, max_masks, V] → CE."""

    def __init__(self, config: MlmLossConfig) -> None:
        super().__init__()
        self.config = config

    def prepare(self, batch: Batch, tokenizer: Tokenizer) -> MlmPlan:
        text = batch.text
        kept = alignment_rows(batch, self.config.box_pairs)
        if kept is not None:
            text = TokenizedText(*(x.index_select(0, kept) for x in (text.ids, text.mask, text.word_ids)))
        special = (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unk_id)
        masked = mask_tokens(text, special, tokenizer.vocab_size, tokenizer.mask_id, self.config)
        return MlmPlan(texts=TokenizedText(masked.ids, text.mask, text.word_ids), masked=masked, rows=kept)

    def pairs(self, inputs: StepInputs, plan: LossPlan) -> FusionPairs:
        assert isinstance(plan, MlmPlan) and plan.masked is not None
        copies = torch.arange(plan.masked.ids.shape[0], device=plan.masked.ids.device)
        segment = copies if plan.rows is None else plan.rows
        # Each masked copy with its own pair's visual concept; only the predicted slots are read.
        return FusionPairs(text=plan.first_row + copies, segment=segment, positions=plan.masked.positions, head="mlm")

    def forward(self, inputs: StepInputs, plan: LossPlan, fused: Tensor | None) -> LossOutput:
        assert isinstance(plan, MlmPlan) and plan.masked is not None and fused is not None
        masked = plan.masked
        logits = fused.float()  # [M, P, V]
        ce = F.cross_entropy(logits.flatten(0, 1), masked.labels.flatten(), reduction="none").view_as(
            masked.labels
        )
        weight = masked.valid.float()
        # No valid slot at all (every text empty) gives 0 that still depends on the graph.
        total = shared_denominator(weight.sum())
        loss = (ce * weight).sum() / total
        hit = (logits.detach().argmax(-1) == masked.labels).float()
        return LossOutput(loss=loss, logs={"acc": (hit * weight).sum() / weight.sum().clamp_min(1.0)})


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="loss", name="mlm", config=MlmLossConfig, factory=MlmLoss)]
