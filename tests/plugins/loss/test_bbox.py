"""Box loss: rows used, full-image fusion inputs, L1 + (1 - GIoU) vs a per-box loop, zero boxes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import generalized_box_iou_loss

from plugins.loss import bbox
from plugins.loss.bbox import BboxLoss, BboxLossConfig
from registry import PluginRegistry
from x2vlm_core.contracts import StepState
from x2vlm_core.contracts.factories import KINDS

if TYPE_CHECKING:
    from tests.plugins.loss.conftest import FakeContext


def _scalar_terms(p: list[float], t: list[float]) -> tuple[float, float, float]:
    """(L1 summed over coords, 1 - GIoU, IoU) of two (cx, cy, w, h) boxes by hand."""

    def corners(b: list[float]) -> tuple[float, float, float, float]:
        return b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2

    a, b = corners(p), corners(t)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = p[2] * p[3] + t[2] * t[3] - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return sum(abs(x - y) for x, y in zip(p, t)), 1 - (iou - (hull - union) / hull), iou


def test_config_rejects_unknown_keys_and_registry_builds_it() -> None:
    with pytest.raises(ValidationError):
        BboxLossConfig(weight=2.0)  # type: ignore[call-arg]
    registry = PluginRegistry(KINDS)
    registry.register_module(bbox, "loss.bbox")
    built = registry.build("loss", {"plugin": "bbox", "include_whole_image": True})
    assert isinstance(built, BboxLoss) and built.config.include_whole_image
    assert built.state_dict() == {}  # parameters (box head) live in the model


@pytest.mark.parametrize("include_whole_image", [False, True])
def test_loss_matches_per_box_loop(
    fake_model: FakeContext, make_state: Callable[..., StepState], include_whole_image: bool
) -> None:
    state = make_state(fake_model, n_image=2, n_box=5, n_video=2)
    out = BboxLoss(BboxLossConfig(include_whole_image=include_whole_image))(fake_model, state)
    start, stop = (0 if include_whole_image else 2), 7
    # One fusion call: the pairs' texts with the FULL tokens of their source image, all attended.
    assert len(fake_model.fuse_calls) == 1
    text, text_mask, vision, vision_mask = fake_model.fuse_calls[0]
    batch = state.batch
    torch.testing.assert_close(text, state.text[start:stop])
    torch.testing.assert_close(vision, state.bank[batch.source[start:stop]])
    assert torch.equal(text_mask, batch.text.mask[start:stop]) and bool(vision_mask.all())
    l1s, gious, ious = [], [], []
    with torch.no_grad():
        for r in range(start, stop):
            fused = fake_model.fuse(
                state.text[r : r + 1],
                batch.text.mask[r : r + 1],
                state.bank[int(batch.source[r])][None],
                torch.ones(1, vision.shape[1], dtype=torch.bool),
            )
            pred = fake_model.bbox_head(fused[0, 0]).tolist()
            l1, g, iou = _scalar_terms(pred, batch.boxes[r].tolist())
            l1s.append(l1), gious.append(g), ious.append(iou)
    k = stop - start
    assert out.loss.item() == pytest.approx((sum(l1s) + sum(gious)) / k, rel=1e-5)
    assert out.logs["l1"].item() == pytest.approx(sum(l1s) / k, rel=1e-5)
    assert out.logs["giou"].item() == pytest.approx(sum(gious) / k, rel=1e-5)
    assert out.logs["iou"].item() == pytest.approx(sum(ious) / k, rel=1e-5)
    out.loss.backward()
    assert fake_model.bbox_head[0].weight.grad is not None and state.bank.grad is not None


def test_giou_term_agrees_with_torchvision(
    fake_model: FakeContext, make_state: Callable[..., StepState]
) -> None:
    state = make_state(fake_model, n_image=1, n_box=6, n_video=0)
    out = BboxLoss(BboxLossConfig())(fake_model, state)
    text, text_mask, vision, vision_mask = fake_model.fuse_calls[0]
    with torch.no_grad():
        pred = fake_model.bbox_head(fake_model.fuse(text, text_mask, vision, vision_mask)[:, 0])

    def xyxy(b: torch.Tensor) -> torch.Tensor:
        return torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), dim=-1)

    target = state.batch.boxes[state.batch.box_rows]
    expected = generalized_box_iou_loss(xyxy(pred), xyxy(target), reduction="mean")
    assert out.logs["giou"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_video_rows_are_never_used(fake_model: FakeContext, make_state: Callable[..., StepState]) -> None:
    state = make_state(fake_model, n_image=0, n_box=0, n_video=3)
    out = BboxLoss(BboxLossConfig(include_whole_image=True))(fake_model, state)
    assert fake_model.fuse_calls == [] and out.loss.item() == 0.0


@pytest.mark.parametrize("include_whole_image", [False, True])
def test_zero_boxes_give_zero_loss_on_the_graph(
    fake_model: FakeContext, make_state: Callable[..., StepState], include_whole_image: bool
) -> None:
    state = make_state(fake_model, n_image=0 if include_whole_image else 3, n_box=0, n_video=1)
    out = BboxLoss(BboxLossConfig(include_whole_image=include_whole_image))(fake_model, state)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    assert all(bool(torch.isfinite(v)) for v in out.logs.values())
    out.loss.backward()
    grad = fake_model.bbox_head[0].weight.grad
    assert grad is not None and bool((grad == 0).all())  # head reached (DDP sees it), nothing learned


def test_degenerate_target_boxes_stay_finite(
    fake_model: FakeContext, make_state: Callable[..., StepState]
) -> None:
    boxes = torch.tensor(
        [[0.5, 0.5, 1.0, 1.0], [0.3, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.2], [0.5, 0.5, 1e-9, 1e-9]]
    )
    state = make_state(fake_model, n_image=1, n_box=3, n_video=0, boxes=boxes)
    out = BboxLoss(BboxLossConfig())(fake_model, state)
    assert bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in fake_model.parameters() if p.grad is not None)


def test_forward_has_no_host_device_sync(
    fake_model: FakeContext, make_state: Callable[..., StepState], no_host_sync: Callable[[], object]
) -> None:
    state = make_state(fake_model, visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    with no_host_sync():  # type: ignore[attr-defined]
        out = BboxLoss(BboxLossConfig())(fake_model, state)
        out.loss.backward()
    assert bool(torch.isfinite(out.loss))
