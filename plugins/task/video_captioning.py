"""Video captioning (MSRVTT-style clips): the image captioning recipe on F frames per clip.

Clips [F, 3, H, W] are sampled uniformly to `frames` frames (checked against the model's video plugin) and
encoded by the video plugin; everything else (left-to-right MLM, SCST, decoding, BLEU-4 / CIDEr-D over all
references) is plugins/task/captioning.py's.
"""

from __future__ import annotations

from pydantic import Field

from plugins.task.captioning import CaptioningConfig, CaptioningTask
from x2vlm_core.plugin_api import PluginSpec, VLModel, hookimpl

__all__ = ["VideoCaptioningConfig", "VideoCaptioningTask"]


class VideoCaptioningConfig(CaptioningConfig):
    """The video captioning recipe: the captioning fields plus frames per clip."""

    prompt: str = Field("a video of ", description="text every caption continues (not scored)")
    frames: int = Field(3, gt=0, description="frames sampled per clip (uniformly)")


class VideoCaptioningTask(CaptioningTask):
    """Captioning of clips: F frames through the model's video plugin, then as image captioning."""

    name = "video_captioning"
    video = True

    def __init__(self, config: VideoCaptioningConfig, model: VLModel) -> None:
        super().__init__(config, model)
        self.frames = config.frames
        model.check_frames(config.frames, f"task {self.name!r} (field frames)")


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="video_captioning", config=VideoCaptioningConfig, factory=VideoCaptioningTask)]
