"""beit2 vision plugin: contract shapes, mean [CLS], strict loads of timm and unilm BEiT-2 files, resizing."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from torch import Tensor, nn

import plugins.vision.beit2 as beit2_module
from plugins.vision.beit2 import Beit2Vision, Beit2VisionConfig, beit2_state_from_checkpoint
from registry import ConfigError, PluginRegistry
from x2vlm_core.checkpoint.weights import WeightsError, load_state_file, load_state_strict
from x2vlm_core.contracts.factories import KINDS

TINY = {"width": 32, "depth": 2, "heads": 2, "patch_size": 8, "image_size": 32}
TIMM_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def tiny(**changes: object) -> Beit2Vision:
    return Beit2Vision(Beit2VisionConfig(**{**TINY, **changes}))


def randomise(model: nn.Module) -> None:
    """timm zero-inits biases, layer scales and position tables; random values make load checks meaningful."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 and p.shape[0] == 32 else 0.0))


def reference_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """Brute force: timm tokens, drop [CLS], final norm (fc_norm when the model pools, else norm already ran)."""
    x = model.forward_features(pixels)[:, 1:]
    if not isinstance(model.fc_norm, nn.Identity):
        x = model.fc_norm(x)
    return torch.cat([x.mean(1, keepdim=True), x], dim=1)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Beit2VisionConfig(widht=32)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Beit2VisionConfig(drop_path=1.5)


def test_registered_and_built_through_registry() -> None:
    registry = PluginRegistry(KINDS)
    registry.register_module(beit2_module, "vision.beit2")
    built = registry.build("vision", {"plugin": "beit2", **TINY})
    assert isinstance(built, Beit2Vision)
    assert registry.get("vision", "beit2").spec.summary.startswith("BEiT-2 ViT")
    with pytest.raises(ConfigError, match="unknown field"):
        registry.build("vision", {"plugin": "beit2", "colour": 1})


def test_forward_shapes_and_mean_token() -> None:
    model = tiny().eval()
    pixels = torch.randn(3, 3, 32, 32)
    tokens = model(pixels).tokens
    assert tokens.shape == (3, 1 + 16, 32)
    assert (model.width, model.grid, model.image_size) == (32, (4, 4), 32)
    assert model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    torch.testing.assert_close(tokens, reference_tokens(model.trunk, pixels))
    # the ViT's own [CLS] output is not among the tokens
    own_cls = model.trunk.fc_norm(model.trunk.forward_features(pixels)[:, :1])
    assert not torch.isclose(tokens, own_cls, atol=1e-4).all(-1).any()


def test_rejects_bad_pixels_and_names() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"expects pixels \[B, 3, 32, 32\]"):
        model(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="close names: beitv2_base_patch16_224"):
        tiny(timm_name="beitv2_base_patch16_22")
    with pytest.raises(ValueError, match="use the timm_vit plugin"):
        tiny(timm_name="vit_base_patch16_224")
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        tiny(image_size=36)


def test_strict_round_trip(tmp_path: Path) -> None:
    model = tiny().eval()
    randomise(model)
    path = tmp_path / "beit2.safetensors"
    save_file(model.state_dict(), str(path))
    other = tiny().eval()
    report = load_state_strict(other, load_state_file(path), source=str(path))
    assert report.loaded == frozenset(model.state_dict()) and not report.missing
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(pixels).tokens, model(pixels).tokens)


def test_loads_timm_checkpoint_with_classifier(tmp_path: Path) -> None:
    source = timm.create_model("beitv2_base_patch16_224", num_classes=7, img_size=32, **TIMM_TINY).eval()
    randomise(source)
    path = tmp_path / "timm_beitv2.pth"
    torch.save({"model": source.state_dict()}, path)
    model = tiny(pretrained=str(path)).eval()
    assert model.pretrained_keys == frozenset(f"trunk.{k}" for k in model.trunk.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels).tokens, reference_tokens(source, pixels))


