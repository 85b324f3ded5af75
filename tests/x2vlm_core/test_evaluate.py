"""Retrieval ranking: recall@k and the matching re-rank of each query's contrastive top-k."""

from __future__ import annotations

import math

import pytest
import torch

from x2vlm_core.config import EvalConfig
from x2vlm_core.evaluation.retrieval import _rerank
from x2vlm_core.evaluation.scores import recall_at


def test_recall_at_counts_any_positive_in_the_top_k() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8]])
    positives = torch.tensor([[False, True, False], [False, False, True]])
    assert recall_at(scores, positives, ks=(1, 2, 5)) == {1: 0.5, 2: 1.0, 5: 1.0}


def test_rerank_combines_contrastive_and_matching_evidence_inside_the_top_k() -> None:
    tau = 0.1
    sim = torch.tensor([[0.50, 0.48, 0.20, 0.10]])  # top-2: columns 0 and 1
    # column 1's match probability is far higher: it overturns a small similarity gap (0.02 / τ = 0.2)
    final = _rerank(sim, sim.topk(2).indices, torch.tensor([math.log(0.2), math.log(0.9)]), tau)
    assert final.argsort(descending=True).tolist() == [[1, 0, 2, 3]]
    gap = (0.48 / tau + math.log(0.9)) - (0.50 / tau + math.log(0.2))
    assert abs((final[0, 1] - final[0, 0]).item() - gap) < 1e-5
    # ...but a slightly higher probability does not overturn a large similarity gap (3 / τ' = 30)
    sim = torch.tensor([[0.9, 0.6, 0.0]])
    final = _rerank(sim, sim.topk(2).indices, torch.tensor([math.log(0.5), math.log(0.6)]), 0.1)
    assert final.argsort(descending=True).tolist() == [[0, 1, 2]]
    # re-ranked entries stay above everything else, even with a hopeless match probability
    sim = torch.tensor([[0.3, 0.2, 0.1]])
    final = _rerank(sim, sim.topk(1).indices, torch.tensor([-1e9]), 0.01)
    assert final[0, 0] > final[0, 1] > final[0, 2]
    # ...whatever the weight on the matching evidence
    sim = torch.tensor([[0.5, 0.4, 0.3]])
    final = _rerank(sim, sim.topk(1).indices, torch.tensor([-1e9]), 0.07, match_weight=8.0)
    assert final[0, 0] > final[0, 1] > final[0, 2]


def test_match_weight_scales_only_the_matching_evidence() -> None:
    """sim / τ + w · log p(match): a 0.2-nat similarity lead holds at w = 1 against a 0.095-nat match
    lead (log 0.55 - log 0.5) and falls at w = 3 (0.286)."""
    sim = torch.tensor([[0.50, 0.48, 0.0]])
    cols, log_match = sim.topk(2).indices, torch.tensor([math.log(0.5), math.log(0.55)])
    assert _rerank(sim, cols, log_match, 0.1).argsort(descending=True).tolist() == [[0, 1, 2]]
    final = _rerank(sim, cols, log_match, 0.1, match_weight=3.0)
    assert final.argsort(descending=True).tolist() == [[1, 0, 2]]
    gap = (0.48 / 0.1 + 3.0 * math.log(0.55)) - (0.50 / 0.1 + 3.0 * math.log(0.5))
    assert abs((final[0, 1] - final[0, 0]).item() - gap) < 1e-5


def test_pretraining_evaluation_passes_its_match_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The eval section's match_weight reaches the re-ranking (and rerank_k / batch_size with it)."""
    from x2vlm_core.evaluation import runner

    seen: list[tuple[int, int, float]] = []

    def spy(model: object, tokens: object, captions: object, owners: object, k: int, batch_size: int,
            match_weight: float = 1.0) -> object:
        seen.append((k, batch_size, match_weight))
        raise StopIteration  # enough: the arguments are what this test reads

    monkeypatch.setattr(runner, "evaluate_retrieval", spy)
    monkeypatch.setattr(runner, "encode_visuals", lambda *a: torch.zeros(3, 2, 4))
    data = type("Data", (), {"visuals": None, "video": False, "captions": ["a"], "text_to_visual": None})()
    with pytest.raises(StopIteration):
        runner.retrieval_metrics(None, data, EvalConfig(rerank_k=7, batch_size=5, match_weight=2.5), "retrieval/")  # type: ignore[arg-type]
    assert seen == [(7, 5, 2.5)]
    assert EvalConfig().match_weight == 1.0 and EvalConfig(match_weight=4).match_weight == 4.0
    with pytest.raises(ValueError, match="match_weight"):
        EvalConfig(match_weight=0)



class _FakeModel:
    """Just what re-ranking reads: a learned-looking 2-way head on a pair's fused [CLS], which depends on
    the text and the visual asymmetrically."""

    def __init__(self, width: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.mix = torch.randn(2 * width, width, generator=g)
        self.heads = type("Heads", (), {"temperature": torch.tensor(0.07), "itm": torch.nn.Linear(width, 2)})()

    def fuse(self, text: torch.Tensor, mask: torch.Tensor, memory: object, segment: torch.Tensor,
             positions: torch.Tensor) -> torch.Tensor:
        return (torch.cat((text[:, 0], memory.cls[segment]), -1) @ self.mix).tanh()[:, None]  # type: ignore[attr-defined]


def test_rerank_scores_each_pair_once_and_equals_ranking_each_direction_on_its_own() -> None:
    """Pairs in both directions' top-k are fused once; the scores equal re-ranking t2i and i2t apart."""
    from x2vlm_core.contracts import VisualMemory
    from x2vlm_core.evaluation.retrieval import match_log_probs, rerank_both

    texts, visuals, k = 15, 9, 4
    torch.manual_seed(0)
    model = _FakeModel()
    text, visual = torch.randn(texts, 2, 8), torch.randn(visuals, 3, 8)
    mask = torch.ones(texts, 2, dtype=torch.bool)
    sim = torch.randn(texts, visuals)
    fused: list[int] = []
    fuse = model.fuse
    model.fuse = lambda *a, **kw: (fused.append(int(a[3].shape[0])), fuse(*a, **kw))[1]  # type: ignore[method-assign]
    t2i, i2t = rerank_both(model, text, mask, visual, sim, k, batch_size=7, match_weight=2.5)  # type: ignore[arg-type]
    assert sum(fused) < texts * k + visuals * k  # pairs in both top-k lists were fused once

    tau = float(model.heads.temperature)
    cand = sim.topk(k, dim=1).indices
    pairs = torch.stack([torch.arange(texts)[:, None].expand(-1, k), cand], -1).view(-1, 2)
    want_t2i = _rerank(sim, cand, match_log_probs(model, text, mask, VisualMemory.whole(visual), pairs, 7), tau, 2.5)  # type: ignore[arg-type]
    cand = sim.T.topk(k, dim=1).indices
    pairs = torch.stack([cand, torch.arange(visuals)[:, None].expand(-1, k)], -1).view(-1, 2)
    want_i2t = _rerank(sim.T, cand, match_log_probs(model, text, mask, VisualMemory.whole(visual), pairs, 7), tau, 2.5)  # type: ignore[arg-type]
    torch.testing.assert_close(t2i, want_t2i, rtol=1e-8, atol=1e-6)
    torch.testing.assert_close(i2t, want_i2t, rtol=1e-8, atol=1e-6)
