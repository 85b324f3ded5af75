"""MLM: which tokens are chosen (k per row, specials, whole words), 80/10/10, loss vs a loop reference,
box_pairs off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from plugins.loss import mlm
from plugins.loss.mlm import MlmLoss, MlmLossConfig, MlmPlan, _random_non_special, mask_tokens
from registry import PluginRegistry
from tests.plugins.loss.conftest import VOCAB
from tests.plugins.loss.test_contrastive import without_box_rows
from x2vlm_core.contracts import LossPlan, StepInputs, TokenizedText
from x2vlm_core.contracts.factories import KINDS

SPECIAL = (0, 1, 2, 3, 4)  # pad, cls, sep, mask, unk
MASK_ID = 3


def _texts(rows: int, length: int, vocab: int, seed: int, max_word: int = 3) -> TokenizedText:
    """[CLS] tokens [SEP] pads, a sprinkling of [UNK]s inside; words of 1..max_word sub-tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros((rows, length), dtype=torch.long)
    word_ids = torch.full((rows, length), -1, dtype=torch.long)
    for r in range(rows):
        n = int(torch.randint(0, length - 1, (1,), generator=g))
        ids[r, 0] = 1
        ids[r, 1 : 1 + n] = torch.randint(5, vocab, (n,), generator=g)
        ids[r, 1 + n] = 2
        word, pos = 0, 1
        while pos < 1 + n:
            size = int(torch.randint(1, max_word + 1, (1,), generator=g))
            word_ids[r, pos : min(pos + size, 1 + n)] = word
            word, pos = word + 1, pos + size
        if n >= 4:  # an [UNK] keeps its word id (like a real tokenizer) but is special
            ids[r, 2] = 4
    return TokenizedText(ids=ids, mask=ids != 0, word_ids=word_ids)


def _candidates(text: TokenizedText) -> torch.Tensor:
    return text.mask & (text.word_ids >= 0) & ~torch.isin(text.ids, torch.tensor(SPECIAL))


def _chosen(masked: mlm.MaskedText, shape: torch.Size) -> torch.Tensor:
    """Token positions [M, L] the layout marks valid; each at most once."""
    hits = torch.zeros(shape, dtype=torch.long).scatter_add(1, masked.positions, masked.valid.long())
    assert int(hits.max()) <= 1, "a position appears twice in the layout"
    return hits.bool()


def test_config_validation_and_registry() -> None:
    with pytest.raises(ValidationError):
        MlmLossConfig(span=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="must be 1"):
        MlmLossConfig(p_mask=0.5, p_random=0.1, p_keep=0.1)
    with pytest.raises(ValidationError):
        MlmLossConfig(max_masks=0)
    registry = PluginRegistry(KINDS)
    registry.register_module(mlm, "loss.mlm")
    built = registry.build("loss", {"plugin": "mlm", "mask_ratio": 0.5, "whole_word": False})
    assert isinstance(built, MlmLoss) and built.config.mask_ratio == 0.5
    assert built.state_dict() == {}  # parameters (MLM head) live in the model


@pytest.mark.parametrize(("ratio", "max_masks", "length"), [(0.4, 12, 30), (0.5, 4, 16), (0.15, 12, 8)])
def test_k_tokens_per_row_and_specials_untouched(ratio: float, max_masks: int, length: int) -> None:
    text = _texts(300, length, vocab=50, seed=1)
    config = MlmLossConfig(mask_ratio=ratio, max_masks=max_masks, whole_word=False)
    masked = mask_tokens(text, SPECIAL, 50, MASK_ID, config, torch.Generator().manual_seed(0))
    assert masked.positions.shape == masked.labels.shape == masked.valid.shape == (300, max_masks)
    candidates = _candidates(text)
    count = candidates.sum(-1)
    expected = [min(max_masks, max(1, round(ratio * int(c)))) if c > 0 else 0 for c in count]
    assert masked.valid.sum(-1).tolist() == expected
    chosen = _chosen(masked, text.ids.shape)
    assert not bool((chosen & ~candidates).any()), "a special or pad token was chosen"
    assert torch.equal(masked.ids[~chosen], text.ids[~chosen])
    assert torch.equal(masked.labels[masked.valid], text.ids.gather(1, masked.positions)[masked.valid])


def test_whole_words_are_chosen_together() -> None:
    text = _texts(400, 24, vocab=50, seed=2)
    config = MlmLossConfig(mask_ratio=0.4, max_masks=12, whole_word=True)
    masked = mask_tokens(text, SPECIAL, 50, MASK_ID, config, torch.Generator().manual_seed(1))
    chosen = _chosen(masked, text.ids.shape)
    candidates = _candidates(text)
    assert not bool((chosen & ~candidates).any())
    total_words = 0
    for r in range(400):
        c = int(candidates[r].sum())
        k = min(12, max(1, round(0.4 * c))) if c else 0
        got = int(chosen[r].sum())
        assert got <= max(k, 3) and (got >= 1) == (c >= 1)  # a first word longer than k is kept whole
        words = {}
        for p in range(24):
            if candidates[r, p]:
                words.setdefault(int(text.word_ids[r, p]), []).append(bool(chosen[r, p]))
        for flags in words.values():
            assert all(flags) or not any(flags), f"row {r}: a word was split {flags}"
        total_words += sum(all(f) for f in words.values())
    assert total_words > 400  # several words per row on average, not just the first


