"""video_captioning task: frames checked against the model, clips batched and captioned, images refused."""

from __future__ import annotations

import itertools

import pytest
import torch

from plugins.task.video_captioning import VideoCaptioningConfig, VideoCaptioningTask
from tests.x2vlm_core.generation.tiny import synthetic_tokenizer, tiny_model
from x2vlm_core.contracts import Sample
from x2vlm_core.discovery import default_registry
from x2vlm_core.generation import DecodeConfig
from x2vlm_core.model import X2VLM


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> X2VLM:
    return tiny_model(synthetic_tokenizer(tmp_path_factory.mktemp("clip-tokenizer"))).eval()


def _clips(n: int, frames: int = 5) -> list[Sample]:
    source = default_registry().build("data", {"plugin": "synthetic", "kind": "video", "split": "test",
                                               "seed": 1, "frames": frames})
    return list(itertools.islice(iter(source), n))  # type: ignore[call-overload]


def test_frames_are_checked_against_the_video_plugin(model: X2VLM) -> None:
    with pytest.raises(ValueError, match="takes at most 4"):
        VideoCaptioningTask(VideoCaptioningConfig(frames=6), model)


def test_clips_are_sampled_batched_and_captioned(model: X2VLM) -> None:
    task = VideoCaptioningTask(VideoCaptioningConfig(frames=3, decode=DecodeConfig(method="beam", max_length=8)), model)
    image = Sample("i", "t", torch.zeros(3, 64, 64, dtype=torch.uint8), None, ("a picture",))
    stream = itertools.cycle([image, *_clips(3)])
    batch = next(task.batches(stream, model.preprocess(3), 4, torch.Generator().manual_seed(0)))
    assert batch.video and batch.visuals.shape == (4, 3, 3, 64, 64)  # 5-frame clips sampled to 3
    assert all("moves" in refs[0] for refs in batch.references)  # the image was not taken
    model.train()
    loss = task.loss(model, batch).loss
    loss.backward()
    model.zero_grad()
    model.eval()
    assert torch.isfinite(loss)
    metrics = task.evaluate(model, [image, *_clips(4)], 3)
    assert metrics["n"] == 4 and metrics["skipped_records"] == 1
    predictions = task.caption(model, batch.visuals, video=True)
    assert len(predictions) == 4


def test_captioning_refuses_clips_only_sources(model: X2VLM) -> None:
    from plugins.task.captioning import CaptioningConfig, CaptioningTask

    with pytest.raises(ValueError, match="are images with a usable reference"):
        CaptioningTask(CaptioningConfig(), model).evaluate(model, _clips(2), 2)
