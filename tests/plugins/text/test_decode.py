"""Incremental decoding of the transformers text plugins (bert, xlmr): TextEncoder.decode against forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plugins.text._hf import HFTextEncoder
from plugins.text.bert import BertText, BertTextConfig
from plugins.text.xlmr import XlmrText, XlmrTextConfig
from x2vlm_core.generation.attention import causal_allowed

TINY = {"layers": 2, "width": 32, "heads": 4, "intermediate": 48, "max_positions": 40, "dropout": 0.0}
TEXTS = ["a red circle on the left of a blue square", "two green triangles", "the yellow star"]


def _encoders(wordpiece_dir: Path, sentencepiece_dir: Path) -> list[HFTextEncoder]:
    torch.manual_seed(0)
    return [BertText(BertTextConfig(tokenizer=str(wordpiece_dir), **TINY)).eval(),  # type: ignore[arg-type]
            XlmrText(XlmrTextConfig(tokenizer=str(sentencepiece_dir), **TINY)).eval()]  # type: ignore[arg-type]


@pytest.fixture
def encoders(wordpiece_dir: Path, sentencepiece_dir: Path) -> list[HFTextEncoder]:
    return _encoders(wordpiece_dir, sentencepiece_dir)


def test_full_decode_is_the_causal_forward(encoders: list[HFTextEncoder]) -> None:
    for encoder in encoders:
        text = encoder.tokenizer(TEXTS, 40)
        positions = torch.arange(text.ids.shape[1]).expand_as(text.ids)
        with torch.no_grad():
            full = encoder(text.ids, text.mask, causal=True).tokens
            decoded, cache = encoder.decode(text.ids, positions, causal_allowed(text.mask))
        real = text.mask[..., None]
        torch.testing.assert_close(decoded.tokens * real, full * real, atol=1e-5, rtol=1e-5)
        assert cache.length == text.ids.shape[1] and len(cache.keys) == 2
        # not the bidirectional encoding: earlier positions must not see later ones
        assert not torch.allclose(encoder(text.ids, text.mask).tokens[0, 0], full[0, 0], atol=1e-4)


def test_token_by_token_decode_matches_the_full_pass(encoders: list[HFTextEncoder]) -> None:
    for encoder in encoders:
        text = encoder.tokenizer(TEXTS[:1], 40)
        ids, length = text.ids, text.ids.shape[1]
        with torch.no_grad():
            full = encoder(ids, text.mask, causal=True).tokens
            out, cache = encoder.decode(ids[:, :3], torch.arange(3)[None], causal_allowed(text.mask[:, :3]))
            steps = [out.tokens]
            for t in range(3, length):
                out, cache = encoder.decode(ids[:, t : t + 1], torch.tensor([[t]]), torch.ones(1, 1, t + 1, dtype=torch.bool),
                                            cache)
                steps.append(out.tokens)
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_keep_and_positions(encoders: list[HFTextEncoder]) -> None:
    encoder = encoders[1]  # xlmr numbers positions after its pad id: decode must too
    text = encoder.tokenizer(TEXTS[1:2], 40)
    n = text.ids.shape[1]
    with torch.no_grad():
        _, cache = encoder.decode(text.ids, torch.arange(n)[None], causal_allowed(text.mask), keep=2)
        assert cache.length == 2
        # a token placed at a later position (a gap of padding before it) is encoded as at that position
        _, full_cache = encoder.decode(text.ids, torch.arange(n)[None], causal_allowed(text.mask))
        probe = torch.tensor([[text.ids[0, 1]]])
        allowed = torch.zeros(1, 1, n + 1, dtype=torch.bool)
        allowed[0, 0, 0] = allowed[0, 0, n] = True
        late, _ = encoder.decode(probe, torch.tensor([[1]]), allowed, full_cache)
        torch.testing.assert_close(late.tokens[0, 0], encoder(text.ids[:, :2], text.mask[:, :2], causal=True).tokens[0, 1],
                                   atol=1e-5, rtol=1e-5)
