"""BERT text encoder (Devlin et al., 2019) via transformers: a local pretrained directory or random init."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import BertConfig, BertModel

from plugins.text._hf import (
    HFTextEncoder,
    check_architecture,
    load_hf_weights,
    pretrained_dir,
    save_architecture,
    tokenizer_path,
)
from registry import PluginSpec, hookimpl
from x2vlm_core.tokenizer import load_tokenizer

__all__ = ["BertText", "BertTextConfig"]


class BertTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pretrained: str | None = Field(
        None, description="local HF BERT directory (config.json, model.safetensors or pytorch_model.bin, "
        "tokenizer files); unset = random init",
    )
    tokenizer: str | None = Field(
        None, description="random init only: tokenizer dir / vocab.txt; the vocabulary size comes from it",
    )
    layers: int | None = Field(None, gt=0, description="transformer layers (unset: config.json, or 12)")
    width: int | None = Field(None, gt=0, description="hidden width D (unset: config.json, or 768)")
    heads: int | None = Field(None, gt=0, description="attention heads (unset: config.json, or 12)")
    intermediate: int | None = Field(None, gt=0, description="FFN width (unset: config.json, or 3072)")
    max_positions: int | None = Field(None, gt=0, description="position embeddings (unset: config.json, or 512)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="hidden and attention dropout")
    weights: bool = Field(
        True, description="with `pretrained`: load its weights (false = its architecture and tokenizer "
        "only, random init; what checkpoints record, since they hold the weights)",
    )

    @model_validator(mode="after")
    def _source(self) -> BertTextConfig:
        if self.pretrained is None and self.tokenizer is None:
            raise ValueError("set `pretrained` (a local HF BERT directory) or `tokenizer` (for random init)")
        if self.pretrained is not None and self.tokenizer is not None:
            raise ValueError("`tokenizer` is for random init only; a pretrained directory brings its own")
        if self.pretrained is None and not self.weights:
            raise ValueError("`weights: false` only applies to a `pretrained` directory")
        width, heads = self.width or 768, self.heads or 12
        if self.pretrained is None and width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        return self

    def architecture(self) -> dict[str, int | None]:
        """HF config attribute → value set here (None = unset)."""
        return {
            "num_hidden_layers": self.layers,
            "hidden_size": self.width,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "max_position_embeddings": self.max_positions,
        }


class BertText(HFTextEncoder):
    """BERT encoder (transformers, SDPA attention): ids/mask [B, L] -> tokens [B, L, D] (token 0 = [CLS])."""

    def __init__(self, config: BertTextConfig) -> None:
        if config.pretrained is not None:
            directory = pretrained_dir(config.pretrained, "bert")
            hf_config = BertConfig.from_pretrained(str(directory))
            check_architecture(hf_config, config.architecture(), "bert")
            hf_config.hidden_dropout_prob = hf_config.attention_probs_dropout_prob = config.dropout
            hf_config._attn_implementation = "sdpa"
            model = BertModel(hf_config, add_pooling_layer=False)
            loaded = load_hf_weights(model, directory) if config.weights else frozenset()
            super().__init__(model, load_tokenizer(directory), loaded)
            return
        assert config.tokenizer is not None  # the validator guarantees one source
        tokenizer = tokenizer_path(config.tokenizer, "bert")
        hf_config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=config.width or 768,
            num_hidden_layers=config.layers or 12,
            num_attention_heads=config.heads or 12,
            intermediate_size=config.intermediate or 3072,
            max_position_embeddings=config.max_positions or 512,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            pad_token_id=tokenizer.pad_id,
        )
        hf_config._attn_implementation = "sdpa"
        super().__init__(BertModel(hf_config, add_pooling_layer=False), tokenizer, frozenset())

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """`pretrained` = config.json + tokenizer written to `asset_dir`, `weights: false` (exact architecture)."""
        return {**config, "pretrained": save_architecture(self, asset_dir), "tokenizer": None, "weights": False}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="bert", config=BertTextConfig, factory=BertText)]