def test_80_10_10_split_and_random_tokens_are_not_special() -> None:
    vocab = 1000
    text = _texts(4000, 32, vocab=vocab, seed=3)
    config = MlmLossConfig(mask_ratio=0.4, max_masks=12, whole_word=False)
    masked = mask_tokens(text, SPECIAL, vocab, MASK_ID, config, torch.Generator().manual_seed(2))
    chosen = _chosen(masked, text.ids.shape)
    n = int(chosen.sum())
    assert n > 20000
    new, old = masked.ids[chosen], text.ids[chosen]
    frac_mask = float((new == MASK_ID).float().mean())
    frac_random = float(((new != MASK_ID) & (new != old)).float().mean())
    frac_keep = float((new == old).float().mean())
    assert frac_mask == pytest.approx(0.8, abs=0.01)
    assert frac_random == pytest.approx(0.1 * (1 - 1 / (vocab - 5)), abs=0.008)
    assert frac_keep == pytest.approx(0.1, abs=0.008)
    assert not bool(torch.isin(new[new != MASK_ID], torch.tensor(SPECIAL)).any())


def test_random_ids_are_uniform_over_non_special() -> None:
    draws = _random_non_special(torch.Size([60000]), 10, (0, 3, 9, 3), torch.device("cpu"), None)
    counts = torch.bincount(draws, minlength=10).float() / 60000
    allowed = [1, 2, 4, 5, 6, 7, 8]
    assert counts[[0, 3, 9]].sum().item() == 0
    torch.testing.assert_close(counts[allowed], torch.full((7,), 1 / 7), atol=0.01, rtol=0)


def test_short_texts_and_empty_rows() -> None:
    ids = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 2, 0, 0, 0, 0], [1, 4, 2, 0, 0, 0]])
    word_ids = torch.tensor([[-1, 0, 0, -1, -1, -1], [-1] * 6, [-1, 0, -1, -1, -1, -1]])
    text = TokenizedText(ids=ids, mask=ids != 0, word_ids=word_ids)
    masked = mask_tokens(text, SPECIAL, 20, MASK_ID, MlmLossConfig(), torch.Generator().manual_seed(0))
    assert masked.positions.shape == (3, 12)  # layout wider than the text: padded, invalid
    assert masked.valid.sum(-1).tolist() == [2, 0, 0]  # whole word of two sub-tokens; nothing else maskable
    assert sorted(masked.positions[0][masked.valid[0]].tolist()) == [1, 2]


