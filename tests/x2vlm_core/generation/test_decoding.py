"""Decoding a real (tiny, random) X²-VLM: cached and recomputed decoding agree exactly, lengths and prompts,
the training objective predicts what decoding predicts, sequence scores match decoding scores."""

from __future__ import annotations

import pytest
import torch

from x2vlm_core.contracts import VisualMemory
from x2vlm_core.generation import (
    DecodeConfig,
    caption_visuals,
    choose_queries,
    generate,
    query_logits,
    sample,
    seq2seq_texts,
    sequence_log_prob,
    target_queries,
)
from x2vlm_core.generation.steppers import CachedStepper, RecomputeStepper, tokenize_prompts
from x2vlm_core.model import X2VLM

PROMPTS = ["a picture of ", "what colour is the star?", "", "two", "a small red circle is"]


def _memory(model: X2VLM, n: int = 5, seed: int = 0) -> VisualMemory:
    pixels = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return VisualMemory.whole(model.encode_images(pixels))


@pytest.mark.parametrize("method,ngram", [("greedy", 0), ("beam", 0), ("beam", 2)])
def test_cached_and_recomputed_decoding_give_identical_outputs(random_model: X2VLM, method: str, ngram: int) -> None:
    memory = _memory(random_model)
    segment = torch.tensor([4, 0, 2, 2, 1])  # out of order, one segment twice
    config = DecodeConfig(method=method, beams=3, min_length=2, max_length=12, no_repeat_ngram=ngram)
    cached = generate(random_model, memory, segment, PROMPTS, config)
    recomputed = generate(random_model, memory, segment, PROMPTS, config.model_copy(update={"cache": False}))
    assert [g.ids for g in cached] == [g.ids for g in recomputed]
    assert [g.text for g in cached] == [g.text for g in recomputed]
    for a, b in zip(cached, recomputed, strict=True):
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        assert a.finished == b.finished and a.length == b.length


def test_the_steppers_give_the_same_logits_step_by_step(random_model: X2VLM) -> None:
    memory = _memory(random_model, 3)
    segment = torch.arange(3)
    prompt, lengths = tokenize_prompts(random_model.tokenizer, PROMPTS[:3], random_model.max_text_len)
    with torch.no_grad():
        cached = CachedStepper(random_model, memory, segment, prompt, lengths)
        recomputed = RecomputeStepper(random_model, memory, segment, prompt, lengths, 8)
        a, b = cached.first(), recomputed.first()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # two beams per segment, then a reordering that drops segment 1
        tokens, parents, segments = torch.tensor([7, 8, 9, 10, 11, 12]), torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(3)
        torch.testing.assert_close(cached.advance(tokens, parents, segments),
                                   recomputed.advance(tokens, parents, segments), atol=1e-5, rtol=1e-5)
        tokens, parents, segments = torch.tensor([13, 14, 15, 16]), torch.tensor([1, 0, 5, 5]), torch.tensor([0, 2])
        torch.testing.assert_close(cached.advance(tokens, parents, segments),
                                   recomputed.advance(tokens, parents, segments), atol=1e-5, rtol=1e-5)


def test_beams_share_their_segments_cross_attention_keys_values(random_model: X2VLM) -> None:
    memory = _memory(random_model, 4)
    prompt, lengths = tokenize_prompts(random_model.tokenizer, ["a picture of "] * 4, random_model.max_text_len)
    stepper = CachedStepper(random_model, memory, torch.arange(4), prompt, lengths)
    with torch.no_grad():
        stepper.first()
        stepper.advance(torch.arange(12) + 5, torch.arange(4).repeat_interleave(3), torch.arange(4))
    cache = stepper.fusion_cache
    assert cache.keys[0].shape[0] == 12  # self-attention: one row per beam
    assert cache.cross_keys[0].shape[0] == 4  # cross-attention: one per image, not per beam
    assert cache.length == prompt.shape[1] + 1


def test_decoding_stops_at_max_length_and_reports_it(random_model: X2VLM) -> None:
    memory = _memory(random_model, 2)
    for method in ("greedy", "beam"):
        out = generate(random_model, memory, torch.arange(2), "a picture of ",
                       DecodeConfig(method=method, min_length=5, max_length=6))
        for g in out:  # a random model does not end within 6 tokens when the end token is banned for 5
            assert g.length <= 6
            assert g.finished == (g.length == 6 and len(g.ids) == 5) or not g.finished
        assert any(not g.finished and g.length == 6 and len(g.ids) == 6 for g in out)


def test_prompt_plus_max_length_must_fit_the_model(random_model: X2VLM) -> None:
    with pytest.raises(ValueError, match="max_text_len"):
        generate(random_model, _memory(random_model, 1), torch.arange(1), "a picture of ", DecodeConfig(max_length=39))


