"""The left-to-right masked-LM objective (UniLM seq2seq, the paper's captioning recipe) and sequence scoring.

A training text is "[CLS] prompt target [SEP]" [P, L]. Some target positions (tokens and the end token,
never the prompt) are chosen as queries [P, Q]; each query is a [MASK] at the position it predicts that
attends to the real tokens before it and to itself, in the text encoder and the fusion, and cross-attends to
its pair's visual segment; the MLM head reads it. The real tokens attend causally to real tokens only and
never to a query, so every query sees a clean prefix, exactly as at decoding time (the official code's
"FG-free" variant: the [MASK] is an extra token, not a corruption). Cost: the L real tokens once plus Q
queries, against the real tokens' cached keys/values.

    seq2seq_texts      prompts + targets → ids/mask [P, L] and prompt lengths [P]
    choose_queries     the predicted positions (a fraction of the target, at most max_queries)
    query_logits       logits [P, Q, V] of the queries
    seq2seq_loss       label-smoothed cross-entropy over the valid queries
    sequence_log_prob  summed log p [P] of every target token (end included), with gradients (SCST, ranking)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from x2vlm_core.contracts import Tokenizer, VisualMemory, VLModel
from x2vlm_core.generation.attention import causal_allowed
from x2vlm_core.generation.steppers import model_parts, tokenize_prompts

__all__ = ["choose_queries", "query_logits", "seq2seq_loss", "seq2seq_texts", "sequence_log_prob", "target_queries"]


def seq2seq_texts(
    tokenizer: Tokenizer, prompts: Sequence[str], targets: Sequence[str], max_len: int
) -> tuple[Tensor, Tensor, Tensor]:
    """"[CLS] prompt target [SEP]" for each pair → ids [P, L], mask [P, L] bool and prompt lengths [P] (the
    prompt's tokens, [CLS] included). Texts longer than max_len lose target tokens, never the end token."""
    if len(prompts) != len(targets):
        raise ValueError(f"seq2seq_texts: {len(prompts)} prompts for {len(targets)} targets")
    own, prompt_lengths = tokenize_prompts(tokenizer, prompts, max_len)
    joined = tokenizer([p + t for p, t in zip(prompts, targets, strict=True)], max_len)
    width = min(own.shape[1], joined.ids.shape[1])
    inside = torch.arange(own.shape[1])[None, :] < prompt_lengths[:, None]
    differs = (own[:, :width] != joined.ids[:, :width]) & inside[:, :width]
    differs |= (prompt_lengths > joined.ids.shape[1])[:, None]
    if bool(differs.any()):
        bad = prompts[int(differs.any(-1).nonzero()[0])]
        raise ValueError(f"seq2seq_texts: the prompt {bad!r} tokenizes differently before a target; end the prompt "
                         "at a word boundary (e.g. with a space)")
    lengths = joined.mask.sum(-1)
    if bool((lengths <= prompt_lengths + 1).any()):
        raise ValueError("seq2seq_texts: a text has no target token left after the prompt; raise max_len or "
                         "shorten the prompt")
    return joined.ids, joined.mask, prompt_lengths


def target_queries(mask: Tensor, prompt_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Every target position (after the prompt, end token included) as queries [P, Q] and valid [P, Q]."""
    length = mask.shape[1]
    positions = torch.arange(length, device=mask.device).expand(mask.shape[0], length)
    target = mask & (positions >= prompt_lengths[:, None])
    order = torch.sort(torch.where(target, positions, positions + length), dim=-1).indices
    q = int(target.sum(-1).max())
    queries = order[:, :q]
    valid = target.gather(1, queries)
    return torch.where(valid, queries, torch.zeros_like(queries)), valid


def choose_queries(
    mask: Tensor, prompt_lengths: Tensor, fraction: float, max_queries: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """round(fraction · target tokens) random target positions per text (at least 1, at most max_queries), in
    text order: queries [P, Q] long (Q = max_queries) and valid [P, Q] bool."""
    p, length = mask.shape
    positions = torch.arange(length, device=mask.device).expand(p, length)
    target = mask & (positions >= prompt_lengths[:, None])
    count = target.sum(-1)
    k = torch.round(fraction * count.float()).long().clamp(1, max_queries).minimum(count)
    score = torch.rand((p, length), generator=generator).to(mask.device)
    score = torch.where(target, score, torch.full_like(score, 2.0))
    rank = torch.empty_like(positions).scatter_(1, score.argsort(dim=-1), positions)  # rank of each position
    chosen = target & (rank < k[:, None])
    order = torch.sort(torch.where(chosen, positions, positions + length), dim=-1).indices
    if length < max_queries:
        order = torch.cat((order, order.new_zeros(p, max_queries - length)), dim=1)
    queries = order[:, :max_queries]
    valid = chosen.gather(1, queries.clamp(max=length - 1)) & (torch.arange(max_queries, device=mask.device) < length)
    return torch.where(valid, queries, torch.zeros_like(queries)), valid


def _query_allowed(mask: Tensor, queries: Tensor) -> Tensor:
    """allowed [P, Q, L+Q]: query j sees real tokens before its position, then itself only."""
    length, q = mask.shape[1], queries.shape[1]
    before = torch.arange(length, device=mask.device)[None, None, :] < queries[:, :, None]
    own = torch.eye(q, dtype=torch.bool, device=mask.device).expand(mask.shape[0], q, q)
    return torch.cat((before & mask[:, None, :], own), dim=2)


def query_logits(model: VLModel, memory: VisualMemory, segment: Tensor, ids: Tensor, mask: Tensor,
                 queries: Tensor) -> Tensor:
    """Logits [P, Q, V] of [MASK] queries at positions queries [P, Q] of texts ids/mask [P, L], each pair
    reading segment `segment` [P] of `memory` (with gradients when the model trains)."""
    text, fusion, heads = model_parts(model)
    p, length = ids.shape
    positions = torch.arange(length, device=ids.device).expand(p, length)
    causal = causal_allowed(mask)
    real, text_cache = text.decode(ids, positions, causal)
    asked = torch.full_like(queries, model.tokenizer.mask_id)
    allowed = _query_allowed(mask, queries)
    asked_out, _ = text.decode(asked, queries, allowed, text_cache, keep=0)
    cache = fusion.start_decoding(memory, segment)
    _, cache = fusion.decode(heads.text_to_fusion(real.tokens), causal, cache)
    fused, _ = fusion.decode(heads.text_to_fusion(asked_out.tokens), allowed, cache, keep=0)
    return heads.mlm(fused.tokens)  # type: ignore[no-any-return]


def seq2seq_loss(logits: Tensor, labels: Tensor, valid: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Label-smoothed cross-entropy over valid queries (logits [P, Q, V], labels/valid [P, Q]) and the
    share of valid queries predicted right."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none",
                         label_smoothing=label_smoothing).view_as(labels)
    weight = valid.float()
    count = weight.sum().clamp_min(1.0)
    accuracy = ((logits.detach().argmax(-1) == labels).float() * weight).sum() / count
    return (ce * weight).sum() / count, accuracy


def sequence_log_prob(model: VLModel, memory: VisualMemory, segment: Tensor, ids: Tensor, mask: Tensor,
                      prompt_lengths: Tensor) -> Tensor:
    """Summed log p [P] of every target token (after the prompt, end token included) given its prefix."""
    queries, valid = target_queries(mask, prompt_lengths)
    logp = torch.log_softmax(query_logits(model, memory, segment, ids, mask, queries).float(), dim=-1)
    picked = logp.gather(2, ids.gather(1, queries)[:, :, None])[:, :, 0]
    return (picked * valid.float()).sum(-1)
