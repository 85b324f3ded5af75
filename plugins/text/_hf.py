"""Shared pieces of the transformers-backed text plugins (bert, xlmr, hf): weight files, key mapping, the module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from x2vlm_core.plugin_api import (
    PACK_HELP,
    ConfigError,
    FastTokenizer,
    KVCache,
    PackMode,
    TextEncoder,
    TextOutput,
    Tokenizer,
    TokenPacking,
    WeightsError,
    attend_cached,
    decode_bert_layers,
    load_state_file,
    load_state_strict,
    load_tokenizer,
)

__all__ = [
    "FamilyTextEncoder",
    "HFArchitectureConfig",
    "HFTextEncoder",
    "check_architecture",
    "hf_state_from_file",
    "load_hf_weights",
    "pretrained_dir",
    "save_architecture",
    "tokenizer_path",
    "weight_files",
]


class HFArchitectureConfig(BaseModel):
    """Fields shared by the BERT-family plugins: a local pretrained directory, or random init from sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: ClassVar[str] = "HF"
    pretrained: str | None = Field(
        None, description="local HF directory (config.json, model.safetensors or pytorch_model.bin, tokenizer "
        "files); unset = random init",
    )
    tokenizer: str | None = Field(
        None, description="random init only: tokenizer dir / vocab.txt / SentencePiece .model; the vocabulary "
        "size comes from it",
    )
    layers: int | None = Field(None, gt=0, description="transformer layers (unset: config.json, or 12)")
    width: int | None = Field(None, gt=0, description="hidden width D (unset: config.json, or 768)")
    heads: int | None = Field(None, gt=0, description="attention heads (unset: config.json, or 12)")
    intermediate: int | None = Field(None, gt=0, description="FFN width (unset: config.json, or 3072)")
    max_positions: int | None = Field(None, gt=0, description="usable positions (unset: config.json, or 512)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="hidden and attention dropout")
    init_std: float = Field(
        0.02, gt=0.0, description="random init only: std of the weight initialisation (HF initializer_range; "
        "0.02 suits width 768, narrow from-scratch models learn sooner near 1/sqrt(width))",
    )
    weights: bool = Field(
        True, description="with `pretrained`: load its weights (false = its architecture and tokenizer "
        "only, random init; what checkpoints record, since they hold the weights)",
    )
    pack: PackMode = Field("cpu", description=PACK_HELP)

    @model_validator(mode="after")
    def _source(self) -> HFArchitectureConfig:
        if self.pretrained is None and self.tokenizer is None:
            raise ValueError(f"set `pretrained` (a local HF {self.family} directory) or `tokenizer` (for random init)")
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


_SINGLE = ("model.safetensors", "pytorch_model.bin")
_INDEXED = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def pretrained_dir(path: str, plugin: str) -> Path:
    """The local HF model directory named by the `pretrained` field, or a ConfigError naming it."""
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(
            "pretrained", f"{plugin} text plugin: directory does not exist (a local HF model directory with "
            "config.json, weights and tokenizer files; nothing is downloaded)", path,
        )
    if not (directory / "config.json").is_file():
        raise ConfigError("pretrained", f"{plugin} text plugin: {directory} has no config.json", path)
    return directory


def tokenizer_path(path: str, plugin: str) -> FastTokenizer:
    """Load the tokenizer named by the `tokenizer` field, or a ConfigError naming it."""
    if not Path(path).exists():
        raise ConfigError(
            "tokenizer", f"{plugin} text plugin: tokenizer path does not exist (a tokenizer directory, "
            "vocab.txt or SentencePiece .model; `x2vlm data tokenizer` makes one)", path,
        )
    return load_tokenizer(path)


def weight_files(directory: Path) -> list[Path]:
    """The weight file(s) of a HF model directory: single safetensors/bin, or the shards of an index."""
    for name in _SINGLE:
        if (directory / name).is_file():
            return [directory / name]
    for name in _INDEXED:
        index = directory / name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            return [directory / f for f in sorted(set(weight_map.values()))]
    raise WeightsError(
        f"{directory} has no {', '.join(_SINGLE + _INDEXED)}; save the model with save_pretrained first"
    )


def hf_state_from_file(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A HF checkpoint's state → base-model keys: strip `prefix.` (e.g. "bert." of BertForPreTraining)
    and rename TF-era LayerNorm `gamma`/`beta` to `weight`/`bias`. Head keys are kept (the caller allows them)."""
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            key = key[len(prefix) + 1 :]
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        mapped[key] = value
    return mapped


def load_hf_weights(model: PreTrainedModel, directory: Path) -> frozenset[str]:
    """Strictly load a HF directory's weights into the base `model`; returns the loaded keys.

    Keys outside the base model's own sub-modules (task heads like cls., lm_head., classifier.), the
    pooler (x2vlm uses token 0, not the pooler) and position-id buffers of older files are ignored
    by name; any other mismatch is an error.
    """
    state: dict[str, Tensor] = {}
    for file in weight_files(directory):
        state.update(load_state_file(file))
    state = hf_state_from_file(state, model.base_model_prefix)
    children = {name for name, _ in model.named_children()}
    heads = sorted({k.split(".")[0] + "." for k in state if k.split(".")[0] not in children})
    report = load_state_strict(
        model, state, source=str(directory),
        allow_unexpected=[*heads, "pooler.", "embeddings.position_ids"],
    )
    return report.loaded


def save_architecture(encoder: HFTextEncoder, directory: Path) -> str:
    """Write the encoder's HF `config.json` and its tokenizer into `directory` (no weights): a directory
    that `pretrained: DIR` with `weights: false` rebuilds the exact architecture and tokenizer from."""
    encoder.model.config.save_pretrained(str(directory))
    encoder.tokenizer.save(str(directory))
    return str(directory)


def check_architecture(config: PretrainedConfig, wanted: dict[str, int | None], plugin: str) -> None:
    """Fields set in the plugin config must agree with the pretrained config.json (HF attribute → value)."""
    for attribute, (field, value) in _named(wanted).items():
        if value is None:
            continue
        actual = getattr(config, attribute)
        if actual != value:
            raise ConfigError(
                field, f"{plugin} text plugin: the pretrained model has {attribute}={actual}; leave the field "
                "unset to take it from config.json", value,
            )


def _named(wanted: dict[str, int | None]) -> dict[str, tuple[str, int | None]]:
    names = {
        "num_hidden_layers": "layers",
        "hidden_size": "width",
        "num_attention_heads": "heads",
        "intermediate_size": "intermediate",
        "max_position_embeddings": "max_positions",
    }
    return {attribute: (names.get(attribute, attribute), value) for attribute, value in wanted.items()}


class HFTextEncoder(TextEncoder):
    """A transformers encoder (no pooler) + FastTokenizer: ids/mask [B, L] → TextOutput tokens [B, L, D]."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: FastTokenizer, pretrained_keys: frozenset[str], pack: PackMode = "never"
    ) -> None:
        """pack: run the BERT-style layers on the real tokens only (TokenPacking); for models whose
        `transformer_layers` follow BERT's naming (bert, xlmr), so "never" for any other."""
        super().__init__()
        vocab = int(model.get_input_embeddings().num_embeddings)
        if tokenizer.vocab_size > vocab:
            raise ConfigError(
                "tokenizer", f"tokenizer has {tokenizer.vocab_size} tokens but the model's embedding table has "
                f"{vocab} rows", tokenizer.source,
            )
        self.model = model
        self.tokenizer = tokenizer
        self.width = int(model.config.hidden_size)
        self.pack = pack
        # Relative to this module, as every encoder's pretrained_keys are.
        self.pretrained_keys = frozenset(f"model.{k}" for k in pretrained_keys)

    def forward(self, ids: Tensor, mask: Tensor, causal: bool = False) -> TextOutput:
        real = mask.bool()
        packing = None if causal else TokenPacking.plan(real, self.pack)
        if packing is not None:
            return TextOutput(tokens=self._packed(ids, real, packing))
        # A ready 4-D boolean mask ([B, 1, 1, L], or [B, 1, L, L] causal): transformers uses it as-is, where a
        # 2-D one would first be inspected on the host (a device sync per call) to decide whether to drop it.
        attend = real[:, None, None, :]
        if causal:
            length = ids.shape[1]
            attend = attend & torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        out = self.model(input_ids=ids, attention_mask=attend)
        return TextOutput(tokens=out.last_hidden_state)

    def _packed(self, ids: Tensor, mask: Tensor, packing: TokenPacking) -> Tensor:
        """The model's own embeddings and layers with every linear, norm and FFN on the real tokens only
        (their padded positions come back zero): the numbers of the padded forward at every real position."""
        hidden = packing.pack(self.model.embeddings(input_ids=ids))
        allowed = mask[:, None, :]  # [B, 1, L]: key padding, broadcast over queries
        dropout = float(self.model.config.attention_probs_dropout_prob) if self.training else 0.0
        for layer in self.transformer_layers():
            attention = layer.attention
            proj = attention.self
            q, k, v = (packing.unpack(linear(hidden)) for linear in (proj.query, proj.key, proj.value))
            context, _, _ = attend_cached(q, k, v, self.num_heads, allowed, None, None, dropout)
            attended = attention.output(packing.pack(context), hidden)  # dense → dropout → LayerNorm(+ residual)
            hidden = layer.output(layer.intermediate(attended), attended)
        return packing.unpack(hidden)

    def decode(
        self, ids: Tensor, positions: Tensor, allowed: Tensor, cache: KVCache | None = None, keep: int | None = None
    ) -> tuple[TextOutput, KVCache]:
        """New tokens ids [R, T] at text positions [R, T] against `cache` (see TextEncoder.decode): the model's
        own embeddings and layers, attention over cached + new keys."""
        embeddings = self.model.embeddings
        # RoBERTa-style models number positions after the pad id (XLM-R: pad 1, first token 2).
        offset = getattr(embeddings, "padding_idx", None)
        position_ids = positions if offset is None else positions + offset + 1
        hidden = embeddings(input_ids=ids, position_ids=position_ids, token_type_ids=torch.zeros_like(ids))
        dropout = float(self.model.config.attention_probs_dropout_prob) if self.training else 0.0
        tokens, cache = decode_bert_layers(self.transformer_layers(), hidden, allowed, cache, keep, self.num_heads,
                                           dropout)
        return TextOutput(tokens=tokens), cache

    def word_embeddings(self) -> nn.Embedding:
        embedding = self.model.get_input_embeddings()
        assert isinstance(embedding, nn.Embedding)
        return embedding

    def transformer_layers(self) -> nn.ModuleList:
        """The BERT-style transformer layers (`encoder.layer`), for fusion layers initialised from them."""
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(self.model).__name__} has no BERT-style encoder.layer list")
        return layers

    @property
    def layer_norm_eps(self) -> float:
        """LayerNorm epsilon of the layers (from the HF config; BERT 1e-12, XLM-R 1e-5)."""
        return float(getattr(self.model.config, "layer_norm_eps", 1e-12))

    @property
    def num_heads(self) -> int:
        """Attention heads per layer (from the HF config)."""
        return int(self.model.config.num_attention_heads)

    def replace_vocabulary(self, tokenizer: Tokenizer, embeddings: nn.Embedding) -> None:
        """Read `tokenizer`'s ids through `embeddings` [V, D]; positions, types and layers stay.

        The HF config follows (vocab_size, pad_token_id) so that the exported architecture rebuilds the
        new table. RoBERTa-style models number positions from the pad id, so there it must not change.
        """
        if embeddings.embedding_dim != self.width:
            raise ConfigError(
                "tokenizer", f"new word embeddings have width {embeddings.embedding_dim}, the encoder {self.width}",
                getattr(tokenizer, "source", None),
            )
        if embeddings.num_embeddings < tokenizer.vocab_size:
            raise ConfigError(
                "tokenizer", f"tokenizer has {tokenizer.vocab_size} tokens but the new embedding table has "
                f"{embeddings.num_embeddings} rows", getattr(tokenizer, "source", None),
            )
        position_pad = getattr(getattr(self.model, "embeddings", None), "padding_idx", None)
        if position_pad is not None and position_pad != tokenizer.pad_id:
            raise ConfigError(
                "tokenizer", f"{type(self.model).__name__} numbers positions from the pad id {position_pad}; the new "
                f"tokenizer's pad id is {tokenizer.pad_id} (use a tokenizer with the same pad id)",
                getattr(tokenizer, "source", None),
            )
        self.model.set_input_embeddings(embeddings)
        self.model.config.vocab_size = embeddings.num_embeddings
        self.model.config.pad_token_id = tokenizer.pad_id
        self.tokenizer = tokenizer  # type: ignore[assignment]
        table = next(n for n, p in self.named_parameters(remove_duplicate=False) if p is embeddings.weight)
        self.pretrained_keys = self.pretrained_keys - {table}


