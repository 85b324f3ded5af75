"""frame_mean video plugin: shared image encoder, temporal embedding, mean over frames, frame-count resizing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

import plugins.video.frame_mean as frame_mean_module
from plugins.video.frame_mean import FrameMeanVideo, FrameMeanVideoConfig, resize_temporal_embedding
from plugins.vision.beit2 import Beit2Vision, Beit2VisionConfig
from registry import PluginRegistry
from x2vlm_core.checkpoint.weights import load_state_file, load_state_strict
from x2vlm_core.contracts.factories import KINDS


def tiny_vision() -> Beit2Vision:
    return Beit2Vision(Beit2VisionConfig(width=32, depth=2, heads=2, patch_size=8, image_size=32)).eval()


def video(max_frames: int = 4, vision: Beit2Vision | None = None) -> FrameMeanVideo:
    return FrameMeanVideo(FrameMeanVideoConfig(max_frames=max_frames), vision if vision is not None else tiny_vision())


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        FrameMeanVideoConfig(frames=3)  # type: ignore[call-arg]
    assert FrameMeanVideoConfig().max_frames == 8


def test_registered_plugin_gets_the_vision_injected() -> None:
    registry = PluginRegistry(KINDS)
    registry.register_module(frame_mean_module, "video.frame_mean")
    vision = tiny_vision()
    built = registry.build("video", {"plugin": "frame_mean", "max_frames": 3}, vision=vision)
    assert isinstance(built, FrameMeanVideo) and built.vision is vision


def test_forward_matches_per_frame_brute_force() -> None:
    model = video(max_frames=4)
    frames = torch.randn(2, 3, 3, 32, 32)
    tokens = model(frames).tokens
    assert tokens.shape == (2, 1 + 16, 32)
    assert (model.width, model.grid, model.image_size, model.max_frames) == (32, (4, 4), 32, 4)
    # brute force: each frame alone through the image encoder, its temporal row added, averaged
    per_frame = [model.vision(frames[:, f]).tokens + model.temporal_embedding[0, f] for f in range(3)]
    patches = torch.stack(per_frame, dim=1).mean(dim=1)[:, 1:]
    torch.testing.assert_close(tokens[:, 1:], patches)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))


def test_one_frame_is_the_image_encoding_plus_row_zero() -> None:
    model = video()
    image = torch.randn(2, 3, 32, 32)
    expected = model.vision(image).tokens + model.temporal_embedding[0, 0]
    torch.testing.assert_close(model(image.unsqueeze(1)).tokens, expected)


def test_too_many_frames_and_bad_shape_are_errors() -> None:
    model = video(max_frames=2)
    with pytest.raises(ValueError, match="3 frames but max_frames is 2"):
        model(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expects frames \[B, F, 3, H, W\]"):
        model(torch.randn(1, 3, 32, 32))


def test_vision_is_shared_not_owned() -> None:
    vision = tiny_vision()
    model = video(vision=vision)
    assert list(model.state_dict()) == ["temporal_embedding"]
    assert [name for name, _ in model.named_parameters()] == ["temporal_embedding"]
    assert list(model.children()) == []
    model(torch.randn(1, 2, 3, 32, 32)).tokens.sum().backward()
    assert model.temporal_embedding.grad is not None
    assert all(p.grad is not None for p in vision.parameters())  # gradient reaches the shared weights


def test_strict_round_trip(tmp_path: Path) -> None:
    vision = tiny_vision()
    model = video(vision=vision)
    path = tmp_path / "video.safetensors"
    save_file(model.state_dict(), str(path))
    other = video(vision=vision)
    report = load_state_strict(other, load_state_file(path), source=str(path))
    assert report.loaded == {"temporal_embedding"}
    torch.testing.assert_close(other.temporal_embedding, model.temporal_embedding)


def test_resize_temporal_embedding_by_hand() -> None:
    table = torch.tensor([0.0, 10.0, 20.0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 2).contiguous()
    grown = resize_temporal_embedding(table, 5)
    torch.testing.assert_close(grown[0, :, 0, 0], torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0]))
    assert grown.shape == (1, 5, 1, 2)
    torch.testing.assert_close(resize_temporal_embedding(table, 2)[0, :, 0, 1], torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match=r"\[1, F, 1, D\]"):
        resize_temporal_embedding(torch.zeros(3, 4), 2)


def test_load_state_dict_with_another_frame_count() -> None:
    vision = tiny_vision()
    eight = video(max_frames=8, vision=vision)
    three = video(max_frames=3, vision=vision)
    three.load_state_dict(eight.state_dict())  # strict nn.Module load: truncates
    torch.testing.assert_close(three.temporal_embedding, eight.temporal_embedding[:, :3])
    five = video(max_frames=5, vision=vision)
    five.load_state_dict(three.state_dict())  # interpolates 3 -> 5 rows: ends kept, midpoints averaged
    old, new = three.temporal_embedding.detach()[0, :, 0], five.temporal_embedding.detach()[0, :, 0]
    torch.testing.assert_close(new[0::2], old)
    torch.testing.assert_close(new[1], (old[0] + old[1]) / 2)
    torch.testing.assert_close(new[3], (old[1] + old[2]) / 2)
