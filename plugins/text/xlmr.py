"""XLM-RoBERTa text encoder (Conneau et al., 2020) via transformers: a local pretrained directory or random init.

X²-VLM's multilingual setting swaps this in for BERT. RoBERTa numbers positions from pad_id + 1, so
`max_positions` usable positions need max_positions + pad_id + 1 embedding rows (514 for XLM-R's 512).
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PretrainedConfig, XLMRobertaConfig, XLMRobertaModel

from plugins.text._hf import FamilyTextEncoder, HFArchitectureConfig, check_architecture
from x2vlm_core.plugin_api import ConfigError, FastTokenizer, PluginSpec, hookimpl

__all__ = ["XlmrText", "XlmrTextConfig"]


class XlmrTextConfig(HFArchitectureConfig):
    family: ClassVar[str] = "XLM-R"


class XlmrText(FamilyTextEncoder):
    """XLM-R encoder (transformers, SDPA attention): ids/mask [B, L] -> tokens [B, L, D] (token 0 = <s>)."""

    plugin, config_class, model_class = "xlmr", XLMRobertaConfig, XLMRobertaModel

    def check_pretrained(self, config: HFArchitectureConfig, hf_config: PretrainedConfig, tokenizer: FastTokenizer) -> None:
        offset = int(hf_config.pad_token_id) + 1
        # positions are checked here: RoBERTa reserves pad_id + 1 extra rows
        check_architecture(hf_config, {**config.architecture(), "max_position_embeddings": None}, self.plugin)
        if config.max_positions is not None and config.max_positions + offset != hf_config.max_position_embeddings:
            raise ConfigError(
                "max_positions", f"xlmr text plugin: the pretrained model has "
                f"{hf_config.max_position_embeddings - offset} usable positions; leave the field unset",
                config.max_positions,
            )
        if tokenizer.pad_id != hf_config.pad_token_id:
            # RoBERTa derives position ids from the pad id, so the two must agree.
            raise ConfigError(
                "pretrained", f"xlmr text plugin: tokenizer pad id {tokenizer.pad_id} != config.json "
                f"pad_token_id {hf_config.pad_token_id}", config.pretrained,
            )

    def fresh(self, config: HFArchitectureConfig, tokenizer: FastTokenizer) -> PretrainedConfig:
        return XLMRobertaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=config.width or 768,
            num_hidden_layers=config.layers or 12,
            num_attention_heads=config.heads or 12,
            intermediate_size=config.intermediate or 3072,
            max_position_embeddings=(config.max_positions or 512) + tokenizer.pad_id + 1,
            type_vocab_size=1,
            layer_norm_eps=1e-5,  # xlm-roberta-base's value (transformers' default is BERT's 1e-12)
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            initializer_range=config.init_std,
            pad_token_id=tokenizer.pad_id,
            bos_token_id=tokenizer.cls_id,
            eos_token_id=tokenizer.sep_id,
        )


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="xlmr", config=XlmrTextConfig, factory=XlmrText)]
