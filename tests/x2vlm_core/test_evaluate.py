"""Retrieval ranking: recall@k and the matching re-rank of each query's contrastive top-k."""

from __future__ import annotations

import math

import torch

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
