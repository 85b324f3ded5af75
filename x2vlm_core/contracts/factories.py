"""How the core builds plugins: the kinds, and the keyword arguments it injects into each kind's factory.

A plugin's factory is called as `factory(config, **injected)`, where `config` is an instance of the
plugin's own pydantic config model and `injected` are the already-built pieces below (nothing else).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from x2vlm_core.contracts.encoders import FusionEncoder, TextEncoder, VideoEncoder, VisionEncoder
from x2vlm_core.contracts.tasks import TaskModule, VLModel

__all__ = ["INJECTED", "KINDS", "DataFactory", "FusionFactory", "TaskFactory", "VideoFactory"]

KINDS: tuple[str, ...] = ("vision", "video", "text", "fusion", "loss", "data", "task")

# kind → names of the keyword arguments its factory receives (kinds not listed receive none).
INJECTED: dict[str, tuple[str, ...]] = {
    "video": ("vision",),
    "fusion": ("vision_width", "text"),
    "data": ("rank", "world_size"),
    "task": ("model",),
}


class VideoFactory(Protocol):
    """video: wraps (and shares, without registering it as a sub-module) the built vision encoder."""

    def __call__(self, config: BaseModel, *, vision: VisionEncoder) -> VideoEncoder: ...


class FusionFactory(Protocol):
    """fusion: `vision_width` = Dv of the keys/values; `text` = the built text encoder (e.g. to copy layers)."""

    def __call__(self, config: BaseModel, *, vision_width: int, text: TextEncoder) -> FusionEncoder: ...


class DataFactory(Protocol):
    """data: `rank`/`world_size` of this process; a source yields only its share (ranks × DataLoader workers).
    Both default to 0 and 1 when a source is built outside training (evaluation, `x2vlm data`)."""

    def __call__(self, config: BaseModel, *, rank: int = 0, world_size: int = 1) -> object: ...


class TaskFactory(Protocol):
    """task: `model` = the model to fine-tune (size the heads to it; do not keep it as a sub-module)."""

    def __call__(self, config: BaseModel, *, model: VLModel) -> TaskModule: ...
