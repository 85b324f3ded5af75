"""Video encoder of X²-VLM (Zeng et al., TPAMI 2023): encode frames with the shared image encoder, add a
learned temporal embedding to every token, average over frames.

The wrapped vision encoder is NOT a sub-module here: X2VLM registers it once, so its weights are stored
once and this module's state dict holds only `temporal_embedding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from x2vlm_core.plugin_api import PluginSpec, VideoEncoder, VisionEncoder, VisionOutput, hookimpl

__all__ = ["FrameMeanVideo", "FrameMeanVideoConfig", "resize_temporal_embedding"]


class FrameMeanVideoConfig(BaseModel):
    """Config of the `frame_mean` video plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_frames: int = Field(8, gt=0, description="most frames F per clip (rows of the temporal embedding)")


def resize_temporal_embedding(table: Tensor, frames: int) -> Tensor:
    """temporal embedding [1, F_old, 1, D] -> [1, frames, 1, D].

    Fewer frames keep the first rows; more frames interpolate linearly along time with the end rows
    aligned (row 0 and the last row are kept exactly).
    """
    if table.dim() != 4 or table.shape[0] != 1 or table.shape[2] != 1:
        raise ValueError(f"temporal_embedding must have shape [1, F, 1, D], got {list(table.shape)}")
    old = table.shape[1]
    if frames == old:
        return table.clone()
    if frames < old:
        return table[:, :frames].clone()
    rows = table[0, :, 0, :].t().unsqueeze(0)  # [1, D, F_old]
    grown = nn.functional.interpolate(rows.float(), size=frames, mode="linear", align_corners=True)
    return grown.to(table.dtype)[0].t().reshape(1, frames, 1, -1)


class FrameMeanVideo(VideoEncoder):
    """Frames [B, F, 3, H, W] -> tokens [B, 1+N, D]: shared image encoder + temporal embedding, mean over F."""

    def __init__(self, config: FrameMeanVideoConfig, vision: VisionEncoder) -> None:
        super().__init__()
        # Stored outside nn.Module's registry on purpose (see module docstring).
        object.__setattr__(self, "_vision", vision)
        self.config = config
        self.max_frames = config.max_frames
        self.width = vision.width
        self.grid = vision.grid
        self.image_size = vision.image_size
        self.temporal_embedding = nn.Parameter(torch.zeros(1, config.max_frames, 1, vision.width))
        nn.init.trunc_normal_(self.temporal_embedding, std=0.02)

    @property
    def vision(self) -> VisionEncoder:  # type: ignore[override]
        """The shared image encoder (owned and registered by the model, not by this module)."""
        vision: VisionEncoder = self.__dict__["_vision"]
        return vision

    def forward(self, frames: Tensor) -> VisionOutput:
        """frames [B, F, 3, H, W] (normalised like images) -> VisionOutput tokens [B, 1+N, D]."""
        if frames.dim() != 5:
            raise ValueError(f"video plugin 'frame_mean' expects frames [B, F, 3, H, W], got {list(frames.shape)}")
        b, f = frames.shape[:2]
        if f > self.max_frames:
            raise ValueError(
                f"video plugin 'frame_mean': clip has {f} frames but max_frames is {self.max_frames}; "
                "sample fewer frames or raise max_frames"
            )
        tokens = self.vision(frames.flatten(0, 1)).tokens  # one pass over all B·F frames: [B·F, 1+N, D]
        tokens = tokens.unflatten(0, (b, f)) + self.temporal_embedding[:, :f]  # [B, F, 1+N, D]
        patches = tokens[:, :, 1:].mean(dim=1)  # [B, N, D]
        return VisionOutput(tokens=torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1))

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A checkpoint trained with another frame count loads by truncating / interpolating along time.
        key = prefix + "temporal_embedding"
        table = state_dict.get(key)
        if isinstance(table, Tensor) and table.dim() == 4 and table.shape[1] != self.max_frames:
            state_dict[key] = resize_temporal_embedding(table, self.max_frames)  # type: ignore[index]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="video", name="frame_mean", config=FrameMeanVideoConfig, factory=FrameMeanVideo)]
