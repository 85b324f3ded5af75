"""open_clip vision plugin: a tiny registered open_clip config, patch tokens, strict `visual.` loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

import plugins.vision.open_clip as open_clip_module
from plugins.vision.open_clip import OpenClipVision, OpenClipVisionConfig, open_clip_visual_state
from registry import PluginRegistry
from x2vlm_core.checkpoint.weights import WeightsError, load_state_strict
from x2vlm_core.contracts.factories import KINDS

NAME = "x2vlm-vision-test-vit"
DEEPER = "x2vlm-vision-test-vit-deeper"


def _config(layers: int) -> dict[str, object]:
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": layers, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }


@pytest.fixture(scope="module", autouse=True)
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Register tiny architectures through open_clip's public door (a JSON file named after the model)."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, layers in ((NAME, 2), (DEEPER, 3)):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(_config(layers)))
        open_clip.add_model_config(path)


def tiny(**changes: object) -> OpenClipVision:
    return OpenClipVision(OpenClipVisionConfig(**{"model_name": NAME, **changes}))


def full_clip(name: str = NAME) -> nn.Module:
    clip = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return clip.eval()


def open_clip_tokens(visual: nn.Module, pixels: Tensor) -> Tensor:
    """Reference patch tokens through open_clip's own `output_tokens` forward (a different code path)."""
    visual.output_tokens = True
    try:
        _, tokens = visual(pixels)
    finally:
        visual.output_tokens = False
    return tokens


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        OpenClipVisionConfig(timm_name="ViT-B-16")  # type: ignore[call-arg]


def test_registered_plugin() -> None:
    registry = PluginRegistry(KINDS)
    registry.register_module(open_clip_module, "vision.open_clip")
    assert isinstance(registry.build("vision", {"plugin": "open_clip", "model_name": NAME}), OpenClipVision)


def test_forward_shapes_and_tokens_match_open_clip() -> None:
    model = tiny().eval()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = model(pixels).tokens
    assert tokens.shape == (2, 1 + 16, 32)
    assert (model.width, model.grid, model.image_size) == (32, (4, 4), 32)
    assert model.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert model.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    torch.testing.assert_close(tokens[:, 1:], open_clip_tokens(model.visual, pixels))
    assert "visual.proj" not in model.state_dict()  # the CLIP projection is not part of the encoder


def test_image_size_override_and_bad_pixels() -> None:
    model = tiny(image_size=48)
    assert model.grid == (6, 6) and model(torch.randn(1, 3, 48, 48)).tokens.shape == (1, 37, 32)
    with pytest.raises(ValueError, match=r"expects pixels \[B, 3, 48, 48\]"):
        model(torch.randn(1, 3, 32, 32))


def test_unknown_name_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="open_clip has no model 'x2vlm-vision-test-vlt'; close names"):
        OpenClipVision(OpenClipVisionConfig(model_name="x2vlm-vision-test-vlt"))
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        tiny()


def test_strict_round_trip() -> None:
    model = tiny().eval()
    other = tiny().eval()
    report = load_state_strict(other, model.state_dict(), source="round trip")
    assert report.loaded == frozenset(model.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(pixels).tokens, model(pixels).tokens)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_loads_visual_part_of_clip_checkpoint(tmp_path: Path, prefix: str) -> None:
    clip = full_clip()
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in clip.state_dict().items()}}, path)
    model = tiny(pretrained=str(path)).eval()
    assert model.pretrained_keys == frozenset(model.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(pixels).tokens[:, 1:], open_clip_tokens(clip.visual, pixels))


def test_checkpoint_at_another_image_size_resizes_positions(tmp_path: Path) -> None:
    clip = full_clip()
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    model = tiny(image_size=48, pretrained=str(path))
    pos = model.visual.positional_embedding.detach()
    assert pos.shape == (37, 32)
    torch.testing.assert_close(pos[0], clip.visual.positional_embedding.detach()[0])  # class position kept
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    state["visual.positional_embedding"][1:] = 0.5
    mapped = open_clip_visual_state(state, model)
    torch.testing.assert_close(mapped["positional_embedding"][1:], torch.full((36, 32), 0.5))


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "deeper.pt"
    torch.save(full_clip(DEEPER).state_dict(), path)
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): transformer\.resblocks\.2\."):
        tiny(pretrained=str(path))
    text_only = tmp_path / "text.pt"
    torch.save({k: v for k, v in full_clip().state_dict().items() if not k.startswith("visual.")}, text_only)
    with pytest.raises(WeightsError, match="no 'visual.' keys"):
        tiny(pretrained=str(text_only))
