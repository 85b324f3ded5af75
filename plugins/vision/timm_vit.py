"""Any timm ViT-family image encoder by name (ViT, DeiT, EVA-02, BEiT, ...; timm: github.com/huggingface/pytorch-image-models).

Prefix tokens ([CLS], distillation, registers) are dropped; token 0 is the mean of the normalised patch tokens.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from timm.layers import build_sincos2d_pos_embed
from torch import Tensor, nn

from plugins.vision._timm_trunk import TimmTrunkVision, TimmVisionConfig
from x2vlm_core.plugin_api import PluginSpec, hookimpl, load_state_file, load_state_strict

__all__ = ["TIMM_HEAD_KEYS", "TimmVitVision", "TimmVitVisionConfig", "timm_state_from_checkpoint"]

# Classifier parts of timm checkpoints the encoder does not use (num_classes=0, no attention pool).
TIMM_HEAD_KEYS: tuple[str, ...] = ("head.", "head_dist.", "attn_pool.")


class TimmVitVisionConfig(TimmVisionConfig):
    """Config of the `timm_vit` vision plugin."""

    timm_name: str = Field(
        "vit_base_patch16_224",
        description="timm model name, e.g. vit_base_patch16_224, deit_small_patch16_224, eva02_tiny_patch14_224",
    )
    pretrained: str | None = Field(
        None, description="local timm checkpoint of this model (.pth/.bin/.safetensors); None = random init"
    )
    weight_init: Literal["timm", "jax"] = Field(
        "timm", description="random init of a ViT (VisionTransformer family): timm's (trunc-normal std 0.02) or "
        "'jax' (xavier-uniform linears, fan-in scaled: narrow from-scratch models learn sooner)",
    )
    pos_embed_init: Literal["timm", "sincos"] = Field(
        "timm", description="initial patch position embeddings of a randomly initialised trunk: timm's "
        "(normal, std 0.02) or 2-D sine-cosine (unit amplitude, still learned); from-scratch models learn "
        "where things are much sooner with sincos",
    )


def timm_state_from_checkpoint(state: dict[str, Tensor], trunk: nn.Module) -> dict[str, Tensor]:
    """Adapt a timm checkpoint to `trunk` with its family's own `checkpoint_filter_fn`.

    The filter (in the module that defines the trunk's class) resizes position embeddings and patch
    embeddings for another image / patch size; families without one get the state unchanged.
    """
    family = importlib.import_module(type(trunk).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return dict(state)
    return dict(filter_fn(dict(state), trunk))


class TimmVitVision(TimmTrunkVision):
    """A timm ViT-family model: pixels [B, 3, H, W] -> tokens [B, 1+N, D], token 0 = mean of the patches."""

    def __init__(self, config: TimmVitVisionConfig) -> None:
        kwargs = {} if config.weight_init == "timm" else {"weight_init": config.weight_init}
        super().__init__(config, plugin="timm_vit", **kwargs)
        self.config = config
        if config.pos_embed_init == "sincos":
            self._sincos_positions()
        if config.pretrained is not None:
            self.load_pretrained(config.pretrained)

    def _sincos_positions(self) -> None:
        pos = getattr(self.trunk, "pos_embed", None)
        if pos is None:
            raise ValueError(f"vision plugin 'timm_vit': {self.config.timm_name} has no absolute position "
                             "embeddings; leave pos_embed_init at 'timm'")
        patches = self.grid[0] * self.grid[1]
        with torch.no_grad():  # prefix-token positions (if the variant has them) keep timm's init
            pos[0, pos.shape[1] - patches :] = build_sincos2d_pos_embed(list(self.grid), dim=pos.shape[-1])

    def load_pretrained(self, path: str) -> None:
        """Load a timm checkpoint strictly; only classifier keys (TIMM_HEAD_KEYS) may be left over."""
        state = timm_state_from_checkpoint(load_state_file(path), self.trunk)
        report = load_state_strict(
            self.trunk, state, source=f"{path} (vision plugin 'timm_vit')", allow_unexpected=TIMM_HEAD_KEYS
        )
        self.pretrained_keys = frozenset(f"trunk.{k}" for k in report.loaded)

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """The same architecture without the pretrained file (a checkpoint holds the weights)."""
        return {**config, "pretrained": None}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="vision", name="timm_vit", config=TimmVitVisionConfig, factory=TimmVitVision)]
