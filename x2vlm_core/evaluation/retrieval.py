"""Retrieval: contrastive similarity for all pairs, then the matching head re-ranks each query's top-k.

Everything is batched: features for all items once, one fusion call per chunk of (query, candidate) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from x2vlm_core.contracts import VisualMemory
from x2vlm_core.model import X2VLM

__all__ = ["RetrievalMetrics", "encode_texts", "evaluate_retrieval", "recall_at"]


_KS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@K both ways: i2t (visual → text) and t2i (text → visual), and their mean."""

    i2t: dict[int, float]
    t2i: dict[int, float]

    @property
    def mean(self) -> float:
        values = [*self.i2t.values(), *self.t2i.values()]
        return sum(values) / len(values)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}i2t_r{k}": v for k, v in self.i2t.items()}
        out.update({f"{prefix}t2i_r{k}": v for k, v in self.t2i.items()})
        out[f"{prefix}mean_recall"] = self.mean
        return out


def recall_at(scores: Tensor, positives: Tensor, ks: Sequence[int] = _KS) -> dict[int, float]:
    """scores [Q, C], positives bool [Q, C] → fraction of queries with a positive in their top-k."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hit = positives.gather(1, top)
    return {k: float(hit[:, : min(k, k_max)].any(dim=1).float().mean()) for k in ks}


@torch.no_grad()
def encode_texts(model: X2VLM, texts: Sequence[str], batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """texts → (fusion-width tokens [T, L, Df], mask [T, L], features [T, E]); padded to one length."""
    tok = model.tokenizer(list(texts), model.max_text_len)
    device = model.device
    ids, mask = tok.ids.to(device), tok.mask.to(device)
    encoded = [model.encode_text(ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return torch.cat([e.tokens for e in encoded]), mask, torch.cat([e.features for e in encoded])


@torch.no_grad()
def _itm_scores(
    model: X2VLM, text: Tensor, text_mask: Tensor, visual: Tensor, pairs: Tensor, batch_size: int
) -> Tensor:
    """Log match probability for pairs [P, 2] = (text row, visual row) → [P]."""
    out = []
    memory = VisualMemory.whole(visual)
    for i in range(0, pairs.shape[0], batch_size):
        t, v = pairs[i : i + batch_size, 0], pairs[i : i + batch_size, 1]
        cls = model.fuse(text[t], text_mask[t], memory, v, positions=torch.zeros_like(t)[:, None])[:, 0]
        out.append(model.heads.itm(cls).float().log_softmax(-1)[:, 1])
    return torch.cat(out) if out else text.new_zeros(0)


def _rerank(sim: Tensor, cols: Tensor, log_match: Tensor, temperature: float) -> Tensor:
    """Each row's candidates cols [Q, k] (its contrastive top-k) re-scored by sim / τ + log p(match)
    (contrastive and matching evidence together, as log-probabilities up to a per-query constant), placed
    above every other entry; the rest keep sim / τ."""
    final = sim.double() / temperature
    rows = torch.arange(sim.shape[0], device=sim.device)[:, None].expand_as(cols)
    combined = final[rows, cols] + log_match.view_as(cols).double().clamp_min(-100.0)
    # float64: the offset keeps the re-ranked block on top without losing the differences inside it
    final[rows, cols] = 4.0 * final.abs().max() + 100.0 + combined
    return final


@torch.no_grad()
def evaluate_retrieval(
    model: X2VLM, visual_tokens: Tensor, texts: Sequence[str], text_to_visual: Tensor, k: int, batch_size: int
) -> RetrievalMetrics:
    """Retrieval between visuals (tokens [V, 1+N, Dv], e.g. from encode_visual) and texts.

    `text_to_visual` [T] gives each text's visual row (several texts may share one visual). Contrastive
    similarity ranks all pairs; with k > 0, the matching head re-ranks each query's top-k.
    """
    model.eval()
    device = visual_tokens.device
    text, text_mask, text_feat = encode_texts(model, texts, batch_size)
    image_feat = torch.cat(
        [model.heads.image_features(visual_tokens[i : i + batch_size]) for i in range(0, visual_tokens.shape[0], batch_size)]
    )
    sim_t2i = text_feat @ image_feat.T  # [T, V]
    tau = float(model.heads.temperature)
    positives = text_to_visual.to(device)[:, None] == torch.arange(visual_tokens.shape[0], device=device)[None]
    k_t = min(k, sim_t2i.shape[1])
    k_i = min(k, sim_t2i.shape[0])
    if k_t > 0:
        cand = sim_t2i.topk(k_t, dim=1).indices
        pairs = torch.stack([torch.arange(len(texts), device=device)[:, None].expand(-1, k_t), cand], -1)
        sim_t2i_final = _rerank(sim_t2i, cand, _itm_scores(model, text, text_mask, visual_tokens, pairs.view(-1, 2), batch_size), tau)
    else:
        sim_t2i_final = sim_t2i
    sim_i2t = sim_t2i.T
    if k_i > 0:
        cand = sim_i2t.topk(k_i, dim=1).indices  # texts per visual
        vis = torch.arange(sim_i2t.shape[0], device=device)[:, None].expand(-1, k_i)
        pairs = torch.stack([cand, vis], -1)
        sim_i2t_final = _rerank(sim_i2t, cand, _itm_scores(model, text, text_mask, visual_tokens, pairs.view(-1, 2), batch_size), tau)
    else:
        sim_i2t_final = sim_i2t
    return RetrievalMetrics(
        i2t=recall_at(sim_i2t_final, positives.T), t2i=recall_at(sim_t2i_final, positives)
    )