class FamilyTextEncoder(HFTextEncoder):
    """A BERT-family plugin (bert, xlmr): a local pretrained directory, or random init from sizes + a tokenizer.

    Subclasses name their transformers classes and how random-init sizes become a config (`fresh`), and may
    check a pretrained directory's config and tokenizer against each other (`check_pretrained`).
    """

    plugin: ClassVar[str]
    config_class: ClassVar[type[PretrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(self, config: HFArchitectureConfig) -> None:
        if config.pretrained is not None:
            directory = pretrained_dir(config.pretrained, self.plugin)
            hf_config = self.config_class.from_pretrained(str(directory))
            tokenizer = load_tokenizer(directory)
            self.check_pretrained(config, hf_config, tokenizer)
            hf_config.hidden_dropout_prob = hf_config.attention_probs_dropout_prob = config.dropout
        else:
            assert config.tokenizer is not None  # the validator guarantees one source
            tokenizer = tokenizer_path(config.tokenizer, self.plugin)
            hf_config = self.fresh(config, tokenizer)
        hf_config._attn_implementation = "sdpa"
        model = self.model_class(hf_config, add_pooling_layer=False)
        loaded = load_hf_weights(model, Path(config.pretrained)) if config.pretrained and config.weights else frozenset()
        super().__init__(model, tokenizer, loaded, pack=config.pack)

    def check_pretrained(self, config: HFArchitectureConfig, hf_config: PretrainedConfig, tokenizer: FastTokenizer) -> None:
        """Fields set in the plugin config must agree with config.json."""
        check_architecture(hf_config, config.architecture(), self.plugin)

    def fresh(self, config: HFArchitectureConfig, tokenizer: FastTokenizer) -> PretrainedConfig:  # pragma: no cover - abstract
        """The HF config of a randomly initialised encoder of the configured sizes."""
        raise NotImplementedError

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """`pretrained` = config.json + tokenizer written to `asset_dir`, `weights: false` (exact architecture)."""
        return {**config, "pretrained": save_architecture(self, asset_dir), "tokenizer": None, "weights": False}
