"""Winoground text / image / group scores on hand-worked 2×2 blocks, chance levels, score combination."""

from __future__ import annotations

import math

import pytest
import torch

from x2vlm_core.evaluation.composition import CHANCE, combine_scores, winoground_scores

# scores[n, caption i, image j]; caption i describes image i.
BLOCKS = torch.tensor(
    [
        [[0.9, 0.1], [0.2, 0.8]],  # both right: text ✓ image ✓ group ✓
        [[0.5, 0.6], [0.1, 0.7]],  # text ✓ (.5 > .1, .7 > .6); image ✗ (caption 0 prefers image 1: .6 > .5)
        [[0.5, 0.1], [0.6, 0.7]],  # text ✗ (image 0 prefers caption 1: .6 > .5); image ✓ (.5 > .1, .7 > .6)
        [[0.1, 0.9], [0.8, 0.2]],  # everything swapped: ✗ ✗ ✗
        [[0.5, 0.5], [0.5, 0.5]],  # ties are wrong: ✗ ✗ ✗
        [[0.9, 0.95], [0.1, 1.0]],  # text ✓ (.9 > .1, 1 > .95); image ✗ (.95 > .9)
    ]
)
TAGS = ["attr", "attr", "rel", "rel", "rel", "attr"]


def test_hand_worked_blocks() -> None:
    scores = winoground_scores(BLOCKS)
    assert scores.text_correct.tolist() == [True, True, False, False, False, True]
    assert scores.image_correct.tolist() == [True, False, True, False, False, False]
    assert scores.group_correct.tolist() == [True, False, False, False, False, False]
    assert (scores.text, scores.image, scores.group) == pytest.approx((3 / 6, 2 / 6, 1 / 6))
    assert scores.per_tag == {}


def test_per_tag_scores() -> None:
    scores = winoground_scores(BLOCKS, TAGS)
    # attr = examples 0, 1, 5: text 3/3, image 1/3, group 1/3; rel = 2, 3, 4: text 0, image 1/3, group 0.
    assert scores.per_tag["attr"] == pytest.approx((1.0, 1 / 3, 1 / 3))
    assert scores.per_tag["rel"] == pytest.approx((0.0, 1 / 3, 0.0))
    assert scores.as_dict("wino/")["wino/rel/image"] == pytest.approx(1 / 3)


def test_random_scores_land_on_chance() -> None:
    assert CHANCE == pytest.approx({"text": 0.25, "image": 0.25, "group": 1 / 6})
    g = torch.Generator().manual_seed(0)
    n = 60000
    scores = winoground_scores(torch.rand((n, 2, 2), generator=g))
    for name in ("text", "image", "group"):
        p = CHANCE[name]
        assert abs(getattr(scores, name) - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_combine_adds_scaled_similarity_and_match_log_prob() -> None:
    sim = torch.tensor([[[0.30, 0.20], [0.32, 0.25]]])  # contrastive alone: image 0 prefers caption 1
    log_p = torch.log(torch.tensor([[[0.9, 0.2], [0.1, 0.8]]]))
    combined = combine_scores(sim, log_p, temperature=0.05)
    # 0.30/0.05 + log 0.9 = 6 - 0.105; 0.32/0.05 + log 0.1 = 6.4 - 2.303: caption 0 now wins for image 0.
    expected = sim / 0.05 + log_p
    torch.testing.assert_close(combined, expected)
    assert not bool(winoground_scores(sim).text_correct[0])
    assert bool(winoground_scores(combined).group_correct[0])
    # A saturated matching head (log p = -inf) stays finite, ordered by similarity.
    floor = combine_scores(sim, torch.full_like(sim, -math.inf), temperature=0.05)
    assert bool(torch.isfinite(floor).all())
    torch.testing.assert_close(floor, sim / 0.05 - 100.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"\[N, 2, 2\]"):
        winoground_scores(torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match="NaN"):
        winoground_scores(torch.full((1, 2, 2), math.nan))
    with pytest.raises(ValueError, match="2 tags for 6 examples"):
        winoground_scores(BLOCKS, ["a", "b"])
    with pytest.raises(ValueError, match="same shape"):
        combine_scores(torch.zeros(1, 2, 2), torch.zeros(2, 2), temperature=0.05)
    with pytest.raises(ValueError, match="temperature"):
        combine_scores(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), temperature=0.0)
