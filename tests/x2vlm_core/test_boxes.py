"""Box utilities: conversions, clamping, aligned IoU/GIoU against scalar and torchvision references."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, generalized_box_iou

from x2vlm_core.model.boxes import (
    box_area,
    box_iou_aligned,
    clamp_boxes,
    cxcywh_to_xyxy,
    generalized_box_iou_aligned,
    xyxy_to_cxcywh,
)


def _scalar_giou(a: list[float], b: list[float]) -> tuple[float, float]:
    """(IoU, GIoU) of two valid xyxy boxes, by the textbook formulas."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def _random_xyxy(k: int) -> torch.Tensor:
    cxcywh = torch.rand(k, 4) * torch.tensor([1.0, 1.0, 0.5, 0.5]) + torch.tensor([0.0, 0.0, 0.01, 0.01])
    return cxcywh_to_xyxy(cxcywh)


def test_conversions_round_trip_and_known_values() -> None:
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.25, 0.75, 0.5, 0.1]])
    xyxy = cxcywh_to_xyxy(whole)
    torch.testing.assert_close(xyxy, torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.7, 0.5, 0.8]]))
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), whole)
    boxes = torch.rand(5, 7, 4)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


def test_clamp_and_area_treat_inverted_boxes_as_empty() -> None:
    boxes = torch.tensor([[-0.2, 0.1, 1.3, 0.5], [0.6, 0.6, 0.4, 0.9]])
    clamped = clamp_boxes(boxes)
    torch.testing.assert_close(clamped, torch.tensor([[0.0, 0.1, 1.0, 0.5], [0.6, 0.6, 0.6, 0.9]]))
    torch.testing.assert_close(box_area(boxes), torch.tensor([1.5 * 0.4, 0.0]))


def test_aligned_iou_and_giou_match_scalar_and_torchvision() -> None:
    a, b = _random_xyxy(300), _random_xyxy(300)
    iou, giou = box_iou_aligned(a, b), generalized_box_iou_aligned(a, b)
    expected = torch.tensor([_scalar_giou(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    torch.testing.assert_close(iou, expected[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(giou, expected[:, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, box_iou(a, b).diagonal(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(giou, generalized_box_iou(a, b).diagonal(), atol=1e-6, rtol=1e-5)
    assert bool((giou <= iou + 1e-6).all()) and bool((giou >= -1).all())


def test_identical_and_disjoint_boxes() -> None:
    a = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.2, 0.2]])
    b = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.8, 0.8, 1.0, 1.0]])
    torch.testing.assert_close(box_iou_aligned(a, b), torch.tensor([1.0, 0.0]))
    # Disjoint: union 0.08, hull 1.0 → GIoU = 0 - 0.92.
    torch.testing.assert_close(generalized_box_iou_aligned(a, b), torch.tensor([1.0, -0.92]))


def test_degenerate_boxes_give_finite_values_and_gradients() -> None:
    a = torch.tensor(
        [[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.6], [0.7, 0.7, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]],
        requires_grad=True,
    )
    b = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.4, 0.4], [0.1, 0.1, 0.2, 0.2], [1.0, 1.0, 1.0, 1.0]])
    iou, giou = box_iou_aligned(a, b), generalized_box_iou_aligned(a, b)
    assert bool(torch.isfinite(iou).all()) and bool(torch.isfinite(giou).all())
    assert bool((iou == 0).all())
    assert bool((giou >= -1).all()) and bool((giou <= 1).all())
    (iou.sum() + giou.sum()).backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())


def test_half_precision_inputs_compute_in_float32() -> None:
    a, b = _random_xyxy(50), _random_xyxy(50)
    for dtype in (torch.float16, torch.bfloat16):
        out = generalized_box_iou_aligned(a.to(dtype), b.to(dtype))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, generalized_box_iou_aligned(a.to(dtype).float(), b.to(dtype).float()))
