"""Attribute mAP (ties as one block) and top-1 accuracy, overall and per group, against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from x2vlm_core.evaluation.attributes import attribute_scores, average_precision

# 5 objects × 5 attributes: red, blue, small, large, striped.
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.3, 0.6, 0.5],
        [0.8, 0.7, 0.5, 0.2, 0.4],
        [0.6, 0.6, 0.5, 0.6, 0.3],
        [0.7, 0.2, 0.1, 0.9, 0.2],
        [0.2, 0.3, 0.5, 0.1, 0.1],
    ]
)
LABELS = torch.tensor(
    [
        [1, 0, 0, 1, 0],  # red, large
        [0, 1, 1, 0, 0],  # blue, small
        [1, 0, 1, 0, 0],  # red, small
        [0, 0, 0, 1, 0],  # large
        [0, 1, 0, 0, 0],  # blue
    ],
    dtype=torch.bool,
)
GROUPS = {"colour": [0, 1], "size": [2, 3], "pattern": [4]}
# AP per column (objects ranked by score, highest first):
#   red   .9+ .8- .7- .6+ .2-             → (1/1 + 2/4) / 2 = 3/4
#   blue  .7+ .6- .3+ .2- .1-             → (1/1 + 2/3) / 2 = 5/6
#   small {.5+ .5+ .5-} .3- .1-           → one tied block of 3 with 2 positives: 2/3 each → 2/3
#                                           (any order inside the block would give 1 or 7/12 instead)
#   large .9+ {.6+ .6-} .2- .1-           → (1/1 + 2/3) / 2 = 5/6
#   striped: no positive → NaN, left out of the mean
AP = [3 / 4, 5 / 6, 2 / 3, 5 / 6]
# Top-1 over all columns: obj0 red ✓ 1; obj1 red ✗ 0; obj2 ties red ✓, blue ✗, large ✗ → 1/3;
# obj3 large ✓ 1; obj4 small ✗ 0 → (1 + 0 + 1/3 + 1 + 0) / 5 = 7/15.
TOP1 = 7 / 15


def test_average_precision_per_attribute() -> None:
    ap = average_precision(SCORES, LABELS)
    assert ap.shape == (5,)
    torch.testing.assert_close(ap[:4], torch.tensor(AP, dtype=torch.float64))
    assert math.isnan(float(ap[4]))


def test_map_and_top1_overall_and_per_group() -> None:
    scores = attribute_scores(SCORES, LABELS, GROUPS)
    assert scores.mean_ap == pytest.approx(sum(AP) / 4)
    assert scores.top1 == pytest.approx(TOP1)
    # colour: mAP (3/4 + 5/6) / 2; top-1 over objects with a colour (0, 1, 2, 4):
    #   obj0 red ✓ 1, obj1 red ✗ 0, obj2 red = blue tie → 1/2, obj4 blue ✓ 1 → 2.5 / 4.
    # size: mAP (2/3 + 5/6) / 2; top-1 over objects with a size (0, 1, 2, 3):
    #   obj0 large ✓, obj1 small ✓, obj2 large ✗, obj3 large ✓ → 3/4.
    assert scores.per_group["colour"] == pytest.approx((19 / 24, 0.625))
    assert scores.per_group["size"] == pytest.approx((0.75, 0.75))
    assert all(math.isnan(v) for v in scores.per_group["pattern"])  # no object is striped
    assert scores.as_dict()["attr_top1/size"] == pytest.approx(0.75)


def test_ties_do_not_depend_on_object_order() -> None:
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(
        average_precision(SCORES[perm], LABELS[perm]), average_precision(SCORES, LABELS), equal_nan=True
    )


def test_objects_without_labels_are_left_out_of_top1() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 0]], dtype=torch.bool)
    result = attribute_scores(scores, labels)
    assert result.top1 == pytest.approx(0.5)  # object 2 has no attribute: not counted
    # Column 0: .9+ .7- .2+ → (1 + 2/3) / 2; column 1 has no positive.
    assert result.mean_ap == pytest.approx(5 / 6)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"\[K, A\]"):
        attribute_scores(SCORES, LABELS[:, :3])
    with pytest.raises(ValueError, match="bool"):
        attribute_scores(SCORES, LABELS.long())
    with pytest.raises(ValueError, match="no positive"):
        attribute_scores(SCORES, torch.zeros_like(LABELS))
    with pytest.raises(ValueError, match="NaN"):
        attribute_scores(torch.full_like(SCORES, math.nan), LABELS)
    with pytest.raises(ValueError, match="group 'size'"):
        attribute_scores(SCORES, LABELS, {"size": [2, 7]})
