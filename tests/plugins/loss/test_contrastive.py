"""Contrastive loss: multi-positive loop reference, CLIP equivalence, simulated 2-rank gather, box_pairs off."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from plugins.loss import contrastive
from plugins.loss.contrastive import ContrastiveLoss, ContrastiveLossConfig, alignment_rows, contrastive_terms
from registry import PluginRegistry
from tests.plugins.loss.conftest import with_features
from x2vlm_core.contracts import LossModule, LossPlan, StepInputs, TokenizedText
from x2vlm_core.contracts.factories import KINDS


def _run(inputs: StepInputs):  # type: ignore[no-untyped-def]
    return ContrastiveLoss(ContrastiveLossConfig())(inputs, LossPlan(), None)


def _loop_reference(
    img: torch.Tensor, txt: torch.Tensor, vid: list[int], tid: list[int], temp: float
) -> float:
    """Mean over rows and both directions of -mean_{j positive} log softmax_j(s_i / τ)."""
    m = len(vid)
    total = 0.0
    for a, b in ((img, txt), (txt, img)):
        for i in range(m):
            logits = [float(a[i] @ b[j]) / temp for j in range(m)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(x - top) for x in logits))
            pos = [j for j in range(m) if vid[j] == vid[i] or tid[j] == tid[i]]
            total += -sum(logits[j] - log_z for j in pos) / len(pos)
    return total / (2 * m)


def test_config_rejects_unknown_keys_and_registry_builds_it() -> None:
    with pytest.raises(ValidationError):
        ContrastiveLossConfig(temperature=0.1)  # type: ignore[call-arg]
    registry = PluginRegistry(KINDS)
    registry.register_module(contrastive, "loss.contrastive")
    built = registry.build("loss", {"plugin": "contrastive"})
    assert isinstance(built, ContrastiveLoss) and isinstance(built, LossModule)
    assert built.state_dict() == {}  # the temperature is the model's, not the loss's


def test_multiple_positives_match_loop_reference(
    make_inputs: Callable[..., StepInputs]
) -> None:
    vid = [0, 0, 1, 2, 3, 3, 4, 5]  # two images shared by two pairs each
    tid = [10, 11, 12, 12, 13, 14, 15, 16]  # one caption shared by rows of different images
    state = make_inputs(n_image=3, n_box=4, n_video=1, visual_id=vid, text_id=tid)
    out = _run(state)
    expected = _loop_reference(state.image_feat.detach(), state.text_feat.detach(), vid, tid, 0.07)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert state.image_feat.grad is not None and state.text_feat.grad is not None
    assert set(out.logs) == {"i2t_acc", "t2i_acc", "temperature"}
    assert out.logs["temperature"].item() == pytest.approx(0.07)


def test_unique_ids_equal_clip_loss(make_inputs: Callable[..., StepInputs]) -> None:
    state = make_inputs()
    out = _run(state)
    logits = state.image_feat @ state.text_feat.t() / 0.07
    labels = torch.arange(logits.shape[0])
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    torch.testing.assert_close(out.loss, clip)


def test_accuracy_counts_any_positive(make_inputs: Callable[..., StepInputs]) -> None:
    vid = [0, 0, 1, 2, 3, 4, 5, 6]
    state = make_inputs(visual_id=vid)
    feats = F.normalize(torch.randn(8, 6), dim=-1)
    feats[1] = feats[0]  # rows 0 and 1 share an image: either column counts as a hit
    perfect = with_features(state, feats, feats.clone())
    out = _run(perfect)
    assert out.logs["i2t_acc"].item() == 1.0 and out.logs["t2i_acc"].item() == 1.0
    swapped = with_features(perfect, feats, feats.roll(3, dims=0))
    assert _run(swapped).logs["i2t_acc"].item() < 0.5


def test_two_rank_gather_equals_single_process_on_local_rows(
    make_inputs: Callable[..., StepInputs], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 0's block (fixed, no grad) and this process = rank 1; ids overlap across ranks.
    other_img = F.normalize(torch.randn(5, 6), dim=-1)
    other_txt = F.normalize(torch.randn(5, 6), dim=-1)
    other_vid = torch.tensor([0, 1, 50, 51, 52])
    other_tid = torch.tensor([200, 201, 102, 203, 204])
    local = make_inputs(n_image=3, n_box=3, n_video=0)  # visual_id 0..5, text_id 100..105
    blocks = [
        (local.image_feat, other_img),
        (local.text_feat, other_txt),
        (local.batch.visual_id, other_vid),
        (local.batch.text_id, other_tid),
    ]

    def gather(x: torch.Tensor) -> torch.Tensor:
        for mine, theirs in blocks:
            if x is mine:
                return torch.cat((theirs, x))
        raise AssertionError("gather called on an unexpected tensor")

    monkeypatch.setattr(contrastive, "gather_rows", gather)
    # Two ranks of 5 and 6 rows: this rank divides its sum by (5 + 6) / 2, so that DDP's average is the mean.
    monkeypatch.setattr(contrastive, "shared_denominator", lambda count: (count + 5.0) / 2)
    out = _run(local)
    out.loss.backward()

    # Single process on the concatenated batch; its per-row terms restricted to this rank's rows.
    img_local = local.image_feat.detach().clone().requires_grad_(True)
    txt_local = local.text_feat.detach().clone().requires_grad_(True)
    img_all, txt_all = torch.cat((other_img, img_local)), torch.cat((other_txt, txt_local))
    vid_all = torch.cat((other_vid, local.batch.visual_id))
    tid_all = torch.cat((other_tid, local.batch.text_id))
    positives = (vid_all[:, None] == vid_all[None]) | (tid_all[:, None] == tid_all[None])
    terms = contrastive_terms(img_all, txt_all, img_all, txt_all, positives, torch.tensor(0.07))
    rows = slice(5, 11)
    expected = 0.5 * (terms.i2t[rows].sum() + terms.t2i[rows].sum()) / 5.5
    torch.testing.assert_close(out.loss, expected)
    expected.backward()
    # Gradients reach the local features through both the local rows and the local gathered columns.
    torch.testing.assert_close(local.image_feat.grad, img_local.grad)
    torch.testing.assert_close(local.text_feat.grad, txt_local.grad)
    # Cross-rank positives were used: a loss that ignored them differs.
    assert bool(positives[5:, :5].any())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_stay_finite(
    make_inputs: Callable[..., StepInputs], dtype: torch.dtype
) -> None:
    state = make_inputs(dtype=dtype, temperature=0.001)  # clamp floor: big logits
    out = _run(state)
    assert bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert state.image_feat.grad is not None and bool(torch.isfinite(state.image_feat.grad).all())


def test_forward_has_no_host_device_sync(
    make_inputs: Callable[..., StepInputs], no_host_sync: Callable[[], object]
) -> None:
    state = make_inputs(visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    with no_host_sync():  # type: ignore[attr-defined]
        with pytest.raises(AssertionError, match="sync"):
            torch.ones(1).item()  # the guard itself works
        out = _run(state)
        out.loss.backward()
    assert bool(torch.isfinite(out.loss))


# ------------------------------------------------------------------ box_pairs: false (no multi-grained alignment)
def without_box_rows(inputs: StepInputs) -> tuple[StepInputs, torch.Tensor]:
    """The same step with its box rows removed (n_box = 0), and the kept row indices [K] of the original."""
    b = inputs.batch
    kept = torch.cat((torch.arange(b.n_image), torch.arange(b.n_image + b.n_box, b.size)))
    text = TokenizedText(b.text.ids[kept], b.text.mask[kept], b.text.word_ids[kept])
    batch = replace(b, text=text, source=b.source[kept], boxes=b.boxes[kept], kind=b.kind[kept],
                    visual_id=b.visual_id[kept], text_id=b.text_id[kept], n_box=0)
    return replace(inputs, batch=batch, image_feat=inputs.image_feat[kept], text_feat=inputs.text_feat[kept]), kept


def test_alignment_rows_are_the_whole_image_and_video_rows(make_inputs: Callable[..., StepInputs]) -> None:
    batch = make_inputs(n_image=3, n_box=4, n_video=2).batch
    assert alignment_rows(batch, True) is None
    assert alignment_rows(batch, False).tolist() == [0, 1, 2, 7, 8]  # type: ignore[union-attr]
    assert alignment_rows(make_inputs(n_image=2, n_box=0, n_video=1).batch, False) is None


def test_without_box_pairs_equals_the_loss_on_the_batch_without_its_box_rows(
    make_inputs: Callable[..., StepInputs]
) -> None:
    # ids shared between a box row and a whole-image row: kept rows must not see the box row as a positive
    vid = [0, 1, 2, 0, 1, 5, 6, 7]
    state = make_inputs(n_image=3, n_box=4, n_video=1, visual_id=vid)
    ablated = ContrastiveLoss(ContrastiveLossConfig(box_pairs=False))(state, LossPlan(), None)
    sliced, kept = without_box_rows(state)
    reference = _run(sliced)
    torch.testing.assert_close(ablated.loss, reference.loss)
    assert ablated.loss.item() != pytest.approx(_run(state).loss.item())  # the option changes something
    ablated.loss.backward()
    grad = state.image_feat.grad
    assert grad is not None and float(grad[3:7].abs().sum()) == 0.0  # box rows get no gradient
    assert float(grad[kept].abs().sum()) > 0.0


def test_without_box_pairs_a_batch_of_box_pairs_only_gives_zero_not_nan(
    make_inputs: Callable[..., StepInputs]
) -> None:
    state = make_inputs(n_image=0, n_box=4, n_video=0)
    out = ContrastiveLoss(ContrastiveLossConfig(box_pairs=False))(state, LossPlan(), None)
    assert out.loss.item() == 0.0 and all(bool(torch.isfinite(v)) for v in out.logs.values())
    out.loss.backward()  # still part of the graph
