"""retrieval_recall and grounding_scores against hand-worked answers."""

from __future__ import annotations

import pytest
import torch

from x2vlm_core.evaluation.scores import grounding_scores, retrieval_recall

# 5 texts × 3 visuals; texts 0, 1 describe visual 0, text 2 visual 1, texts 3, 4 visual 2.
SIM_T2I = torch.tensor(
    [
        [0.50, 0.10, 0.20],  # t0 (v0): v0 first → rank 1
        [0.90, 0.80, 0.30],  # t1 (v0): v0 first → rank 1
        [0.70, 0.30, 0.60],  # t2 (v1): v0, v2, v1 → rank 3
        [0.10, 0.40, 0.15],  # t3 (v2): v1, v2, v0 → rank 2
        [0.30, 0.20, 0.05],  # t4 (v2): v0, v1, v2 → rank 3
    ]
)
TEXT_TO_VISUAL = torch.tensor([0, 0, 1, 2, 2])
# t2i: ranks 1, 1, 3, 2, 3 → R@1 = 2/5, R@2 = 3/5, R@3 = R@4 = 1.
T2I = {1: 0.4, 2: 0.6, 3: 1.0, 4: 1.0}
# i2t, by columns:
#   v0 [.5, .9, .7, .1, .3]: t1, t2, t0, ... → best own text t1 at rank 1 (its first text t0 only at 3);
#   v1 [.1, .8, .3, .4, .2]: t1, t3, t2, ... → t2 at rank 3;
#   v2 [.2, .3, .6, .15, .05]: t2, t1, t0, t3, t4 → best own text t3 at rank 4.
# R@1 = R@2 = 1/3, R@3 = 2/3, R@4 = 1.
I2T = {1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 4: 1.0}


def test_recall_both_directions_with_several_texts_per_visual() -> None:
    metrics = retrieval_recall(SIM_T2I, TEXT_TO_VISUAL, ks=(1, 2, 3, 4))
    assert metrics.t2i == pytest.approx(T2I)
    assert metrics.i2t == pytest.approx(I2T)
    assert metrics.mean == pytest.approx((sum(T2I.values()) + sum(I2T.values())) / 8)
    assert metrics.as_dict("val/")["val/i2t_r3"] == pytest.approx(2 / 3)


def test_recall_default_ks_and_one_text_per_visual() -> None:
    # Identity-like scores: every text's visual is its best and vice versa, except text 2 ↔ visual 2.
    sim = torch.eye(3) + torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -2.0]])
    metrics = retrieval_recall(sim, torch.tensor([0, 1, 2]))
    assert set(metrics.t2i) == set(metrics.i2t) == {1, 5, 10}
    assert metrics.t2i[1] == pytest.approx(2 / 3) and metrics.i2t[1] == pytest.approx(2 / 3)
    assert metrics.t2i[5] == metrics.i2t[10] == 1.0  # k beyond the candidates counts them all


@pytest.mark.parametrize(
    ("sim", "mapping", "match"),
    [
        (torch.zeros(3, 2), torch.tensor([0, 0, 0]), "no text"),  # visual 1 has no text
        (torch.zeros(3, 2), torch.tensor([0, 1]), r"\[T\] = \[3\]"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), r"\[0, 2\)"),
        (torch.zeros(3), torch.tensor([0, 1, 2]), r"\[T, V\]"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_recall_rejects_malformed_inputs(sim: torch.Tensor, mapping: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        retrieval_recall(sim, mapping)


# (cx, cy, w, h) pairs with IoUs worked out on their corners (x0, y0, x1, y1).
BOXES = [
    # overlapping: [.3,.3,.7,.7] vs [.4,.3,.8,.7]; inter .3×.4 = .12, union .16+.16-.12 = .20 → 0.6
    ((0.5, 0.5, 0.4, 0.4), (0.6, 0.5, 0.4, 0.4), 0.6),
    # nested: [.4,.4,.6,.6] inside [.3,.3,.7,.7]; .04 / .16 → 0.25
    ((0.5, 0.5, 0.2, 0.2), (0.5, 0.5, 0.4, 0.4), 0.25),
    # disjoint: [.1,.1,.3,.3] vs [.7,.7,.9,.9] → 0
    ((0.2, 0.2, 0.2, 0.2), (0.8, 0.8, 0.2, 0.2), 0.0),
    # touching along x = .5: [0,.3,.5,.7] vs [.5,.3,1,.7] → 0
    ((0.25, 0.5, 0.5, 0.4), (0.75, 0.5, 0.5, 0.4), 0.0),
    # identical → 1
    ((0.3, 0.6, 0.2, 0.5), (0.3, 0.6, 0.2, 0.5), 1.0),
    # half, exact in binary: [.25,.375,.75,.625] inside [.25,.25,.75,.75]; .125 / .25 → 0.5
    ((0.5, 0.5, 0.5, 0.25), (0.5, 0.5, 0.5, 0.5), 0.5),
]


def test_grounding_iou_on_center_size_boxes() -> None:
    pred = torch.tensor([p for p, _, _ in BOXES])
    target = torch.tensor([t for _, t, _ in BOXES])
    expected = torch.tensor([iou for _, _, iou in BOXES])
    scores = grounding_scores(pred, target)
    torch.testing.assert_close(scores.iou, expected, atol=1e-6, rtol=0)
    # IoU ≥ 0.5 counts: 0.6, 1.0 and exactly 0.5 → 3 of 6.
    assert scores.accuracy == pytest.approx(0.5)
    assert scores.mean_iou == pytest.approx(2.35 / 6, abs=1e-6)
    assert scores.as_dict() == pytest.approx({"acc@0.5": 0.5, "mean_iou": 2.35 / 6}, abs=1e-6)
    assert grounding_scores(pred, target, threshold=0.55).accuracy == pytest.approx(2 / 6)
    assert grounding_scores(pred, target, threshold=1.0).accuracy == pytest.approx(1 / 6)


def test_grounding_rejects_bad_shapes_and_thresholds() -> None:
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        grounding_scores(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="0 boxes"):
        grounding_scores(torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="threshold"):
        grounding_scores(torch.zeros(1, 4), torch.zeros(1, 4), threshold=0.0)
