"""Video-text retrieval (MSRVTT-style clips): image retrieval's recipe on F frames per clip (5, k = 32)."""

from __future__ import annotations

from pydantic import Field

from plugins.task.retrieval import RetrievalConfig, RetrievalTask
from x2vlm_core.plugin_api import PluginSpec, VLModel, hookimpl

__all__ = ["VideoRetrievalConfig", "VideoRetrievalTask"]


class VideoRetrievalConfig(RetrievalConfig):
    """The video retrieval recipe (MSRVTT: 5 frames, k = 32)."""

    rerank_k: int = Field(32, ge=0, description="the matching head re-ranks each query's contrastive top-k (0 = off)")
    frames: int = Field(5, gt=0, description="frames sampled per clip (uniformly)")


class VideoRetrievalTask(RetrievalTask):
    """Video-text retrieval (MSRVTT-style clips): as image retrieval, on F frames per clip."""

    name = "video_retrieval"

    video = True

    def __init__(self, config: VideoRetrievalConfig, model: VLModel) -> None:
        super().__init__(config, model)
        self.frames = config.frames
        model.check_frames(config.frames, f"task {self.name!r} (field frames)")


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="video_retrieval", config=VideoRetrievalConfig, factory=VideoRetrievalTask)]
