"""The image tower of an open_clip model as an X²-VLM vision encoder (open_clip: github.com/mlfoundations/open_clip).

Patch tokens after the tower's final LayerNorm (ln_post), at transformer width; token 0 = mean of the patches.
The CLIP projection (`proj`) is removed: X²-VLM has its own contrastive projections.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from x2vlm_core.plugin_api import (
    PluginSpec,
    VisionEncoder,
    VisionOutput,
    WeightsError,
    hookimpl,
    load_state_file,
    load_state_strict,
)

__all__ = ["OPEN_CLIP_IGNORED_KEYS", "OpenClipVision", "OpenClipVisionConfig", "open_clip_visual_state"]

# The CLIP image projection is not part of the encoder (see module docstring).
OPEN_CLIP_IGNORED_KEYS: tuple[str, ...] = ("proj",)


class OpenClipVisionConfig(BaseModel):
    """Config of the `open_clip` vision plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field("ViT-B-16", description="open_clip architecture name (open_clip.list_models())")
    image_size: int | None = Field(
        None, gt=0, description="input side H = W in pixels; None = the architecture's own"
    )
    pretrained: str | None = Field(
        None, description="local open_clip checkpoint (full CLIP state dict; its `visual.` part is loaded)"
    )


def _import_open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(
            "vision plugin 'open_clip' needs the open_clip package: pip install open_clip_torch"
        ) from error
    return open_clip


def open_clip_visual_state(state: dict[str, Tensor], encoder: OpenClipVision) -> dict[str, Tensor]:
    """Full open_clip CLIP state dict -> the image tower's keys, position embedding resized to `encoder`'s grid.

    Accepts keys with a DDP `module.` prefix (open_clip training checkpoints). Raises WeightsError when
    the state has no `visual.` part.
    """
    from open_clip.model import resize_pos_embed

    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if not any(k.startswith("visual.") for k in state):
        raise WeightsError(
            "open_clip checkpoint has no 'visual.' keys (first keys: "
            f"{', '.join(sorted(state)[:5])}); pass a full open_clip CLIP state dict"
        )
    full = dict(state)
    resize_pos_embed(full, encoder)  # reads encoder.visual.grid_size, rewrites visual.positional_embedding
    return {k[len("visual.") :]: v for k, v in full.items() if k.startswith("visual.")}


class OpenClipVision(VisionEncoder):
    """open_clip image tower: pixels [B, 3, H, W] -> tokens [B, 1+N, D] (transformer width), token 0 = mean of patches."""

    def __init__(self, config: OpenClipVisionConfig) -> None:
        super().__init__()
        open_clip = _import_open_clip()
        from open_clip.transformer import VisionTransformer

        names = open_clip.list_models()
        if config.model_name not in names:
            close = difflib.get_close_matches(config.model_name, names, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise ValueError(f"vision plugin 'open_clip': open_clip has no model {config.model_name!r}{hint}")
        # Patch dropout would change N from step to step; the contract needs every patch token.
        clip = open_clip.create_model(
            config.model_name, pretrained=None, force_image_size=config.image_size, force_patch_dropout=0.0
        )
        visual = clip.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError(
                f"vision plugin 'open_clip': {config.model_name!r} has a {type(visual).__name__} image tower"
                f"{' with attentional pooling' if isinstance(visual, VisionTransformer) else ''}; only plain "
                "ViT towers expose patch tokens (use timm_vit for timm-tower models)"
            )
        visual.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)  # drops proj only
        self.visual = visual
        side_h, side_w = (int(s) for s in visual.image_size)
        if side_h != side_w:
            raise ValueError(f"vision plugin 'open_clip': {config.model_name!r} has a non-square input {visual.image_size}")
        self.config = config
        self.width = int(visual.transformer.width)
        self.grid = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        self.image_size = side_h
        pp = getattr(visual, "preprocess_cfg", {})
        mean, std = pp.get("mean", open_clip.OPENAI_DATASET_MEAN), pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.mean = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.std = (float(std[0]), float(std[1]), float(std[2]))
        if config.pretrained is not None:
            self.load_pretrained(config.pretrained)

    def load_pretrained(self, path: str) -> None:
        """Load the `visual.` part of an open_clip checkpoint strictly (only the CLIP projection may be left over)."""
        state = open_clip_visual_state(load_state_file(path), self)
        report = load_state_strict(
            self.visual, state, source=f"{path} (vision plugin 'open_clip')", allow_unexpected=OPEN_CLIP_IGNORED_KEYS
        )
        self.pretrained_keys = frozenset(f"visual.{k}" for k in report.loaded)

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """The same architecture without the pretrained file (a checkpoint holds the weights)."""
        return {**config, "pretrained": None}

    def forward(self, pixels: Tensor) -> VisionOutput:
        """pixels [B, 3, H, W] (normalised with mean/std) -> VisionOutput tokens [B, 1+N, D]."""
        if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(
                f"vision plugin 'open_clip' expects pixels [B, 3, {self.image_size}, {self.image_size}], "
                f"got {list(pixels.shape)}"
            )
        out = self.visual.forward_intermediates(
            pixels, indices=1, normalize_intermediates=True, intermediates_only=True, output_fmt="NLC"
        )
        patches = out["image_intermediates"][-1]  # [B, N, D] after ln_post, class token split off
        return VisionOutput(tokens=torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1))


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="vision", name="open_clip", config=OpenClipVisionConfig, factory=OpenClipVision)]
