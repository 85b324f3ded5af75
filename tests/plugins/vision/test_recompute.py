"""`recompute: N` (beit2, timm_vit): the first N ViT blocks keep no activations, with the same numbers."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from plugins.vision.beit2 import Beit2Vision, Beit2VisionConfig
from plugins.vision.timm_vit import TimmVitVision, TimmVitVisionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from step_flops import kept_bytes

TINY = {"width": 32, "depth": 3, "heads": 2, "patch_size": 8, "image_size": 32}
PLUGINS = {"beit2": (Beit2Vision, Beit2VisionConfig), "timm_vit": (TimmVitVision, TimmVitVisionConfig)}


def build(plugin: str, **changes: object) -> torch.nn.Module:
    cls, config = PLUGINS[plugin]
    torch.manual_seed(0)
    return cls(config(**TINY, **changes))


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_recomputed_blocks_keep_less_and_give_the_same_gradients(plugin: str) -> None:
    plain, lean = build(plugin), build(plugin, recompute=2)
    assert lean.state_dict().keys() == plain.state_dict().keys()
    lean.load_state_dict(plain.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    weight = torch.randn(2, 17, 32)
    (a, kept_plain), (b, kept_lean) = (kept_bytes(lambda m=m: m(pixels).tokens) for m in (plain, lean))
    torch.testing.assert_close(b, a)
    # two of three blocks keep only their input: well under half of what the plain ViT keeps
    assert kept_lean < 0.6 * kept_plain
    (a * weight).sum().backward()
    (b * weight).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), lean.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_a_copy_recomputes_with_its_own_weights() -> None:
    model = build("timm_vit", recompute=1)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.trunk.blocks[0].mlp.fc2.weight.add_(1.0)
    pixels = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(twin(pixels).tokens, model(pixels).tokens)


def test_more_blocks_than_the_vit_has_is_an_error() -> None:
    with pytest.raises(ValueError, match="recompute 4 is more than the ViT's 3 blocks"):
        build("beit2", recompute=4)
