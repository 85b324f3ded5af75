"""BERT text encoder (Devlin et al., 2019) via transformers: a local pretrained directory or random init."""

from __future__ import annotations

from typing import ClassVar

from transformers import BertConfig, BertModel, PretrainedConfig

from plugins.text._hf import FamilyTextEncoder, HFArchitectureConfig
from x2vlm_core.plugin_api import FastTokenizer, PluginSpec, hookimpl

__all__ = ["BertText", "BertTextConfig"]


class BertTextConfig(HFArchitectureConfig):
    family: ClassVar[str] = "BERT"


class BertText(FamilyTextEncoder):
    """BERT encoder (transformers, SDPA attention): ids/mask [B, L] -> tokens [B, L, D] (token 0 = [CLS])."""

    plugin, config_class, model_class = "bert", BertConfig, BertModel

    def fresh(self, config: HFArchitectureConfig, tokenizer: FastTokenizer) -> PretrainedConfig:
        return BertConfig(
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


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="bert", config=BertTextConfig, factory=BertText)]
