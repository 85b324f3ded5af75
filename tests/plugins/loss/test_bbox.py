"""Box loss: the pairs it asks for (box texts × whole images), L1 + (1 - GIoU) vs a per-box loop, zero boxes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import generalized_box_iou_loss

from plugins.loss import bbox
from plugins.loss.bbox import BboxLoss, BboxLossConfig
from registry import PluginRegistry
from x2vlm_core.contracts import LossPlan, StepInputs
from x2vlm_core.contracts.factories import KINDS


def _scalar_terms(p: list[float], t: list[float]) -> tuple[float, float, float]:
    """(L1 summed over coords, 1 - GIoU, IoU) of two (cx, cy, w, h) boxes by hand."""

    def corners(b: list[float]) -> tuple[float, float, float, float]:
        return b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2

    a, b = corners(p), corners(t)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = p[2] * p[3] + t[2] * t[3] - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return sum(abs(x - y) for x, y in zip(p, t, strict=True)), 1 - (iou - (hull - union) / hull), iou


def test_config_rejects_unknown_keys_and_registry_builds_it() -> None:
    with pytest.raises(ValidationError):
        BboxLossConfig(weight=2.0)  # type: ignore[call-arg]
    registry = PluginRegistry(KINDS)
    registry.register_module(bbox, "loss.bbox")
    built = registry.build("loss", {"plugin": "bbox", "include_whole_image": True})
    assert isinstance(built, BboxLoss) and built.config.include_whole_image
    assert built.state_dict() == {}  # parameters (box head) live in the model


def _boxes(k: int, seed: int = 0) -> torch.Tensor:
    """Stand-in box-head outputs [K, 1, 4] (cx, cy, w, h) in (0, 1), as the sigmoid head gives."""
    return torch.rand((k, 1, 4), generator=torch.Generator().manual_seed(seed)).mul(0.8).add(0.1).requires_grad_(True)


def _run(inputs: StepInputs, include_whole_image: bool = False, seed: int = 0):  # type: ignore[no-untyped-def]
    loss = BboxLoss(BboxLossConfig(include_whole_image=include_whole_image))
    pairs = loss.pairs(inputs, LossPlan())
    pred = _boxes(pairs.text.shape[0], seed)
    return pairs, pred, loss(inputs, LossPlan(), pred)


@pytest.mark.parametrize("include_whole_image", [False, True])
def test_pairs_are_box_texts_with_their_whole_image(
    make_inputs: Callable[..., StepInputs], include_whole_image: bool
) -> None:
    inputs = make_inputs(n_image=2, n_box=5, n_video=2)
    pairs, _, _ = _run(inputs, include_whole_image)
    start, stop = (0 if include_whole_image else 2), 7
    batch = inputs.batch
    assert torch.equal(pairs.text, torch.arange(start, stop))
    # segments after the M concepts are the whole images: the box is predicted on the full image
    assert torch.equal(pairs.segment, batch.size + batch.source[start:stop])
    assert pairs.head == "bbox" and pairs.positions is None


@pytest.mark.parametrize("include_whole_image", [False, True])
def test_loss_matches_per_box_loop(make_inputs: Callable[..., StepInputs], include_whole_image: bool) -> None:
    inputs = make_inputs(n_image=2, n_box=5, n_video=2)
    pairs, pred, out = _run(inputs, include_whole_image)
    l1s, gious, ious = [], [], []
    for i, r in enumerate(pairs.text.tolist()):
        l1, g, iou = _scalar_terms(pred[i, 0].tolist(), inputs.batch.boxes[r].tolist())
        l1s.append(l1), gious.append(g), ious.append(iou)
    k = len(l1s)
    assert out.loss.item() == pytest.approx((sum(l1s) + sum(gious)) / k, rel=1e-5)
    assert out.logs["l1"].item() == pytest.approx(sum(l1s) / k, rel=1e-5)
    assert out.logs["giou"].item() == pytest.approx(sum(gious) / k, rel=1e-5)
    assert out.logs["iou"].item() == pytest.approx(sum(ious) / k, rel=1e-5)
    out.loss.backward()
    assert pred.grad is not None and bool((pred.grad != 0).any())


def test_giou_term_agrees_with_torchvision(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(n_image=1, n_box=6, n_video=0)
    _, pred, out = _run(inputs)

    def xyxy(b: torch.Tensor) -> torch.Tensor:
        return torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), dim=-1)

    target = inputs.batch.boxes[1:7]
    expected = generalized_box_iou_loss(xyxy(pred[:, 0].detach()), xyxy(target), reduction="mean")
    assert out.logs["giou"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_video_rows_are_never_used(make_inputs: Callable[..., StepInputs]) -> None:
    pairs, _, out = _run(make_inputs(n_image=0, n_box=0, n_video=3), include_whole_image=True)
    assert pairs.text.numel() == 0 and out.loss.item() == 0.0


@pytest.mark.parametrize("include_whole_image", [False, True])
def test_zero_boxes_give_zero_loss_on_the_graph(
    make_inputs: Callable[..., StepInputs], include_whole_image: bool
) -> None:
    inputs = make_inputs(n_image=0 if include_whole_image else 3, n_box=0, n_video=1)
    _, pred, out = _run(inputs, include_whole_image)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    assert all(bool(torch.isfinite(v)) for v in out.logs.values())
    out.loss.backward()  # reaches the (empty) head output: DDP sees the head, nothing is learned


def test_degenerate_target_boxes_stay_finite(make_inputs: Callable[..., StepInputs]) -> None:
    boxes = torch.tensor(
        [[0.5, 0.5, 1.0, 1.0], [0.3, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.2], [0.5, 0.5, 1e-9, 1e-9]]
    )
    _, pred, out = _run(make_inputs(n_image=1, n_box=3, n_video=0, boxes=boxes))
    assert bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert bool(torch.isfinite(pred.grad).all())  # type: ignore[arg-type]


def test_pairs_and_loss_have_no_host_device_sync(
    make_inputs: Callable[..., StepInputs], no_host_sync: Callable[[], object]
) -> None:
    inputs = make_inputs(visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    loss = BboxLoss(BboxLossConfig())
    pred = _boxes(4)
    with no_host_sync():  # type: ignore[attr-defined]
        loss.pairs(inputs, LossPlan())
        out = loss(inputs, LossPlan(), pred)
        out.loss.backward()
