"""timm_vit vision plugin: any timm ViT-family model, prefix tokens dropped, strict timm checkpoint loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError
from torch import Tensor, nn

import plugins.vision.timm_vit as timm_vit_module
from plugins.vision.timm_vit import TimmVitVision, TimmVitVisionConfig, timm_state_from_checkpoint
from registry import PluginRegistry
from x2vlm_core.checkpoint.weights import WeightsError, load_state_strict
from x2vlm_core.contracts.factories import KINDS

TINY = {"width": 32, "depth": 2, "heads": 2, "patch_size": 8, "image_size": 32}
TIMM_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def tiny(name: str = "vit_base_patch16_224", **changes: object) -> TimmVitVision:
    return TimmVitVision(TimmVitVisionConfig(**{"timm_name": name, **TINY, **changes}))


def randomise(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


def reference_patches(model: nn.Module, pixels: Tensor, prefix: int) -> Tensor:
    """Brute force: timm tokens without the `prefix` leading tokens, final norm applied."""
    x = model.forward_features(pixels)[:, prefix:]
    return x if isinstance(model.fc_norm, nn.Identity) else model.fc_norm(x)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TimmVitVisionConfig(model_name="vit_base_patch16_224")  # type: ignore[call-arg]


def test_registered_plugin() -> None:
    registry = PluginRegistry(KINDS)
    registry.register_module(timm_vit_module, "vision.timm_vit")
    built = registry.build("vision", {"plugin": "timm_vit", **TINY})
    assert isinstance(built, TimmVitVision)


@pytest.mark.parametrize(
    ("name", "prefix", "overrides", "mean"),
    [
        ("vit_base_patch16_224", 1, {}, (0.5, 0.5, 0.5)),
        ("deit_tiny_distilled_patch16_224", 2, {}, (0.485, 0.456, 0.406)),  # [CLS] + distillation token
        ("vit_base_patch16_reg4_gap_256", 4, {}, (0.5, 0.5, 0.5)),  # 4 registers, no [CLS], fc_norm variant
        ("eva02_tiny_patch14_224", 1, {"patch_size": 7, "image_size": 28}, (0.48145466, 0.4578275, 0.40821073)),
    ],
)
def test_forward_drops_prefix_tokens(name: str, prefix: int, overrides: dict[str, int], mean: tuple[float, ...]) -> None:
    model = tiny(name, **overrides).eval()
    side = model.image_size
    pixels = torch.randn(2, 3, side, side)
    tokens = model(pixels).tokens
    assert model.trunk.num_prefix_tokens == prefix
    assert tokens.shape == (2, 1 + 16, 32) and model.grid == (4, 4)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    torch.testing.assert_close(tokens[:, 1:], reference_patches(model.trunk, pixels, prefix))
    assert model.mean == pytest.approx(mean)


def test_attention_pool_head_is_dropped_and_every_parameter_trains() -> None:
    model = tiny("vit_base_patch16_siglip_224")
    assert model.trunk.attn_pool is None
    model(torch.randn(2, 3, 32, 32)).tokens.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_rejects_non_vit_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="not a ViT-family model"):
        TimmVitVision(TimmVitVisionConfig(timm_name="resnet18", image_size=32))
    with pytest.raises(ValueError, match="timm has no model 'vit_bse_patch16_224'; close names: vit_base_patch16_224"):
        tiny("vit_bse_patch16_224")


def test_strict_round_trip() -> None:
    model = tiny().eval()
    randomise(model)
    other = tiny().eval()
    report = load_state_strict(other, model.state_dict(), source="round trip")
    assert report.loaded == frozenset(model.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(pixels).tokens, model(pixels).tokens)


def test_loads_timm_checkpoint_with_classifier(tmp_path: Path) -> None:
    source = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=5, img_size=32, **TIMM_TINY).eval()
    randomise(source)
    path = tmp_path / "deit.pth"
    torch.save(source.state_dict(), path)
    assert {"head.weight", "head_dist.weight"} <= set(source.state_dict())
    model = tiny("deit_tiny_distilled_patch16_224", pretrained=str(path)).eval()
    assert model.pretrained_keys == frozenset(f"trunk.{k}" for k in model.trunk.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels).tokens[:, 1:], reference_patches(source, pixels, 2))


def test_checkpoint_at_another_image_size_resizes_position_embedding(tmp_path: Path) -> None:
    source = timm.create_model("vit_base_patch16_224", num_classes=0, img_size=32, **TIMM_TINY)
    randomise(source)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = tiny(image_size=48, pretrained=str(path)).eval()
    pos = model.trunk.pos_embed.detach()
    assert pos.shape == (1, 1 + 36, 32)
    torch.testing.assert_close(pos[:, 0], source.pos_embed.detach()[:, 0])  # [CLS] position kept
    # the resized grid of a constant-in-space table stays that constant (bicubic interpolation)
    state = source.state_dict()
    state["pos_embed"][:, 1:] = 0.25
    mapped = timm_state_from_checkpoint(state, model.trunk)
    torch.testing.assert_close(mapped["pos_embed"][:, 1:], torch.full((1, 36, 32), 0.25))
    assert model(torch.randn(1, 3, 48, 48)).tokens.shape == (1, 37, 32)


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    wider_mlp = timm.create_model("vit_base_patch16_224", num_classes=0, img_size=32, mlp_ratio=2.0, **TIMM_TINY)
    state = wider_mlp.state_dict()
    state["extra_tokens"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        tiny(pretrained=str(path))
    message = str(error.value)
    assert "unexpected key(s): extra_tokens" in message
    assert "blocks.0.mlp.fc1.weight: file (64, 32) vs model (128, 32)" in message


def test_sincos_position_init_sets_patch_positions_only() -> None:
    cfg = {"timm_name": "vit_base_patch16_224", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1,
           "heads": 2}
    torch.manual_seed(0)
    plain = TimmVitVision(TimmVitVisionConfig(**cfg))
    torch.manual_seed(0)
    sincos = TimmVitVision(TimmVitVisionConfig(**cfg, pos_embed_init="sincos"))
    pos, reference = sincos.trunk.pos_embed[0], plain.trunk.pos_embed[0]
    assert torch.equal(pos[0], reference[0])  # the class-token position keeps timm's init
    codes = pos[1:].detach()
    # timm's 2-D sine-cosine codes: unit amplitude per frequency, a distinct code per patch, row-major
    assert torch.allclose(codes.pow(2).sum(-1), torch.full((16,), 16.0))  # 16 (sin, cos) pairs per code
    assert torch.cdist(codes, codes).add(torch.eye(16)).min() > 0.1
    # row-major: patches 0..3 share grid row 0 (the row-frequency sines), patch 4 starts row 1
    assert torch.equal(codes[0, :8], codes[3, :8]) and not torch.equal(codes[0, :8], codes[4, :8])
    assert pos.requires_grad  # an initialisation, still learned
    with pytest.raises(ValueError, match="pos_embed_init"):
        TimmVitVision(TimmVitVisionConfig(**{**cfg, "timm_name": "vit_base_patch16_rope_224"}, pos_embed_init="sincos"))


def test_jax_weight_init_is_fan_in_scaled() -> None:
    torch.manual_seed(0)
    default = tiny(width=64).trunk.blocks[0].mlp.fc1.weight
    jax = tiny(width=64, weight_init="jax").trunk.blocks[0].mlp.fc1.weight  # 64 -> 256: xavier std 0.079
    assert default.std().item() == pytest.approx(0.02, rel=0.1)
    assert jax.std().item() == pytest.approx((2 / (64 + 256)) ** 0.5, rel=0.1)
