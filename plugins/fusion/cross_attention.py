"""Cross-attention fusion of X²-VLM (Zeng et al., TPAMI 2023): BERT-style layers with vision cross-attention.

Each layer: self-attention over text → cross-attention (text queries, vision keys/values) → FFN, each a
post-LayerNorm residual block as in BERT. Parameter names follow transformers' BERT layers with
cross-attention (`layer.{i}.attention.self.query`, `.crossattention.*`, `.intermediate.dense`,
`.output.*`), so official X²-VLM fusion weights map by prefix and BERT layers copy in directly. Our own
module because transformers 5 forces causal self-attention when BERT layers have cross-attention.

Packing (`pack`, TokenPacking): every linear, norm and FFN runs on the real text tokens [T, D] alone,
self-attention on padded [P, L, D] views, and cross-attention with the tokens grouped by the image they read
(CrossGroups: keys/values projected once per image, copied per group of tokens, not per pair); exact.

Decoding (`start_decoding`, `decode`): each layer's cross-attention keys/values [S, H, 1+N, Dh] are projected
once per segment and read by all G beams of a segment at once (their queries stacked, never copied per
beam); self-attention runs new tokens [R, T, D] against the cached keys/values of the decoded positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from plugins.fusion._groups import CrossGroups
from x2vlm_core.plugin_api import (
    PACK_HELP,
    ConfigError,
    FusionEncoder,
    FusionOutput,
    KVCache,
    LayerSource,
    PackMode,
    PluginSpec,
    TextEncoder,
    TokenPacking,
    VisualMemory,
    attend_cached,
    attend_grouped,
    attendable,
    hookimpl,
)

__all__ = ["CrossAttentionFusion", "CrossAttentionFusionConfig"]


class CrossAttentionFusionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = Field(6, gt=0, description="fusion layers")
    width: int = Field(768, gt=0, description="text/fusion width D")
    heads: int = Field(12, gt=0, description="attention heads (self and cross)")
    intermediate: int = Field(3072, gt=0, description="FFN width")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on attention probabilities and block outputs")
    layer_norm_eps: float = Field(1e-12, gt=0.0, description="LayerNorm epsilon (BERT's value)")
    init_std: float = Field(
        0.02, gt=0.0, description="std of the normal initialisation of linear weights: BERT's 0.02 suits width "
        "768; a narrow model trained from scratch learns cross-attention much sooner near 1/sqrt(width)",
    )
    pack: PackMode = Field(
        "cpu", description=f"{PACK_HELP}; the same host read groups cross-attention queries by image (CrossGroups)"
    )
    init_from_text: list[int] | None = Field(
        None, description="copy self-attention + FFN of these text-encoder layers (one per fusion layer, e.g. "
        "[6, 7, 8, 9, 10, 11] for BERT-base as in the official code); cross-attention stays fresh",
    )

    @model_validator(mode="after")
    def _shapes(self) -> CrossAttentionFusionConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.init_from_text is not None and len(self.init_from_text) != self.layers:
            raise ValueError(f"init_from_text names {len(self.init_from_text)} layers but layers = {self.layers}")
        return self


class _Projections(nn.Module):
    """Query from the text width, key/value from `kv_width` (names as in BERT's `attention.self`)."""

    def __init__(self, width: int, kv_width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)


class _Output(nn.Module):
    """dense → dropout → residual → LayerNorm (BERT's `attention.output` / `output`)."""

    def __init__(self, in_width: int, width: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)  # BERT's attribute name keeps weights mappable
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _Attention(nn.Module):
    """Multi-head SDPA attention + output block: queries x [P, R, D], keys/values [P, S, D], mask [P, 1|R, S] bool."""

    def __init__(self, width: int, kv_width: int, heads: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = dropout
        self.self = _Projections(width, kv_width)
        self.output = _Output(width, width, dropout, eps)

    def context(self, queries: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """Attention of projected queries [P, R, D] over projected keys/values [P, S, D] → [P, R, D]."""
        b, length, width = queries.shape
        head_dim = width // self.heads

        def split(t: Tensor) -> Tensor:  # [P, S, D] -> [P, H, S, D/H]
            return t.view(b, t.shape[1], self.heads, head_dim).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(queries), split(keys), split(values), attn_mask=mask.unsqueeze(1),
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(b, length, width)

    def decode_self(self, x: Tensor, allowed: Tensor, cache: KVCache | None, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention of new tokens x [R, T, D] over layer `index`'s cached + new keys, then the output
        block; also the new keys/values [R, H, T, Dh]."""
        proj = self.self
        cached = cache is not None and bool(cache.keys)
        context, k, v = attend_cached(
            proj.query(x), proj.key(x), proj.value(x), self.heads, allowed,
            cache.keys[index] if cached else None, cache.values[index] if cached else None,  # type: ignore[union-attr]
            self.attn_dropout if self.training else 0.0,
        )
        return self.output(context, x), k, v

    def decode_cross(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """Cross-attention of segment-major rows x [R, T, D] to per-segment keys/values [S, H, 1+N, Dh]."""
        context = attend_grouped(self.self.query(x), keys, values, mask, self.heads,
                                 self.attn_dropout if self.training else 0.0)
        return self.output(context, x)

    def segment_keys_values(self, memory: VisualMemory, segment: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [P, 1+N, D] of each pair's segment, projected once per image (patches) and once per
        segment ([CLS]), then gathered per pair."""
        proj = self.self

        def per_pair(linear: nn.Linear) -> Tensor:
            return torch.cat((linear(memory.cls).index_select(0, segment)[:, None],
                              linear(memory.patches).index_select(0, image)), dim=1)

        return per_pair(proj.key), per_pair(proj.value)


class _Intermediate(nn.Module):
    def __init__(self, width: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, intermediate)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    """self-attention → cross-attention → FFN, each post-LayerNorm residual."""

    def __init__(self, config: CrossAttentionFusionConfig, vision_width: int) -> None:
        super().__init__()
        w, eps = config.width, config.layer_norm_eps
        self.attention = _Attention(w, w, config.heads, config.dropout, eps)
        self.crossattention = _Attention(w, vision_width, config.heads, config.dropout, eps)
        self.intermediate = _Intermediate(w, config.intermediate)
        self.output = _Output(config.intermediate, w, config.dropout, eps)

    def forward(
        self, x: Tensor, self_mask: Tensor, memory: VisualMemory, segment: Tensor, image: Tensor, cross_mask: Tensor,
        positions: Tensor | None = None, packing: TokenPacking | None = None, groups: CrossGroups | None = None,
    ) -> Tensor:
        """x [P, L, D] (or its real tokens [T, D] under `packing`) → the same shape, or [P, R, D] at positions
        [P, R] (queries only there; keys from all of x). Linears, norms and the FFN see only x's rows;
        self-attention runs on padded [P, L, D] views; cross-attention per pair, or under `groups` (planned
        for the rows of x as they enter it) per image."""
        pad = packing.unpack if packing is not None else _same
        proj = self.attention.self
        keys, values = pad(proj.key(x)), pad(proj.value(x))
        mask = self_mask
        if positions is not None:  # the rows read from here on, padded: the packing ends here
            x = pad(x).gather(1, positions[:, :, None].expand(-1, -1, x.shape[-1]))
            if mask.shape[1] > 1:  # causal: the rows of the read positions
                mask = mask.gather(1, positions[:, :, None].expand(-1, -1, mask.shape[-1]))
            pad, packing = _same, None
        unpad = packing.pack if packing is not None else _same
        attention, cross = self.attention, self.crossattention
        x = attention.output(unpad(attention.context(pad(proj.query(x)), keys, values, mask)), x)
        if groups is None:
            keys, values = cross.segment_keys_values(memory, segment, image)
            x = cross.output(unpad(cross.context(pad(cross.self.query(x)), keys, values, cross_mask)), x)
        else:
            proj = cross.self
            context = groups.attend(proj.query(x.reshape(-1, x.shape[-1])), groups.keys(proj.key, memory),
                                    groups.keys(proj.value, memory), cross.heads,
                                    cross.attn_dropout if self.training else 0.0)
            x = cross.output(context.view_as(x), x)
        return self.output(self.intermediate(x), x)

    def decode(
        self, x: Tensor, allowed: Tensor, cache: KVCache, index: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """New tokens x [R, T, D] → [R, T, D] against layer `index` of `cache`; also their keys/values."""
        x, k, v = self.attention.decode_self(x, allowed, cache, index)
        assert cache.cross_mask is not None
        x = self.crossattention.decode_cross(x, cache.cross_keys[index], cache.cross_values[index], cache.cross_mask)
        return self.output(self.intermediate(x), x), k, v


def _same(x: Tensor) -> Tensor:
    return x


# Sub-modules of a fusion layer copied from a BERT-style text layer (cross-attention is not among them).
_COPIED = ("attention.", "intermediate.", "output.")


class CrossAttentionFusion(FusionEncoder):
    """BERT-style fusion layers: text [B, L, D] + vision [B, 1+N, Dv] (+ masks) -> tokens [B, L, D]."""

    def __init__(self, config: CrossAttentionFusionConfig, vision_width: int, text: TextEncoder) -> None:
        super().__init__()
        self.width = config.width
        self.vision_width = vision_width
        self.pack = config.pack
        self.layer = nn.ModuleList(_Layer(config, vision_width) for _ in range(config.layers))
        self.apply(lambda module: _init_bert(module, config.init_std))
        self.pretrained_keys = frozenset()
        if config.init_from_text is not None:
            self.pretrained_keys = self._copy_from_text(text, config)

    def _copy_from_text(self, text: TextEncoder, config: CrossAttentionFusionConfig) -> frozenset[str]:
        """Copy self-attention + FFN of text layers `init_from_text`; the keys count as pretrained only
        where the text encoder's own weights were."""
        if not isinstance(text, LayerSource):
            raise ConfigError(
                "init_from_text", f"fusion cross_attention: text encoder {type(text).__name__} has no BERT-style "
                "layers to copy (it does not implement LayerSource; use bert, xlmr or hf text plugins, or leave "
                "init_from_text unset)", config.init_from_text,
            )
        source_layers = text.transformer_layers()
        if text.width != config.width or text.num_heads != config.heads:
            raise ConfigError(
                "init_from_text", f"fusion cross_attention: text encoder has width {text.width} and "
                f"{text.num_heads} heads, fusion has width {config.width} and {config.heads} "
                "heads; they must match to copy layers", config.init_from_text,
            )
        eps = text.layer_norm_eps
        if eps != config.layer_norm_eps:
            raise ConfigError(
                "layer_norm_eps", f"fusion cross_attention: copied text layers use LayerNorm eps {eps}; set "
                "layer_norm_eps to the same value", config.layer_norm_eps,
            )
        bad = [i for i in config.init_from_text if not 0 <= i < len(source_layers)]
        if bad:
            raise ConfigError(
                "init_from_text", f"fusion cross_attention: text encoder has {len(source_layers)} layers; "
                f"no layer {bad}", config.init_from_text,
            )
        prefix = _layer_prefix(text, source_layers)
        pretrained: set[str] = set()
        own = self.state_dict()
        for target, source_index in enumerate(config.init_from_text):
            source = source_layers[source_index].state_dict()
            for key in own:
                if not key.startswith(f"layer.{target}."):
                    continue
                sub = key[len(f"layer.{target}.") :]
                if not sub.startswith(_COPIED):
                    continue
                if sub not in source or source[sub].shape != own[key].shape:
                    have = tuple(source[sub].shape) if sub in source else "missing"
                    raise ConfigError(
                        "init_from_text", f"fusion cross_attention: text layer {source_index} has {sub}: {have}, "
                        f"fusion needs {tuple(own[key].shape)}", config.init_from_text,
                    )
                with torch.no_grad():
                    own[key].copy_(source[sub])
                if f"{prefix}{source_index}.{sub}" in text.pretrained_keys:
                    pretrained.add(key)
        return frozenset(pretrained)

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """The same layers without copying text layers in (a checkpoint holds the fusion weights)."""
        return {**config, "init_from_text": None}

    def copy_text_layers(self, text: TextEncoder) -> frozenset[str]:
        """Self-attention + FFN of every layer from the text encoder's last layers (one each, in order);
        cross-attention kept. Returns the overwritten keys; `pretrained_keys` follows the copied weights.

        LayerNorm epsilons stay the fusion's (XLM-R's 1e-5 vs BERT's 1e-12 changes a LayerNorm output by
        about eps / (2 var), far below training noise): a checkpoint keeps rebuilding from its config."""
        count = len(self.layer)
        available = len(text.transformer_layers()) if isinstance(text, LayerSource) else 0
        if available < count:
            raise ConfigError(
                "text", f"fusion cross_attention: copying text layers into {count} fusion layers needs a text "
                f"encoder with BERT-style layers, at least {count}; {type(text).__name__} has {available}",
                type(text).__name__,
            )
        first = self.layer[0]
        config = CrossAttentionFusionConfig(
            layers=count, width=self.width, heads=first.attention.heads,
            intermediate=first.intermediate.dense.out_features,
            layer_norm_eps=float(text.layer_norm_eps) if isinstance(text, LayerSource) else first.attention.output.LayerNorm.eps,
            init_from_text=list(range(available - count, available)),
        )
        pretrained = self._copy_from_text(text, config)
        overwritten = frozenset(k for k in self.state_dict() if k.split(".", 2)[2].startswith(_COPIED))
        self.pretrained_keys = (frozenset(self.pretrained_keys) - overwritten) | pretrained
        return overwritten

    def forward(
        self,
        text: Tensor,
        text_mask: Tensor,
        memory: VisualMemory,
        segment: Tensor,
        positions: Tensor | None = None,
        causal: bool = False,
    ) -> FusionOutput:
        length = text.shape[1]
        self_mask = text_mask[:, None, :]  # [P, 1, L]: key padding, broadcast over queries
        if causal:
            lower = torch.ones(length, length, dtype=torch.bool, device=text.device).tril()
            self_mask = self_mask & lower  # [P, L, L]
        self_mask = attendable(self_mask)
        image = memory.image.index_select(0, segment)  # [P]: the bank row each pair reads
        segment_mask = memory.mask.index_select(0, segment)
        cross_mask = attendable(torch.cat((segment_mask.new_ones(segment.shape[0], 1), segment_mask), 1)[:, None, :])
        packing = TokenPacking.plan(text_mask, self.pack)
        x = text if packing is None else packing.pack(text)
        groups = read_groups = None
        if TokenPacking.allowed(self.pack, text_mask):  # cross-attention per image (a host read, as packing)
            rows = segment.repeat_interleave(length) if packing is None else segment.index_select(0, packing.index // length)
            groups = CrossGroups.plan(memory, rows)
            read_groups = groups if positions is None else CrossGroups.plan(
                memory, segment.repeat_interleave(positions.shape[1]))
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            # Only the last layer narrows to the read positions: earlier ones feed every position's keys.
            x = layer(x, self_mask, memory, segment, image, cross_mask, positions if i == last else None, packing,
                      read_groups if i == last else groups)
        if positions is None and packing is not None:
            x = packing.unpack(x)
        return FusionOutput(tokens=x)


    def start_decoding(self, memory: VisualMemory, segment: Tensor) -> KVCache:
        """Cross-attention keys/values [S, H, 1+N, Dh] of segments `segment` [S] for every layer, projected
        once (patches once per image); the self-attention cache starts empty."""
        image = memory.image.index_select(0, segment)
        segment_mask = memory.mask.index_select(0, segment)
        mask = torch.cat((segment_mask.new_ones(segment.shape[0], 1), segment_mask), dim=1)
        keys, values = [], []
        for layer in self.layer:
            cross = layer.crossattention
            k, v = cross.segment_keys_values(memory, segment, image)  # [S, 1+N, D]
            keys.append(_heads(k, cross.heads))
            values.append(_heads(v, cross.heads))
        return KVCache(cross_keys=tuple(keys), cross_values=tuple(values), cross_mask=mask)

    def decode(
        self, text: Tensor, allowed: Tensor, cache: KVCache, keep: int | None = None
    ) -> tuple[FusionOutput, KVCache]:
        """New text tokens [R, T, D] (segment-major rows) through every layer against `cache`; returns their
        fused tokens and the cache with the first `keep` (default all) new tokens' keys/values appended."""
        if cache.cross_mask is None:
            raise ValueError("fusion cross_attention: decode needs a cache from start_decoding (it holds the "
                             "cross-attention keys/values of the segments)")
        keep = text.shape[1] if keep is None else keep
        x = text
        new_keys, new_values = [], []
        for index, layer in enumerate(self.layer):
            x, k, v = layer.decode(x, allowed, cache, index)
            new_keys.append(k[:, :, :keep])
            new_values.append(v[:, :, :keep])
        return FusionOutput(tokens=x), cache.extended(new_keys, new_values)


def _heads(x: Tensor, heads: int) -> Tensor:
    """[S, N, D] → [S, H, N, D/H]."""
    s, n, d = x.shape
    return x.view(s, n, heads, d // heads).transpose(1, 2)


def _layer_prefix(text: nn.Module, layers: nn.ModuleList) -> str:
    """State-dict prefix of `layers` inside `text` (e.g. "model.encoder.layer.")."""
    for name, module in text.named_modules():
        if module is layers:
            return f"{name}."
    raise TypeError("text layers are not a sub-module of the text encoder")


def _init_bert(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights (BERT: 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="fusion", name="cross_attention", config=CrossAttentionFusionConfig,
                       factory=CrossAttentionFusion)]
