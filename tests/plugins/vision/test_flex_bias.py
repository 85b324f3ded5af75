"""beit2 `attention: flex`: the relative-position bias inside flex attention is timm's math, keys unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from plugins.vision._flex_bias import FlexBiasAttention, bias_attention
from plugins.vision.beit2 import Beit2Vision, Beit2VisionConfig

TINY = {"width": 32, "depth": 2, "heads": 2, "patch_size": 8, "image_size": 32}


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # timm zero-inits the bias tables: random ones make the bias matter
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_flex_kernel_adds_the_bias_per_head_and_position() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=g) for _ in range(3))
    bias = torch.randn(3, 17, 17, generator=g)
    with torch.no_grad():  # flex attention has no CPU backward; its forward runs eagerly here
        got = bias_attention(q, k, v, bias, compiled=False)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        swapped = bias_attention(q, k, v, bias.transpose(1, 2), compiled=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a transposed (q/kv swapped) bias is not the same attention: the test sees the index order
    assert (swapped - want).abs().max() > 1e-2


def test_flex_model_keeps_timm_keys_and_values() -> None:
    sdpa = randomised(Beit2Vision(Beit2VisionConfig(**TINY)))
    flex = Beit2Vision(Beit2VisionConfig(**TINY, attention="flex"))
    attn = [m for m in flex.modules() if isinstance(m, FlexBiasAttention)]
    assert len(attn) == 2
    assert flex.state_dict().keys() == sdpa.state_dict().keys()
    flex.load_state_dict(sdpa.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(flex(pixels).tokens, sdpa(pixels).tokens)
    # on CPU tensors the blocks keep timm's path, so training works there too
    flex(pixels).tokens.sum().backward()
    assert attn[0].relative_position_bias_table.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention's backward runs on a GPU")
def test_flex_matches_sdpa_with_gradients_on_gpu() -> None:
    sdpa = randomised(Beit2Vision(Beit2VisionConfig(**TINY))).cuda()
    flex = Beit2Vision(Beit2VisionConfig(**TINY, attention="flex")).cuda()
    flex.load_state_dict(sdpa.state_dict())
    pixels = torch.randn(4, 3, 32, 32, device="cuda")
    weight = torch.randn(4, 17, 32, device="cuda")
    for model in (sdpa, flex):
        (model(pixels).tokens * weight).sum().backward()
    torch.testing.assert_close(flex(pixels).tokens, sdpa(pixels).tokens, rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(flex.named_parameters(), sdpa.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4, msg=name)
