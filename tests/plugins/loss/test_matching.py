"""Matching loss: hard-negative sampling, one fusion call, loop reference, no NaN in corner cases."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from plugins.loss import matching
from plugins.loss.matching import MatchingLoss, MatchingLossConfig, sample_hard_negatives
from registry import PluginRegistry
from x2vlm_core.contracts import StepState
from x2vlm_core.contracts.factories import KINDS

if TYPE_CHECKING:
    from tests.plugins.loss.conftest import FakeContext


def _loss() -> MatchingLoss:
    return MatchingLoss(MatchingLossConfig())


def test_config_rejects_unknown_keys_and_registry_builds_it() -> None:
    with pytest.raises(ValidationError):
        MatchingLossConfig(negatives=2)  # type: ignore[call-arg]
    registry = PluginRegistry(KINDS)
    registry.register_module(matching, "loss.matching")
    built = registry.build("loss", {"plugin": "matching"})
    assert isinstance(built, MatchingLoss)
    assert built.state_dict() == {}  # parameters (ITM head) live in the model


def test_sampling_follows_softmax_without_positives() -> None:
    feats = F.normalize(torch.randn(4, 6), dim=-1)
    text = F.normalize(torch.randn(4, 6), dim=-1)
    vid, tid = torch.tensor([0, 0, 1, 2]), torch.tensor([5, 6, 7, 8])
    temp = torch.tensor(0.5)
    sim = feats @ text.t() / 0.5
    positive = (vid[:, None] == vid[None]) | (tid[:, None] == tid[None])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):  # the public sampler never returns a positive
        neg = sample_hard_negatives(feats, text, vid, tid, temp, generator=g)
        assert not bool(positive[torch.arange(4), neg.text_for_concept].any())
        assert not bool(positive.t()[torch.arange(4), neg.concept_for_text].any())
    # Frequencies over many draws (rows repeated in one call) match softmax over the allowed columns.
    reps = 20000
    for scores, forbidden in ((sim, positive), (sim.t(), positive.t())):
        idx, valid = matching._sample_rows(scores.repeat(reps, 1), forbidden.repeat(reps, 1), g)
        assert bool(valid.all())
        freq = F.one_hot(idx, 4).float().view(reps, 4, 4).mean(0)
        expected = torch.softmax(scores.masked_fill(forbidden, float("-inf")), dim=-1)
        torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_one_fusion_call_with_positives_then_negatives(
    fake_model: FakeContext, make_state: Callable[..., StepState]
) -> None:
    state = make_state(fake_model, visual_id=[0, 1, 1, 2, 3, 4, 5, 6])
    torch.manual_seed(3)
    out = _loss()(fake_model, state)
    torch.manual_seed(3)
    neg = sample_hard_negatives(
        state.image_feat, state.text_feat, state.batch.visual_id, state.batch.text_id, state.temperature
    )
    assert len(fake_model.fuse_calls) == 1
    text, text_mask, vision, vision_mask = fake_model.fuse_calls[0]
    m = state.batch.size
    assert text.shape[0] == vision.shape[0] == 3 * m
    torch.testing.assert_close(text[:m], state.text)
    torch.testing.assert_close(text[m : 2 * m], state.text[neg.text_for_concept])
    torch.testing.assert_close(vision[m : 2 * m], state.visual)
    torch.testing.assert_close(vision[2 * m :], state.visual[neg.concept_for_text])
    assert torch.equal(vision_mask[2 * m :], state.visual_mask[neg.concept_for_text])
    assert torch.equal(text_mask[m : 2 * m], state.batch.text.mask[neg.text_for_concept])
    # Rows 1 and 2 share an image: neither may be the other's negative.
    assert int(neg.text_for_concept[1]) != 2 and int(neg.text_for_concept[2]) != 1
    assert bool(torch.isfinite(out.loss)) and 0.0 <= out.logs["acc"].item() <= 1.0


def test_loss_matches_per_pair_loop(fake_model: FakeContext, make_state: Callable[..., StepState]) -> None:
    state = make_state(fake_model)
    torch.manual_seed(7)
    out = _loss()(fake_model, state)
    torch.manual_seed(7)
    neg = sample_hard_negatives(
        state.image_feat, state.text_feat, state.batch.visual_id, state.batch.text_id, state.temperature
    )
    m, mask = state.batch.size, state.batch.text.mask
    pairs = [(i, i, 1) for i in range(m)]
    pairs += [(i, int(neg.text_for_concept[i]), 0) for i in range(m)]
    pairs += [(int(neg.concept_for_text[j]), j, 0) for j in range(m)]
    losses = []
    with torch.no_grad():
        for concept, text, label in pairs:
            fused = fake_model.fuse(
                state.text[text : text + 1],
                mask[text : text + 1],
                state.visual[concept : concept + 1],
                state.visual_mask[concept : concept + 1],
            )
            logits = fake_model.itm_head(fused[0, 0])
            losses.append(float(F.cross_entropy(logits[None], torch.tensor([label]))))
    assert out.loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    out.loss.backward()
    assert fake_model.itm_head.weight.grad is not None
    assert state.image_feat.grad is None  # sampling similarities carry no gradient


@pytest.mark.parametrize(
    ("kwargs", "live_rows"),
    [
        ({"n_image": 1, "n_box": 0, "n_video": 0}, 1),  # batch of one: only the positive counts
        ({"visual_id": [7] * 8}, 8),  # every pair shares the image: no negatives at all
        ({"text_id": [3] * 8}, 8),  # every pair shares the caption
        ({"visual_id": [0, 0, 0, 0, 0, 0, 0, 1]}, 8 + 2 * 8),  # rows 0-6 have exactly one negative
    ],
)
def test_rows_without_negatives_are_dropped_not_nan(
    fake_model: FakeContext, make_state: Callable[..., StepState], kwargs: dict[str, object], live_rows: int
) -> None:
    state = make_state(fake_model, **kwargs)
    torch.manual_seed(0)
    out = _loss()(fake_model, state)
    torch.manual_seed(0)
    neg = sample_hard_negatives(
        state.image_feat, state.text_feat, state.batch.visual_id, state.batch.text_id, state.temperature
    )
    assert state.batch.size + int(neg.text_valid.sum() + neg.concept_valid.sum()) == live_rows
    assert bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in fake_model.parameters() if p.grad is not None)
    if live_rows == state.batch.size:  # only positives: loss = mean CE against label 1
        fused = fake_model.fuse(state.text, state.batch.text.mask, state.visual, state.visual_mask)
        expected = F.cross_entropy(
            fake_model.itm_head(fused[:, 0]), torch.ones(state.batch.size, dtype=torch.long)
        )
        torch.testing.assert_close(out.loss.detach(), expected.detach())
    else:  # the one negative of rows 0-6 is row 7
        assert bool((neg.text_for_concept[:7] == 7).all()) and bool((neg.concept_for_text[:7] == 7).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.07, 0.001])
def test_half_precision_features_give_finite_loss(
    fake_model: FakeContext, make_state: Callable[..., StepState], dtype: torch.dtype, temperature: float
) -> None:
    model = fake_model.to(dtype)
    state = make_state(model, dtype=dtype)
    # Near-duplicate features with τ at its floor: positives would take all the softmax mass in
    # a naive sampler (underflow → all-zero rows → NaN); excluded before the softmax here.
    feats = state.image_feat.detach()
    state = StepState(**{**state.__dict__, "text_feat": feats, "temperature": torch.tensor(temperature)})
    for seed in range(5):
        torch.manual_seed(seed)
        out = _loss()(model, state)
        assert bool(torch.isfinite(out.loss)), f"NaN/inf loss for {dtype} at seed {seed}"
    out.loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def test_forward_has_no_host_device_sync(
    fake_model: FakeContext, make_state: Callable[..., StepState], no_host_sync: Callable[[], object]
) -> None:
    state = make_state(fake_model, visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    with no_host_sync():  # type: ignore[attr-defined]
        out = _loss()(fake_model, state)
        out.loss.backward()
    assert bool(torch.isfinite(out.loss))
