"""cider_d: per-caption CIDEr-D equal to pycocoevalcap's corpus CIDEr-D, and unchanged by repeating images."""

from __future__ import annotations

import pytest

from x2vlm_core.evaluation.captions import caption_scores
from x2vlm_core.generation.rewards import cider_d

CANDIDATES = ["a red circle at the top", "a small blue star", "two green squares", "a dog"]
REFERENCES = [
    ["a red circle at the top", "a large red circle above"],
    ["a small blue star on the left"],
    ["a green square and a green square", "two squares"],
    ["a cat on a mat"],
]


def test_mean_reward_is_the_corpus_cider_d() -> None:
    rewards = cider_d(CANDIDATES, REFERENCES)
    corpus = caption_scores(dict(enumerate(CANDIDATES)), dict(enumerate(REFERENCES)), java=False).cider_d
    assert sum(rewards) / len(rewards) == pytest.approx(corpus, rel=1e-9)
    assert rewards[0] > rewards[1] > rewards[3] == 0.0


def test_repeating_every_image_n_times_keeps_the_rewards() -> None:
    n = 3
    repeated = cider_d([c for c in CANDIDATES for _ in range(n)], [r for r in REFERENCES for _ in range(n)])
    once = cider_d(CANDIDATES, REFERENCES)
    assert repeated == pytest.approx([r for r in once for _ in range(n)], rel=1e-9)


def test_bad_inputs() -> None:
    assert cider_d([], []) == []
    with pytest.raises(ValueError, match="reference lists"):
        cider_d(["a"], [])
    with pytest.raises(ValueError, match="no non-empty reference"):
        cider_d(["a"], [["...", ""]])
    assert cider_d(["", "a red circle"], [["a red circle"], ["a red circle"]])[0] == 0.0
