"""Any transformers encoder in a local directory (AutoConfig/AutoModel), e.g. a domain-specific BERT."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from transformers import AutoConfig, AutoModel

from plugins.text._hf import HFTextEncoder, load_hf_weights, pretrained_dir, save_architecture
from x2vlm_core.plugin_api import PluginSpec, hookimpl, load_tokenizer

__all__ = ["HFText", "HFTextConfig"]


class HFTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pretrained: str = Field(
        description="local HF encoder directory: config.json, model.safetensors or pytorch_model.bin, and "
        "tokenizer.json / vocab.txt / SentencePiece .model",
    )
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="transformers attention implementation (eager for architectures without SDPA)",
    )
    weights: bool = Field(
        True, description="load the directory's weights (false = its architecture and tokenizer only, random "
        "init; what checkpoints record, since they hold the weights)",
    )


class HFText(HFTextEncoder):
    """A local transformers encoder (AutoModel, pooler dropped): ids/mask [B, L] -> tokens [B, L, D]."""

    def __init__(self, config: HFTextConfig) -> None:
        directory = pretrained_dir(config.pretrained, "hf")
        hf_config = AutoConfig.from_pretrained(str(directory))
        model = AutoModel.from_config(hf_config, attn_implementation=config.attention)
        # x2vlm takes token 0 as the text [CLS]; an unused pooler would only hold untrained-by-us weights.
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        # load_tokenizer rather than AutoTokenizer: transformers 5 maps bare vocab.txt words to [UNK].
        loaded = load_hf_weights(model, directory) if config.weights else frozenset()
        super().__init__(model, load_tokenizer(directory), loaded)

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """`pretrained` = config.json + tokenizer written to `asset_dir`, `weights: false` (exact architecture)."""
        return {**config, "pretrained": save_architecture(self, asset_dir), "weights": False}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="hf", config=HFTextConfig, factory=HFText)]
