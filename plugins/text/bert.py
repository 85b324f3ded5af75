"""BERT text encoder (Devlin et al., 2019) via transformers: a local pretrained directory or random init."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from transformers import BertConfig, BertModel

from plugins.text._hf import (
    HFArchitectureConfig,
    HFTextEncoder,
    check_architecture,
    load_hf_weights,
    pretrained_dir,
    save_architecture,
    tokenizer_path,
)
from x2vlm_core.plugin_api import PluginSpec, hookimpl, load_tokenizer

__all__ = ["BertText", "BertTextConfig"]


class BertTextConfig(HFArchitectureConfig):
    family: ClassVar[str] = "BERT"


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
            initializer_range=config.init_std,
        )
        hf_config._attn_implementation = "sdpa"
        super().__init__(BertModel(hf_config, add_pooling_layer=False), tokenizer, frozenset())

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """`pretrained` = config.json + tokenizer written to `asset_dir`, `weights: false` (exact architecture)."""
        return {**config, "pretrained": save_architecture(self, asset_dir), "tokenizer": None, "weights": False}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="bert", config=BertTextConfig, factory=BertText)]