def test_caption_visuals_and_sampling(random_model: X2VLM) -> None:
    pixels = torch.randn(3, 3, 64, 64)
    captions = caption_visuals(random_model, pixels, False, "a picture of ", DecodeConfig(max_length=8))
    assert len(captions) == 3 and all(isinstance(c.text, str) for c in captions)
    assert captions[0].score == pytest.approx(captions[0].log_prob / captions[0].length)
    memory = _memory(random_model, 2)
    drawn = sample(random_model, memory, torch.arange(2), "a picture of ", DecodeConfig(samples=4, max_length=8),
                   torch.Generator().manual_seed(0))
    assert [len(d) for d in drawn] == [4, 4]
    again = sample(random_model, memory, torch.arange(2), "a picture of ", DecodeConfig(samples=4, max_length=8),
                   torch.Generator().manual_seed(0))
    assert [[g.ids for g in d] for d in drawn] == [[g.ids for g in d] for d in again]


def test_the_objective_predicts_each_token_as_decoding_does(random_model: X2VLM) -> None:
    """query_logits at position p equal the decoding logits after the prefix ids[:p] (the recipe's point)."""
    tokenizer = random_model.tokenizer
    ids, mask, plen = seq2seq_texts(tokenizer, ["a picture of "] * 2, ["a large red circle", "two stars"], 40)
    memory = _memory(random_model, 2)
    segment = torch.tensor([1, 0])
    queries, valid = target_queries(mask, plen)
    with torch.no_grad():
        logits = query_logits(random_model, memory, segment, ids, mask, queries)
        for row in range(2):
            for j in range(int(valid[row].sum())):
                p = int(queries[row, j])
                stepper = RecomputeStepper(random_model, memory, segment[row : row + 1], ids[row : row + 1, :p],
                                           torch.tensor([p]), 1)
                torch.testing.assert_close(logits[row, j], stepper.first()[0], atol=1e-5, rtol=1e-5)


def test_sequence_log_prob_matches_the_decoding_score(random_model: X2VLM) -> None:
    memory = _memory(random_model, 3)
    out = generate(random_model, memory, torch.arange(3), "a picture of ",
                   DecodeConfig(method="greedy", min_length=0, max_length=10))
    tokenizer = random_model.tokenizer
    prompt, lengths = tokenize_prompts(tokenizer, ["a picture of "] * 3, 40)
    rows = [prompt[0, : lengths[0]].tolist() + list(g.ids) + ([tokenizer.sep_id] if g.finished else []) for g in out]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
    mask = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    # the decoder bans special tokens, the scorer does not: compare with the bans' mass put back
    with torch.no_grad():
        scored = sequence_log_prob(random_model, memory, torch.arange(3), ids, mask, lengths)
    for g, s in zip(out, scored.tolist(), strict=True):
        assert s <= g.log_prob + 1e-4  # the unbanned distribution gives each token no more than the banned one
        assert s == pytest.approx(g.log_prob, abs=0.5)


def test_choose_queries_picks_a_share_of_the_target_never_the_prompt() -> None:
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, :12], mask[1, :7], mask[2, :5] = True, True, True
    plen = torch.tensor([4, 4, 4])
    queries, valid = choose_queries(mask, plen, 0.5, 3, torch.Generator().manual_seed(0))
    assert queries.shape == (3, 3)
    assert valid.sum(-1).tolist() == [3, 2, 1]  # round(0.5 · 8) capped at 3; round(1.5) = 2; at least 1
    assert bool((queries[valid] >= 4).all())
    for row in range(3):
        picked = queries[row][valid[row]]
        assert bool((picked < mask[row].sum()).all()) and picked.tolist() == sorted(set(picked.tolist()))
    # every target position gets chosen at some seed, the end token included
    seen = set()
    for seed in range(40):
        q, v = choose_queries(mask[2:], plen[2:], 0.5, 3, torch.Generator().manual_seed(seed))
        seen |= set(q[v].tolist())
    assert seen == {4}
    q, v = choose_queries(mask[:1], plen[:1], 1.0, 20)
    assert q[v].tolist() == list(range(4, 12))


def test_seq2seq_texts_layout(random_model: X2VLM) -> None:
    tokenizer = random_model.tokenizer
    ids, mask, plen = seq2seq_texts(tokenizer, ["a picture of "] * 2, ["a red circle", "a blue star at the top"], 40)
    prompt, lengths = tokenize_prompts(tokenizer, ["a picture of "], 40)
    assert plen.tolist() == [int(lengths[0])] * 2
    assert bool((ids[:, : plen[0]] == prompt[0, : lengths[0]]).all())
    ends = mask.sum(-1) - 1
    assert ids.gather(1, ends[:, None])[:, 0].tolist() == [tokenizer.sep_id] * 2
    assert tokenizer.decode(ids[0, plen[0] :].tolist()) == "a red circle"
    with pytest.raises(ValueError, match="prompts for"):
        seq2seq_texts(tokenizer, ["a"], ["b", "c"], 40)
