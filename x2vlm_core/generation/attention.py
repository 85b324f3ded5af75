"""Attention against a key/value cache: the arithmetic shared by text encoders and fusions that decode.

Shapes: R rows, T new tokens, C cached positions, H heads, Dh head width, D = H·Dh, S segments, N keys
per segment. `allowed` [R, T, C+T] bool marks the key slots (cached, then new) each new token attends to.
`decode_bert_layers` runs transformers' BERT-style layers (the LayerSource naming) incrementally: the
projections are the layers' own modules, only the attention is done here, over cached + new keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x2vlm_core.contracts.encoders import KVCache

__all__ = ["attend_cached", "attend_grouped", "attendable", "causal_allowed", "decode_bert_layers", "split_heads"]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[R, T, D] → [R, H, T, D/H]."""
    r, t, d = x.shape
    return x.view(r, t, heads, d // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """[R, H, T, Dh] → [R, T, H·Dh]."""
    r, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(r, t, h * dh)


def attendable(mask: Tensor) -> Tensor:
    """Allowed-key mask [..., keys] bool where a query with no allowed key (a padding slot) attends everywhere:
    a finite output, which callers never read."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def causal_allowed(mask: Tensor) -> Tensor:
    """Key padding mask [R, L] bool → allowed [R, L, L]: each position sees itself and earlier real tokens."""
    length = mask.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return mask[:, None, :] & lower


def attend_cached(
    query: Tensor, key: Tensor, value: Tensor, heads: int, allowed: Tensor,
    cached_key: Tensor | None, cached_value: Tensor | None, dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Projected query/key/value [R, T, D] of the new tokens over cached [R, H, C, Dh] + new keys.

    Returns the context [R, T, D] and the new keys/values split into heads [R, H, T, Dh] (for the cache)."""
    q, k, v = split_heads(query, heads), split_heads(key, heads), split_heads(value, heads)
    keys = k if cached_key is None else torch.cat((cached_key, k), dim=2)
    values = v if cached_value is None else torch.cat((cached_value, v), dim=2)
    if allowed.shape[-1] != keys.shape[2]:
        raise ValueError(f"attend_cached: allowed covers {allowed.shape[-1]} key slots, the cache and new tokens "
                         f"hold {keys.shape[2]}")
    context = F.scaled_dot_product_attention(q, keys, values, attn_mask=attendable(allowed)[:, None],
                                             dropout_p=dropout)
    return _merge_heads(context), k, v


def attend_grouped(query: Tensor, keys: Tensor, values: Tensor, mask: Tensor, heads: int, dropout: float = 0.0) -> Tensor:
    """Cross-attention of rows [R, T, D] (segment-major, G = R / S rows per segment) to per-segment keys/values
    [S, H, N, Dh] under mask [S, N]: the G·T queries of a segment are stacked, so keys/values are never copied
    per row. Returns the context [R, T, D]."""
    r, t, d = query.shape
    s = keys.shape[0]
    if s == 0 or r % s:
        raise ValueError(f"attend_grouped: {r} rows cannot be split evenly over {s} segments")
    g = r // s
    q = split_heads(query, heads)  # [R, H, T, Dh]
    q = q.view(s, g, heads, t, -1).transpose(1, 2).reshape(s, heads, g * t, -1)
    context = F.scaled_dot_product_attention(q, keys, values, attn_mask=attendable(mask)[:, None, None, :],
                                             dropout_p=dropout)
    context = context.view(s, heads, g, t, -1).transpose(1, 2).reshape(r, heads, t, -1)
    return _merge_heads(context)


def decode_bert_layers(
    layers: nn.ModuleList, hidden: Tensor, allowed: Tensor, cache: KVCache | None, keep: int | None, heads: int,
    dropout: float = 0.0,
) -> tuple[Tensor, KVCache]:
    """Embedded new tokens [R, T, D] through transformers BERT-style layers (`attention.self.query/key/value`,
    `attention.output`, `intermediate`, `output`) against `cache`; returns [R, T, D] and the extended cache
    (the first `keep` new tokens' keys/values; default all)."""
    keep = hidden.shape[1] if keep is None else keep
    new_keys, new_values = [], []
    for index, layer in enumerate(layers):
        attention = layer.attention
        proj = attention.self
        cached_k = cache.keys[index] if cache is not None and cache.keys else None
        cached_v = cache.values[index] if cache is not None and cache.values else None
        context, k, v = attend_cached(proj.query(hidden), proj.key(hidden), proj.value(hidden), heads, allowed,
                                      cached_k, cached_v, dropout)
        new_keys.append(k[:, :, :keep])
        new_values.append(v[:, :, :keep])
        attended = attention.output(context, hidden)  # dense → dropout → LayerNorm(+ residual)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden, (cache or KVCache()).extended(new_keys, new_values)
