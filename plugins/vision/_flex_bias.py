"""BEiT attention with its learnable relative-position bias inside the attention kernel (flex attention).

timm's BEiT adds the bias as a float `attn_mask` to scaled_dot_product_attention; on a GPU that sends the
ViT to the memory-efficient kernel (flash and cuDNN take no learnable bias), which ran at ~50 TFLOP/s on an
H200. torch's flex attention adds the bias in a `score_mod` inside a generated flash-style kernel and returns
its gradient. Same math: softmax(q·kᵀ/√d + bias) v.

torch's flex attention has no CPU backward, so on the CPU the blocks keep timm's own path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.models.beit import Attention
from torch import Tensor, nn
from torch.nn.attention.flex_attention import flex_attention
from torch.utils._python_dispatch import _get_current_dispatch_mode

from x2vlm_core.plugin_api import retype_modules

__all__ = ["FlexBiasAttention", "bias_attention", "use_flex_attention"]


@functools.cache
def _compiled_flex():  # type: ignore[no-untyped-def]
    # Flex attention is a reference loop until compiled; compiled once per process, reused by every block.
    return torch.compile(flex_attention, dynamic=False)


def bias_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, compiled: bool = True) -> Tensor:
    """q, k, v [B, H, N, d]; bias [H, N, N] (shared by the batch) -> softmax(q·kᵀ/√d + bias) v [B, H, N, d].
    `compiled` runs the generated kernel (inside a compiled region the region compiles it)."""

    def add_bias(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + bias[h, q_idx, kv_idx]

    own = compiled and not torch.compiler.is_compiling()
    return (_compiled_flex() if own else flex_attention)(q, k, v, score_mod=add_bias)


class FlexBiasAttention(Attention):
    """timm's BEiT `Attention` (same parameters, buffers and state-dict keys) whose forward on a GPU runs the
    relative-position bias inside flex attention; elsewhere, and under a dispatch mode (FLOP counting, which
    flex attention's operator does not run under), timm's own forward."""

    def forward(self, x: Tensor, shared_rel_pos_bias: Tensor | None = None) -> Tensor:
        if not x.is_cuda or _get_current_dispatch_mode() is not None:
            return super().forward(x, shared_rel_pos_bias)
        if self.training and self.attn_drop.p > 0:
            raise ValueError("vision plugin 'beit2': attention 'flex' has no attention dropout; "
                             "set the ViT's attn_drop_rate to 0 or use attention: sdpa")
        batch, n, width = x.shape
        bias_qkv = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias_qkv).reshape(batch, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self._get_rel_pos_bias()[0] if self.relative_position_bias_table is not None else None
        if shared_rel_pos_bias is not None:
            shared = shared_rel_pos_bias.reshape(-1, n, n)
            bias = shared if bias is None else bias + shared
        if bias is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # the bias stays fp32 (the kernel's scores are fp32): its gradient sums over the whole batch by
            # atomic adds, which bf16 would round at every step
            out = bias_attention(q, k, v, bias.float())
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, n, width)))


def use_flex_attention(trunk: nn.Module) -> int:
    """Switch every BEiT attention of `trunk` to FlexBiasAttention in place (parameters, buffers and checkpoint
    keys stay exactly as timm made them); returns how many it switched."""
    return retype_modules(trunk, (Attention,), FlexBiasAttention)