def unilm_pretraining_state(source: nn.Module) -> dict[str, Tensor]:
    """A state dict named like the original unilm BEiT-2 pretraining checkpoint (shared table, MIM heads)."""
    state = dict(source.state_dict())
    state["rel_pos_bias.relative_position_index"] = source.rel_pos_bias.relative_position_index.clone()
    state["mask_token"] = torch.randn(1, 1, 32)
    state["lm_head.weight"] = torch.randn(64, 32)
    state["lm_head.bias"] = torch.randn(64)
    state["cls_pt_layers.0.norm1.weight"] = torch.randn(32)
    state["cls_pt_layers.0.attn.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    return state


def shared_bias_beit(img_size: int) -> nn.Module:
    # unilm pretraining architecture: one shared relative position table, final norm on every token
    source = timm.create_model(
        "beitv2_base_patch16_224", num_classes=0, global_pool="", img_size=img_size,
        use_rel_pos_bias=False, use_shared_rel_pos_bias=True, **TIMM_TINY,
    ).eval()
    randomise(source)
    return source


def test_state_mapping_expands_shared_table_and_renames_norm() -> None:
    source = shared_bias_beit(32)
    model = tiny()
    mapped = beit2_state_from_checkpoint(unilm_pretraining_state(source), model.trunk)
    shared = source.rel_pos_bias.relative_position_bias_table.detach()
    for i in range(2):
        torch.testing.assert_close(mapped[f"blocks.{i}.attn.relative_position_bias_table"], shared)
    assert "rel_pos_bias.relative_position_bias_table" not in mapped
    assert not any("relative_position_index" in k for k in mapped)
    torch.testing.assert_close(mapped["fc_norm.weight"], source.norm.weight.detach())
    assert "norm.weight" not in mapped
    leftover = set(mapped) - set(model.trunk.state_dict())
    assert leftover == {"mask_token", "lm_head.weight", "lm_head.bias", "cls_pt_layers.0.norm1.weight"}


def test_loads_unilm_pretraining_checkpoint(tmp_path: Path) -> None:
    source = shared_bias_beit(32)
    path = tmp_path / "beitv2_pt.pth"
    torch.save({"model": unilm_pretraining_state(source)}, path)
    model = tiny(pretrained=str(path)).eval()
    assert model.pretrained_keys == frozenset(f"trunk.{k}" for k in model.trunk.state_dict())
    # a per-block copy of the shared table and fc_norm per patch equal the shared-bias network exactly
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels).tokens, reference_tokens(source, pixels))


def table_row(dy: int, dx: int, grid: int) -> int:
    """Row of the relative offset (dy, dx) in a BEiT table for a grid x grid window (brute-force layout)."""
    return (dy + grid - 1) * (2 * grid - 1) + (dx + grid - 1)


@pytest.mark.parametrize("checkpoint", ["timm", "unilm"])
def test_checkpoint_at_another_image_size_resizes_tables(tmp_path: Path, checkpoint: str) -> None:
    # the tiny analogue of loading a 224-px checkpoint (grid 4) into a larger input (grid 6)
    if checkpoint == "timm":
        source = timm.create_model("beitv2_base_patch16_224", num_classes=0, img_size=32, **TIMM_TINY)
        randomise(source)
        state = source.state_dict()
        tables = [state[f"blocks.{i}.attn.relative_position_bias_table"] for i in range(2)]
    else:
        source = shared_bias_beit(32)
        state = unilm_pretraining_state(source)
        tables = [state["rel_pos_bias.relative_position_bias_table"]] * 2
    path = tmp_path / f"{checkpoint}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = tiny(image_size=48, pretrained=str(path)).eval()
    assert model.grid == (6, 6)
    for i, old in enumerate(tables):
        new = model.trunk.blocks[i].attn.relative_position_bias_table.detach()
        assert new.shape == (11 * 11 + 3, 2)
        torch.testing.assert_close(new[-3:], old[-3:])  # [CLS]-to-token, token-to-[CLS], [CLS]-to-[CLS]
        for dy in (-1, 0, 1):  # offsets the geometric resampling keeps on the grid
            for dx in (-1, 0, 1):
                torch.testing.assert_close(new[table_row(dy, dx, 6)], old[table_row(dy, dx, 4)])
    tokens = model(torch.randn(2, 3, 48, 48)).tokens
    assert tokens.shape == (2, 37, 32) and torch.isfinite(tokens).all()


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    deeper = timm.create_model("beitv2_base_patch16_224", num_classes=0, img_size=32, **{**TIMM_TINY, "depth": 3})
    state = deeper.state_dict()
    del state["blocks.0.attn.qkv.weight"]
    path = tmp_path / "deeper.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        tiny(pretrained=str(path))
    message = str(error.value)
    assert "missing key(s): blocks.0.attn.qkv.weight" in message
    assert "blocks.2.attn.qkv.weight" in message and "unexpected" in message
    assert "beit2" in message and str(path) in message


def test_base_size_builds_with_about_86m_parameters() -> None:
    model = Beit2Vision(Beit2VisionConfig())
    count = sum(p.numel() for p in model.parameters())
    assert 85_000_000 < count < 87_000_000
    assert (model.width, model.grid, model.image_size) == (768, (14, 14), 224)
