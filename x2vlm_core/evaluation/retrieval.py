"""Retrieval: contrastive similarity for all pairs, then the matching head re-ranks each query's top-k.

Everything is batched: features for all items once, one fusion call per chunk of (query, candidate) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from x2vlm_core.contracts import VisualMemory, VLModel
from x2vlm_core.evaluation.scores import RetrievalMetrics, retrieval_recall

__all__ = ["encode_texts", "evaluate_retrieval", "match_log_probs", "rerank_both"]


@torch.no_grad()
def encode_texts(model: VLModel, texts: Sequence[str], batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """texts → (fusion-width tokens [T, L, Df], mask [T, L], features [T, E]); padded to one length."""
    tok = model.tokenizer(list(texts), model.max_text_len)
    device = model.device
    ids, mask = tok.ids.to(device), tok.mask.to(device)
    encoded = [model.encode_text(ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return torch.cat([e.tokens for e in encoded]), mask, torch.cat([e.features for e in encoded])


@torch.no_grad()
def match_log_probs(
    model: VLModel, text: Tensor, text_mask: Tensor, memory: VisualMemory, pairs: Tensor, batch_size: int
) -> Tensor:
    """log p(match) [P] of pairs [P, 2] = (text row, segment of `memory`), batch_size pairs per fusion call
    (only [CLS] leaves the last fusion layer). The pairs go in segment order, so that each call reads few
    segments and projects keys/values for those only."""
    order = pairs[:, 1].argsort(stable=True)
    out = []
    for i in range(0, pairs.shape[0], batch_size):
        t, v = pairs[order[i : i + batch_size]].unbind(1)
        cls = model.fuse(text[t], text_mask[t], memory, v, positions=torch.zeros_like(t)[:, None])[:, 0]
        out.append(model.heads.itm(cls).float().log_softmax(-1)[:, 1])
    if not out:
        return text.new_zeros(0)
    scores = torch.cat(out)
    return torch.empty_like(scores).index_copy_(0, order, scores)


def _rerank(sim: Tensor, cols: Tensor, log_match: Tensor, temperature: float, match_weight: float = 1.0) -> Tensor:
    """Each row's candidates cols [Q, k] (its contrastive top-k) re-scored by sim / τ + w · log p(match)
    (contrastive and matching evidence together, as log-probabilities up to a per-query constant), placed
    above every other entry; the rest keep sim / τ."""
    final = sim.double() / temperature
    rows = torch.arange(sim.shape[0], device=sim.device)[:, None].expand_as(cols)
    combined = final[rows, cols] + match_weight * log_match.view_as(cols).double().clamp_min(-100.0)
    # float64: the offset keeps the re-ranked block on top without losing the differences inside it
    # (combined ≥ -|sim/τ|max - 100 w, every other entry ≤ |sim/τ|max)
    final[rows, cols] = 4.0 * final.abs().max() + 100.0 * max(1.0, match_weight) + combined
    return final


@torch.no_grad()
def rerank_both(
    model: VLModel, text: Tensor, text_mask: Tensor, visual_tokens: Tensor, sim_t2i: Tensor, k: int, batch_size: int,
    match_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Scores [T, V] and [V, T] with each query's contrastive top-k re-ranked by sim/τ + w · log p(match); a
    pair in both directions' top-k (the right one, mostly) goes through fusion once."""
    texts, visuals = sim_t2i.shape
    k_t, k_i = min(k, visuals), min(k, texts)
    if k_t == 0 or k_i == 0:
        return sim_t2i, sim_t2i.T
    tau = float(model.heads.temperature)
    device = sim_t2i.device
    cand_t2i = sim_t2i.topk(k_t, dim=1).indices  # visuals per text [T, k]
    cand_i2t = sim_t2i.T.topk(k_i, dim=1).indices  # texts per visual [V, k]
    text_rows = torch.arange(texts, device=device)[:, None].expand_as(cand_t2i)
    visual_rows = torch.arange(visuals, device=device)[:, None].expand_as(cand_i2t)
    keys = torch.cat(((text_rows * visuals + cand_t2i).flatten(), (cand_i2t * visuals + visual_rows).flatten()))
    unique, inverse = keys.unique(return_inverse=True)
    pairs = torch.stack((unique // visuals, unique % visuals), -1)
    scores = match_log_probs(model, text, text_mask, VisualMemory.whole(visual_tokens), pairs, batch_size)[inverse]
    return (_rerank(sim_t2i, cand_t2i, scores[: cand_t2i.numel()], tau, match_weight),
            _rerank(sim_t2i.T, cand_i2t, scores[cand_t2i.numel() :], tau, match_weight))


@torch.no_grad()
def evaluate_retrieval(
    model: VLModel, visual_tokens: Tensor, texts: Sequence[str], text_to_visual: Tensor, k: int, batch_size: int,
    match_weight: float = 1.0,
) -> RetrievalMetrics:
    """Retrieval between visuals (tokens [V, 1+N, Dv]) and texts; `text_to_visual` [T] gives each text's
    visual row (several texts may share one). Contrastive similarity ranks all pairs; with k > 0, the
    matching head re-ranks each query's top-k (sim/τ + match_weight · log p(match))."""
    device = visual_tokens.device
    text, text_mask, text_feat = encode_texts(model, texts, batch_size)
    heads = model.heads
    image_feat = torch.cat(
        [heads.image_features(visual_tokens[i : i + batch_size]) for i in range(0, visual_tokens.shape[0], batch_size)]
    )
    sim_t2i = text_feat @ image_feat.T  # [T, V]
    final_t2i, final_i2t = rerank_both(model, text, text_mask, visual_tokens, sim_t2i, k, batch_size,
                                       match_weight)
    return retrieval_recall(final_t2i, text_to_visual.to(device), sim_i2t=final_i2t)
