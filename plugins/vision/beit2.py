"""BEiT-2 ViT image encoder built with timm (Peng et al. 2022, "BEiT v2", arXiv:2208.06366), as X²-VLM uses it.

The ViT's own [CLS] is discarded and token 0 is the mean of the normalised patch tokens (X²-VLM code).
Pretrained files: timm-format or original unilm BEiT-2 checkpoints (see `beit2_state_from_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from plugins.vision._flex_bias import use_flex_attention
from plugins.vision._timm_trunk import TimmTrunkVision, TimmVisionConfig
from x2vlm_core.plugin_api import PluginSpec, hookimpl, load_state_file, load_state_strict

__all__ = ["BEIT2_IGNORED_KEYS", "Beit2Vision", "Beit2VisionConfig", "beit2_state_from_checkpoint"]

# Pretraining / classification parts of BEiT-2 checkpoints that the encoder does not use: the
# classifier, the masked-image-modelling head and mask token, and the [CLS]-pretraining branch.
BEIT2_IGNORED_KEYS: tuple[str, ...] = (
    "head.",
    "lm_head.",
    "mask_token",
    "cls_pt_layers.",
    "cls_pt_norm.",
    "cls_pt_fc_norm.",
    "cls_pt_lm_head.",
)

_SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"


class Beit2VisionConfig(TimmVisionConfig):
    """Config of the `beit2` vision plugin."""

    timm_name: str = Field(
        "beitv2_base_patch16_224",
        description="timm BEiT variant (e.g. beitv2_base_patch16_224, beitv2_large_patch16_224)",
    )
    pretrained: str | None = Field(
        None, description="local timm or unilm BEiT-2 checkpoint (.pth/.bin/.safetensors); None = random init"
    )
    attention: Literal["sdpa", "flex"] = Field(
        "sdpa",
        description="attention kernel on a GPU: sdpa (timm's; the learnable relative-position bias is a float "
        "mask, so no flash kernel) or flex (the bias inside torch's compiled flex attention, same math; CPU "
        "tensors keep sdpa, flex has no CPU backward)",
    )


def beit2_state_from_checkpoint(state: dict[str, Tensor], trunk: nn.Module) -> dict[str, Tensor]:
    """Map a BEiT-2 checkpoint (timm or original unilm naming) onto a timm `Beit` trunk's keys and shapes.

    - drops `relative_position_index` buffers (timm rebuilds them);
    - expands a shared `rel_pos_bias` table (unilm pretraining) into every block's own table;
    - renames the pretraining's final `norm.*` to `fc_norm.*` when the trunk normalises with fc_norm
      (both are the last LayerNorm applied to every patch token here);
    - resizes relative position tables, absolute position embeddings and patch embeddings for another
      image / patch size with timm's BEiT `checkpoint_filter_fn`.
    Keys that the trunk does not have are kept, so a strict load can report them.
    """
    from timm.models.beit import checkpoint_filter_fn

    out = {k: v for k, v in state.items() if "relative_position_index" not in k}
    blocks = trunk.blocks
    per_block = [f"blocks.{i}.attn.relative_position_bias_table" for i in range(len(blocks))]
    has_block_tables = getattr(blocks[0].attn, "relative_position_bias_table", None) is not None
    if _SHARED_TABLE in out and trunk.rel_pos_bias is None and has_block_tables:
        shared = out.pop(_SHARED_TABLE)
        for key in per_block:
            if key in out:
                raise ValueError(f"checkpoint has both a shared {_SHARED_TABLE} and a per-block {key}")
            out[key] = shared.clone()
    if not isinstance(trunk.fc_norm, nn.Identity) and "fc_norm.weight" not in out:
        for suffix in ("weight", "bias"):
            if f"norm.{suffix}" in out:
                out[f"fc_norm.{suffix}"] = out.pop(f"norm.{suffix}")
    # timm's filter resolves each table's module by name: only tables the trunk has go through it.
    own = trunk.state_dict()
    known = {k: v for k, v in out.items() if k in own}
    filtered = checkpoint_filter_fn(known, trunk)
    return {**{k: v for k, v in out.items() if k not in own}, **filtered}


class Beit2Vision(TimmTrunkVision):
    """BEiT-2 ViT (timm): pixels [B, 3, H, W] -> tokens [B, 1+N, D], token 0 = mean of the patches."""

    def __init__(self, config: Beit2VisionConfig) -> None:
        import timm

        base = config.timm_name.split(".")[0]
        if timm.is_model(base) and base not in timm.list_models(module="beit"):
            # Checked before building: the key surgery below only knows BEiT checkpoints.
            raise ValueError(
                f"vision plugin 'beit2': timm model {config.timm_name!r} is not a BEiT "
                f"({', '.join(timm.list_models(module='beit'))}); use the timm_vit plugin for other ViTs"
            )
        super().__init__(config, plugin="beit2")
        self.config = config
        if config.attention == "flex":
            use_flex_attention(self.trunk)
        if config.pretrained is not None:
            self.load_pretrained(config.pretrained)

    def load_pretrained(self, path: str) -> None:
        """Load a timm or unilm BEiT-2 checkpoint strictly; only BEIT2_IGNORED_KEYS may be left over."""
        state = beit2_state_from_checkpoint(load_state_file(path), self.trunk)
        report = load_state_strict(self.trunk, state, source=f"{path} (vision plugin 'beit2')",
                                   allow_unexpected=BEIT2_IGNORED_KEYS)
        self.pretrained_keys = frozenset(f"trunk.{k}" for k in report.loaded)

    def state_from_original(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """unilm BEiT-2 keys (as in official X²-VLM `vision_encoder.*`) -> this module's `trunk.*` keys/shapes."""
        return {f"trunk.{k}": v for k, v in beit2_state_from_checkpoint(dict(state), self.trunk).items()}

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """The same architecture without the pretrained file (a checkpoint holds the weights)."""
        return {**config, "pretrained": None}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="vision", name="beit2", config=Beit2VisionConfig, factory=Beit2Vision)]
