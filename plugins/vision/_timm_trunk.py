"""Shared pieces of the timm-based vision plugins (beit2, timm_vit): build a trunk, read its patch tokens.

timm: https://github.com/huggingface/pytorch-image-models
"""

from __future__ import annotations

import difflib
import functools
import types

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from x2vlm_core.plugin_api import VisionEncoder, VisionOutput

__all__ = ["TimmTrunkVision", "TimmVisionConfig", "create_timm_trunk", "mean_token_output", "recompute_blocks",
           "timm_patch_tokens"]


class TimmVisionConfig(BaseModel):
    """Fields shared by the timm-built vision plugins (beit2, timm_vit); each names its own default variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timm_name: str = Field(description="timm model name")
    image_size: int = Field(224, gt=0, description="input side H = W in pixels (a multiple of the patch size)")
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, description="stochastic depth rate of the last block")
    width: int | None = Field(None, gt=0, description="override token width D (None = the variant's)")
    depth: int | None = Field(None, gt=0, description="override number of blocks (None = the variant's)")
    heads: int | None = Field(None, gt=0, description="override attention heads (None = the variant's)")
    patch_size: int | None = Field(None, gt=0, description="override patch side (None = the variant's)")
    pretrained: str | None = Field(None, description="local checkpoint (.pth/.bin/.safetensors); None = random init")
    recompute: int = Field(
        0, ge=0, description="blocks, from the first, whose activations are recomputed in the backward instead of "
        "kept (activation checkpointing: their memory for one more forward of them); 0 = none"
    )


def create_timm_trunk(arch: TimmVisionConfig, plugin: str, **kwargs: object) -> nn.Module:
    """Build `arch.timm_name` with random weights and no classifier (timm never downloads here);
    `kwargs` go to the model's constructor."""
    import timm

    if not timm.is_model(arch.timm_name):
        base = arch.timm_name.split(".")[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ValueError(f"vision plugin {plugin!r}: timm has no model {arch.timm_name!r}{hint}")
    overrides: dict[str, object] = dict(kwargs)
    # Only the overrides a tiny test model needs; a None leaves the variant's own value.
    for timm_arg, value in (
        ("embed_dim", arch.width),
        ("depth", arch.depth),
        ("num_heads", arch.heads),
        ("patch_size", arch.patch_size),
    ):
        if value is not None:
            overrides[timm_arg] = value
    not_vit = (
        f"vision plugin {plugin!r}: timm model {arch.timm_name!r} is not a ViT-family model "
        "(needs img_size, patch_embed and num_prefix_tokens); pick a ViT, DeiT, BEiT or EVA variant"
    )
    try:
        trunk = timm.create_model(
            arch.timm_name,
            pretrained=False,
            num_classes=0,
            img_size=arch.image_size,
            drop_path_rate=arch.drop_path,
            **overrides,
        )
    except TypeError as error:  # e.g. a CNN's constructor has no img_size / embed_dim
        raise ValueError(f"{not_vit} ({error})") from None
    if not hasattr(trunk, "num_prefix_tokens") or not hasattr(trunk, "patch_embed"):
        raise ValueError(not_vit)
    if getattr(trunk, "attn_pool", None) is not None:
        # Attention-pool heads ('map' pooling) pool tokens we do not use; dropping them keeps every
        # parameter on the gradient path. Their checkpoint keys are allowed as unexpected on load.
        trunk.attn_pool = None
    return trunk


def recompute_blocks(trunk: nn.Module, count: int, plugin: str) -> None:
    """Make the first `count` blocks of `trunk` recompute their activations in the backward. Each block's own
    forward is wrapped in place, so its parameters, checkpoint keys and numbers stay exactly as timm made them."""
    blocks = list(getattr(trunk, "blocks", ()))
    if count > len(blocks):
        raise ValueError(f"vision plugin {plugin!r}: recompute {count} is more than the ViT's {len(blocks)} blocks")
    for block in blocks[:count]:
        own = types.MethodType(type(block).forward, block)
        block.forward = functools.partial(checkpoint, own, use_reentrant=False)


def timm_patch_tokens(trunk: nn.Module, pixels: Tensor) -> Tensor:
    """pixels [B, 3, H, W] -> normalised patch tokens [B, N, D] (prefix tokens dropped)."""
    tokens = trunk.forward_features(pixels)  # [B, P+N, D]
    patches = tokens[:, trunk.num_prefix_tokens :]
    # Variants that pool before their final norm (BEiT, EVA: norm = Identity, fc_norm = LayerNorm) get
    # that norm per patch, as X²-VLM does; for the others fc_norm is Identity and norm ran already.
    return trunk.fc_norm(patches)


def mean_token_output(patches: Tensor) -> VisionOutput:
    """patches [B, N, D] -> VisionOutput [B, 1+N, D] with token 0 = mean of the patches."""
    return VisionOutput(tokens=torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1))


def _rgb(values: object, fallback: tuple[float, float, float]) -> tuple[float, float, float]:
    if isinstance(values, (tuple, list)) and len(values) == 3:
        return (float(values[0]), float(values[1]), float(values[2]))
    return fallback


class TimmTrunkVision(VisionEncoder):
    """A timm ViT trunk as a VisionEncoder: pixels [B, 3, H, W] -> tokens [B, 1+N, D] (token 0 = mean of patches)."""

    def __init__(self, arch: TimmVisionConfig, plugin: str, **kwargs: object) -> None:
        super().__init__()
        self.plugin = plugin
        self.trunk = create_timm_trunk(arch, plugin, **kwargs)
        recompute_blocks(self.trunk, arch.recompute, plugin)
        patch = tuple(int(p) for p in self.trunk.patch_embed.patch_size)
        grid = tuple(int(g) for g in self.trunk.patch_embed.grid_size)
        if arch.image_size % patch[0] or arch.image_size % patch[1]:
            raise ValueError(
                f"vision plugin {plugin!r}: image_size {arch.image_size} is not a multiple of the patch size {patch}"
            )
        self.width = int(self.trunk.embed_dim)
        self.grid = (grid[0], grid[1])
        self.image_size = arch.image_size
        cfg = self.trunk.pretrained_cfg
        self.mean = _rgb(cfg.get("mean"), VisionEncoder.mean)
        self.std = _rgb(cfg.get("std"), VisionEncoder.std)

    def forward(self, pixels: Tensor) -> VisionOutput:
        """pixels [B, 3, H, W] (normalised with mean/std) -> VisionOutput tokens [B, 1+N, D]."""
        if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(
                f"vision plugin {self.plugin!r} expects pixels [B, 3, {self.image_size}, {self.image_size}], "
                f"got {list(pixels.shape)}"
            )
        return mean_token_output(timm_patch_tokens(self.trunk, pixels))
