"""AutocastLayerNorm: nn.LayerNorm outside autocast, the autocast dtype inside it."""

from __future__ import annotations

import timm.layers
import torch
from torch import nn

from x2vlm_core.model.precision import AutocastLayerNorm, autocast_layer_norms


class _Custom(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), timm.layers.LayerNorm(16, eps=1e-6), _Custom(16))
    for norm in list(net)[1:]:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    return net


def test_swap_keeps_parameters_and_leaves_custom_norms_alone() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert autocast_layer_norms(net) == 2
    assert [type(m) for m in net] == [nn.Linear, AutocastLayerNorm, AutocastLayerNorm, _Custom]
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert net[2].eps == 1e-6


def test_same_output_without_autocast_and_low_precision_inside() -> None:
    x = torch.randn(4, 7, 16)
    reference = _net()
    expected = reference(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_reference = reference(x)
    net = _net()
    autocast_layer_norms(net)
    assert torch.equal(net(x), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net[:3](x)
        mixed = net(x)
    assert out.dtype == torch.bfloat16  # CUDA autocast's own policy would return float32
    torch.testing.assert_close(mixed.float(), mixed_reference.float(), atol=0.1, rtol=0.05)
    mixed.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
