"""Per-caption CIDEr-D, the reward of self-critical sequence training (Rennie et al., CVPR 2017).

pycocoevalcap's CIDEr-D scorer (clipped counts, Gaussian length penalty σ = 6, × 10) on captions tokenised
as x2vlm_core.evaluation.captions does; document frequencies come from the given reference lists (one
document per list). Listing every image's references the same number of times (once per sampled caption)
gives the same IDF as listing them once, so a batch of B images × n samples is scored against B documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from x2vlm_core.evaluation.captions import tokenize_caption

__all__ = ["cider_d"]


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """CIDEr-D of each candidate against its own references (candidates [N], references [N][≥1])."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    if len(candidates) != len(references):
        raise ValueError(f"cider_d: {len(candidates)} candidates for {len(references)} reference lists")
    if not candidates:
        return []
    scorer = CiderScorer(n=4, sigma=6.0)
    for i, (candidate, refs) in enumerate(zip(candidates, references, strict=True)):
        tokenized = [" ".join(tokenize_caption(r)) for r in refs]
        tokenized = [r for r in tokenized if r]
        if not tokenized:
            raise ValueError(f"cider_d: candidate {i} has no non-empty reference; drop it before scoring")
        scorer += (" ".join(tokenize_caption(candidate)), tokenized)
    _, scores = scorer.compute_score()
    return [float(s) for s in scores]
