"""cross_attention decoding: start_decoding + decode against the causal forward; beams share cross keys/values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plugins.fusion.cross_attention import CrossAttentionFusion, CrossAttentionFusionConfig
from x2vlm_core.contracts import VisualMemory
from x2vlm_core.contracts.encoders import KVCache
from x2vlm_core.generation.attention import causal_allowed

WIDTH, HEADS, VISION = 32, 4, 24


@pytest.fixture
def fusion() -> CrossAttentionFusion:
    torch.manual_seed(0)
    config = CrossAttentionFusionConfig(layers=2, width=WIDTH, heads=HEADS, intermediate=48, dropout=0.0, init_std=0.2)
    return CrossAttentionFusion(config, VISION, text=nn.Identity()).eval()  # type: ignore[arg-type]


def _memory() -> VisualMemory:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(3, 6, VISION, generator=g)
    whole = VisualMemory.whole(tokens)
    # one extra segment: a box over patches 1 and 3 of image 2
    cls = torch.cat((whole.cls, torch.randn(1, VISION, generator=g)))
    mask = torch.cat((whole.mask, torch.tensor([[False, True, False, True, False]])))
    return VisualMemory(whole.patches, cls, torch.tensor([0, 1, 2, 2]), mask)


def _text(rows: int, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    text = torch.randn(rows, length, WIDTH, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[1, 5:] = False
    return text, mask


def test_decode_from_an_empty_cache_is_the_causal_forward(fusion: CrossAttentionFusion) -> None:
    memory, segment = _memory(), torch.tensor([3, 0, 2])
    text, mask = _text(3)
    with torch.no_grad():
        full = fusion(text, mask, memory, segment, causal=True).tokens
        out, cache = fusion.decode(text, causal_allowed(mask), fusion.start_decoding(memory, segment))
    torch.testing.assert_close(out.tokens * mask[..., None], full * mask[..., None], atol=1e-5, rtol=1e-5)
    assert cache.length == 7 and cache.segments == 3


def test_beams_read_their_segment_without_copies(fusion: CrossAttentionFusion) -> None:
    memory, segment = _memory(), torch.tensor([3, 1])
    text, mask = _text(4)
    mask[:] = True
    rows = torch.tensor([0, 0, 1, 1])  # two beams per segment, segment-major
    with torch.no_grad():
        per_pair = fusion(text, mask, memory, segment[rows], causal=True).tokens
        cache = fusion.start_decoding(memory, segment)
        grouped, _ = fusion.decode(text, causal_allowed(mask), cache)
    torch.testing.assert_close(grouped.tokens, per_pair, atol=1e-5, rtol=1e-5)
    assert cache.cross_keys[0].shape == (2, HEADS, 6, WIDTH // HEADS)  # per segment, not per beam
    with pytest.raises(ValueError, match="evenly"):
        fusion.decode(text[:3], causal_allowed(mask[:3]), cache)


def test_incremental_decode_and_beam_reordering(fusion: CrossAttentionFusion) -> None:
    memory, segment = _memory(), torch.tensor([0, 2])
    text, mask = _text(2)
    mask[:] = True
    with torch.no_grad():
        full = fusion(text, mask, memory, segment, causal=True).tokens
        out, cache = fusion.decode(text[:, :4], causal_allowed(mask[:, :4]), fusion.start_decoding(memory, segment))
        steps = [out.tokens]
        for t in range(4, 7):
            out, cache = fusion.decode(text[:, t : t + 1], torch.ones(2, 1, t + 1, dtype=torch.bool), cache)
            steps.append(out.tokens)
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
        # keep only row 1 (its segment), twice: the cache follows
        picked = cache.select(torch.tensor([1, 1]), torch.tensor([1]))
        nxt = torch.randn(1, 1, WIDTH).expand(2, 1, WIDTH)
        out, _ = fusion.decode(nxt, torch.ones(2, 1, 8, dtype=torch.bool), picked)
        ref = fusion(torch.cat((text[1:], nxt[:1]), 1), torch.ones(1, 8, dtype=torch.bool), memory, segment[1:],
                     causal=True).tokens[:, -1]
        torch.testing.assert_close(out.tokens[:, 0], ref.expand(2, -1), atol=1e-5, rtol=1e-5)


def test_decode_needs_a_started_cache(fusion: CrossAttentionFusion) -> None:
    text, mask = _text(2)
    with pytest.raises(ValueError, match="start_decoding"):
        fusion.decode(text, causal_allowed(mask), KVCache())
    with pytest.raises(ValueError, match="segments"):
        fusion.start_decoding(_memory(), torch.tensor([0])).select(torch.tensor([0]))