def test_plan_masks_the_texts_and_asks_for_the_masked_slots(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(length=12)
    config = MlmLossConfig(max_masks=5)
    torch.manual_seed(11)
    plan = MlmLoss(config).prepare(inputs.batch, inputs.tokenizer)
    torch.manual_seed(11)
    tok = inputs.tokenizer
    special = (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id)
    masked = mask_tokens(inputs.batch.text, special, tok.vocab_size, tok.mask_id, config)
    assert isinstance(plan, MlmPlan) and plan.texts is not None
    assert torch.equal(plan.texts.ids, masked.ids) and torch.equal(plan.texts.mask, inputs.batch.text.mask)
    plan = replace(plan, first_row=inputs.batch.size)  # the step puts the masked copies after the batch's texts
    pairs = MlmLoss(config).pairs(inputs, plan)
    m = inputs.batch.size
    assert torch.equal(pairs.text, m + torch.arange(m)) and torch.equal(pairs.segment, torch.arange(m))
    assert torch.equal(pairs.positions, masked.positions) and pairs.head == "mlm"  # type: ignore[arg-type]


def test_loss_matches_hand_computed_reference(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(length=12)
    config = MlmLossConfig(max_masks=5)
    loss = MlmLoss(config)
    plan = replace(loss.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
    masked = plan.masked  # type: ignore[attr-defined]
    logits = torch.randn((inputs.batch.size, 5, VOCAB), generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    out = loss(inputs, plan, logits)
    losses, hits = [], []
    for r in range(inputs.batch.size):
        for slot, (p, label, v) in enumerate(
            zip(masked.positions[r].tolist(), masked.labels[r].tolist(), masked.valid[r].tolist(), strict=True)
        ):
            if v:
                assert label == int(inputs.batch.text.ids[r, p])
                row = logits[r, slot].detach()
                losses.append(float(F.cross_entropy(row[None], torch.tensor([label]))))
                hits.append(int(row.argmax()) == label)
    assert len(losses) >= inputs.batch.size
    assert out.loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert out.logs["acc"].item() == pytest.approx(sum(hits) / len(hits))
    out.loss.backward()
    assert bool((logits.grad[~masked.valid] == 0).all())  # type: ignore[index]  # invalid slots get no gradient


def test_all_empty_texts_give_zero_loss_with_graph(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs()
    ids = torch.zeros_like(inputs.batch.text.ids)
    ids[:, 0], ids[:, 1] = 1, 2
    empty = TokenizedText(ids=ids, mask=ids != 0, word_ids=torch.full_like(ids, -1))
    inputs = replace(inputs, batch=replace(inputs.batch, text=empty))
    loss = MlmLoss(MlmLossConfig())
    plan = replace(loss.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
    logits = torch.randn((inputs.batch.size, 12, VOCAB)).requires_grad_(True)
    out = loss(inputs, plan, logits)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()


def test_plan_and_loss_have_no_host_device_sync(
    make_inputs: Callable[..., StepInputs], no_host_sync: Callable[[], object]
) -> None:
    inputs = make_inputs(visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    loss = MlmLoss(MlmLossConfig())
    logits = torch.randn((inputs.batch.size, 12, VOCAB)).requires_grad_(True)
    with no_host_sync():  # type: ignore[attr-defined]
        plan = replace(loss.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
        loss.pairs(inputs, plan)
        out = loss(inputs, plan, logits)
        out.loss.backward()


# ------------------------------------------------------------------ box_pairs: false (no multi-grained alignment)
def test_without_box_pairs_masks_and_predicts_only_whole_visual_texts(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(n_image=3, n_box=4, n_video=1, length=12)
    sliced, kept = without_box_rows(inputs)
    config = MlmLossConfig(max_masks=5)
    ablated = MlmLoss(config.model_copy(update={"box_pairs": False}))
    torch.manual_seed(4)
    plan = replace(ablated.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
    torch.manual_seed(4)
    reference = replace(MlmLoss(config).prepare(sliced.batch, sliced.tokenizer), first_row=inputs.batch.size)
    assert isinstance(plan, MlmPlan) and plan.texts is not None and reference.texts is not None
    assert plan.texts.ids.shape[0] == len(kept) == 4  # only the kept rows are copied (and encoded)
    assert torch.equal(plan.texts.ids, reference.texts.ids)
    pairs = ablated.pairs(inputs, plan)
    assert torch.equal(pairs.text, inputs.batch.size + torch.arange(4))
    assert torch.equal(pairs.segment, kept)  # each copy reads its own row's concept, never a box
    logits = torch.randn((4, 5, VOCAB), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ablated(inputs, plan, logits).loss, MlmLoss(config)(sliced, reference, logits).loss)


def test_without_box_pairs_a_batch_of_box_pairs_only_gives_zero(make_inputs: Callable[..., StepInputs]) -> None:
    inputs = make_inputs(n_image=0, n_box=4, n_video=0)
    loss = MlmLoss(MlmLossConfig(box_pairs=False))
    plan = replace(loss.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
    pairs = loss.pairs(inputs, plan)
    assert pairs.text.numel() == 0 and pairs.positions is not None and pairs.positions.shape == (0, 12)
    out = loss(inputs, plan, torch.zeros((0, 12, VOCAB), requires_grad=True))
    assert out.loss.item() == 0.0 and bool(torch.isfinite(out.logs["acc"]))


def test_without_box_pairs_has_no_host_device_sync(
    make_inputs: Callable[..., StepInputs], no_host_sync: Callable[[], object]
) -> None:
    from plugins.loss.contrastive import ContrastiveLoss, ContrastiveLossConfig
    from plugins.loss.matching import MatchingLoss, MatchingLossConfig

    inputs = make_inputs(n_image=3, n_box=4, n_video=1, visual_id=[0, 0, 1, 2, 3, 4, 5, 6])
    loss = MlmLoss(MlmLossConfig(box_pairs=False))
    matching = MatchingLoss(MatchingLossConfig(box_pairs=False))
    with no_host_sync():  # type: ignore[attr-defined]
        plan = replace(loss.prepare(inputs.batch, inputs.tokenizer), first_row=inputs.batch.size)
        loss.pairs(inputs, plan)
        out = loss(inputs, plan, torch.randn((4, 12, VOCAB)).requires_grad_(True))
        matching.pairs(inputs, LossPlan())
        matched = matching(inputs, LossPlan(), torch.randn((12, 1, 2)))
        aligned = ContrastiveLoss(ContrastiveLossConfig(box_pairs=False))(inputs, LossPlan(), None)
        (out.loss + matched.loss + aligned.loss).backward()
