"""Matching loss: hard-negative sampling, the pairs it asks for, per-pair reference, no NaN in corner cases,
box_pairs off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from plugins.loss import matching
from plugins.loss.matching import MatchingLoss, MatchingLossConfig, sample_hard_negatives
from registry import PluginRegistry
from tests.plugins.loss.test_contrastive import without_box_rows
from x2vlm_core.contracts import LossPlan, StepInputs
from x2vlm_core.contracts.factories import KINDS


def _loss() -> MatchingLoss:
    return MatchingLoss(MatchingLossConfig())


def _fused(inputs: StepInputs, seed: int = 0) -> torch.Tensor:
    """Stand-in ITM logits [3M, 1, 2] for the loss's pairs (the fusion itself is tested elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((3 * inputs.batch.size, 1, 2), generator=g).requires_grad_(True)


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


def test_pairs_are_positives_then_hard_negative_texts_then_hard_negative_concepts(
    make_inputs: Callable[..., StepInputs]
) -> None:
    inputs = make_inputs(visual_id=[0, 1, 1, 2, 3, 4, 5, 6])
    torch.manual_seed(3)
    pairs = _loss().pairs(inputs, LossPlan())
    torch.manual_seed(3)
    b = inputs.batch
    neg = sample_hard_negatives(inputs.image_feat, inputs.text_feat, b.visual_id, b.text_id, inputs.temperature)
    m = b.size
    rows = torch.arange(m)
    assert pairs.head == "itm" and pairs.positions is None
    assert torch.equal(pairs.text, torch.cat((rows, neg.text_for_concept, rows)))
    assert torch.equal(pairs.segment, torch.cat((rows, rows, neg.concept_for_text)))  # segments [0, M) = concepts
    # Rows 1 and 2 share an image: neither may be the other's negative.
    assert int(neg.text_for_concept[1]) != 2 and int(neg.text_for_concept[2]) != 1


def test_loss_matches_per_pair_cross_entropy(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs()
    fused = _fused(inputs)
    out = _loss()(inputs, LossPlan(), fused)
    m = inputs.batch.size
    labels = [1] * m + [0] * (2 * m)
    per_pair = [float(F.cross_entropy(fused[i, 0][None], torch.tensor([labels[i]]))) for i in range(3 * m)]
    assert out.loss.item() == pytest.approx(sum(per_pair) / len(per_pair), rel=1e-5)
    out.loss.backward()
    assert fused.grad is not None
    acc = sum(int(fused[i, 0].argmax()) == labels[i] for i in range(3 * m)) / (3 * m)
    assert out.logs["acc"].item() == pytest.approx(acc)


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
    make_inputs: Callable[..., StepInputs], kwargs: dict[str, object], live_rows: int
) -> None:
    inputs = make_inputs(**kwargs)
    torch.manual_seed(0)
    pairs = _loss().pairs(inputs, LossPlan())
    torch.manual_seed(0)
    b = inputs.batch
    neg = sample_hard_negatives(inputs.image_feat, inputs.text_feat, b.visual_id, b.text_id, inputs.temperature)
    assert b.size + int(neg.text_valid.sum() + neg.concept_valid.sum()) == live_rows
    fused = _fused(inputs)
    out = _loss()(inputs, LossPlan(), fused)
    assert bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert bool(torch.isfinite(fused.grad).all())  # type: ignore[arg-type]
    if live_rows == b.size:  # only positives: loss = mean CE against label 1
        expected = F.cross_entropy(fused[: b.size, 0], torch.ones(b.size, dtype=torch.long))
        torch.testing.assert_close(out.loss.detach(), expected.detach())
        assert bool((fused.grad[b.size :] == 0).all())  # type: ignore[index]
    else:  # the one negative of rows 0-6 is row 7
        assert bool((neg.text_for_concept[:7] == 7).all()) and bool((neg.concept_for_text[:7] == 7).all())
        assert torch.equal(pairs.text[b.size : b.size + 7], torch.full((7,), 7))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.07, 0.001])
def test_half_precision_features_sample_valid_negatives(
    make_inputs: Callable[..., StepInputs], dtype: torch.dtype, temperature: float
) -> None:
    inputs = make_inputs(dtype=dtype, temperature=temperature)
    # Near-duplicate features with τ at its floor: positives would take all the softmax mass in
    # a naive sampler (underflow → all-zero rows → NaN); excluded before the softmax here.
    feats = inputs.image_feat.detach()
    inputs = StepInputs(inputs.batch, feats, feats, inputs.temperature, inputs.tokenizer)
    m = inputs.batch.size
    for seed in range(5):
        torch.manual_seed(seed)
        pairs = _loss().pairs(inputs, LossPlan())
        assert bool((pairs.text[m : 2 * m] != torch.arange(m)).all()), f"positive sampled, {dtype} seed {seed}"
        out = _loss()(inputs, LossPlan(), _fused(inputs, seed).to(dtype))
        assert bool(torch.isfinite(out.loss)), f"NaN/inf loss for {dtype} at seed {seed}"


def test_pairs_and_loss_have_no_host_device_sync(
    make_inputs: Callable[..., StepInputs], no_host_sync: Callable[[], object]
) -> None:
    inputs = make_inputs(visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    fused = _fused(inputs)
    with no_host_sync():  # type: ignore[attr-defined]
        _loss().pairs(inputs, LossPlan())
        out = _loss()(inputs, LossPlan(), fused)
        out.loss.backward()


# ------------------------------------------------------------------ box_pairs: false (no multi-grained alignment)
def test_without_box_pairs_matches_only_whole_visual_rows(make_inputs: Callable[..., StepInputs]) -> None:
    vid = [0, 1, 2, 0, 1, 5, 6, 7]  # box rows 3, 4 share images with rows 0, 1
    inputs = make_inputs(n_image=3, n_box=4, n_video=1, visual_id=vid)
    sliced, kept = without_box_rows(inputs)
    ablated = MatchingLoss(MatchingLossConfig(box_pairs=False))
    torch.manual_seed(5)
    pairs = ablated.pairs(inputs, LossPlan())
    torch.manual_seed(5)
    reference = _loss().pairs(sliced, LossPlan())
    # the same sampling on the kept rows, in the original batch's row numbers
    assert torch.equal(pairs.text, kept[reference.text]) and torch.equal(pairs.segment, kept[reference.segment])
    assert not set(pairs.text.tolist()) & {3, 4, 5, 6} and not set(pairs.segment.tolist()) & {3, 4, 5, 6}
    fused = _fused(sliced)
    torch.testing.assert_close(ablated(inputs, LossPlan(), fused).loss, _loss()(sliced, LossPlan(), fused).loss)


def test_without_box_pairs_a_batch_of_box_pairs_only_asks_nothing(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(n_image=0, n_box=4, n_video=0)
    ablated = MatchingLoss(MatchingLossConfig(box_pairs=False))
    pairs = ablated.pairs(inputs, LossPlan())
    assert pairs.text.numel() == 0 and pairs.segment.numel() == 0
    fused = torch.zeros((0, 1, 2), requires_grad=True)
    out = ablated(inputs, LossPlan(), fused)
    assert out.loss.item() == 0.0 and bool(torch.isfinite(out.logs["acc"]))
