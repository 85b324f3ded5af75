"""LayerNorms that stay in the autocast dtype.

Autocast runs `layer_norm` in float32, so in mixed precision every norm turns its input into float32 and
the next matrix product casts it back: two extra copies per norm, and post-LN encoders (BERT, the
fusion) carry their residual stream in float32. `AutocastLayerNorm` runs in the autocast dtype instead
(the kernels accumulate statistics in float32); outside autocast it is exactly nn.LayerNorm.
"""

from __future__ import annotations

import timm.layers
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AutocastLayerNorm", "autocast_layer_norms", "retype_modules"]

# LayerNorm classes whose forward is the plain F.layer_norm (timm's differs only in an optional fast path).
_PLAIN = (nn.LayerNorm, timm.layers.LayerNorm)


class AutocastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm that, under autocast, normalises in the autocast dtype and returns it."""

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        dtype = torch.get_autocast_dtype(device)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, weight, bias, self.eps)


def autocast_layer_norms(module: nn.Module) -> int:
    """Turn every plain LayerNorm inside `module` into an AutocastLayerNorm in place (same parameters and
    state-dict keys); returns how many. Subclasses with their own behaviour are left alone."""
    return retype_modules(module, _PLAIN, AutocastLayerNorm)


def retype_modules(root: nn.Module, kinds: tuple[type[nn.Module], ...], new: type[nn.Module]) -> int:
    """Give every module inside `root` whose exact type is one of `kinds` the subclass `new`, in place; returns
    how many. A class swap, not new modules: parameters, buffers and state-dict keys stay as they were."""
    count = 0
    for child in root.modules():
        if type(child) in kinds:
            child.__class__ = new
            count += 1
    return count
