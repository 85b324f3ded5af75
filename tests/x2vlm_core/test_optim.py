"""AdamW parameter groups and the warm-up + linear-decay schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from x2vlm_core.config import TrainConfig
from x2vlm_core.training.optim import build_optimizer, build_scheduler, param_groups, warmup_linear_decay


class _Trunk(nn.Module):
    """A timm-like trunk that declares its own no-weight-decay parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.special = nn.Parameter(torch.randn(2, 3))  # 2-D, only excluded through no_weight_decay()
        self.proj = nn.Linear(3, 3)

    def no_weight_decay(self) -> set[str]:
        return {"special"}


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.block = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(7, 2))
        self.temporal_embedding = nn.Parameter(torch.zeros(1, 3, 1, 4))
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.trunk = _Trunk()
        self.head = nn.Linear(4, 2)
        self.tied = nn.Linear(4, 10, bias=False)
        self.tied.weight = self.embed.weight  # the same tensor under two names
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _membership(groups: list[dict]) -> dict[str, tuple[str, float, float]]:
    out = {}
    for g in groups:
        for name in g["param_names"]:
            assert name not in out, f"{name} in two groups"
            out[name] = (g["name"], g["weight_decay"], g["lr"])
    return out


def test_group_membership() -> None:
    model = _Toy()
    groups = param_groups(
        model, weight_decay=0.05, lr=1e-3, new_param_lr_scale=2.0, new={"head.weight", "head.bias"}
    )
    got = _membership(groups)
    decay_pre = {"embed.weight", "block.0.weight", "trunk.proj.weight"}
    no_decay_pre = {
        "pos_embed",
        "cls_token",
        "block.0.bias",
        "block.1.weight",
        "block.1.bias",
        "relative_position_bias_table",
        "temporal_embedding",
        "temp",
        "trunk.special",
        "trunk.proj.bias",
    }
    assert set(got) == decay_pre | no_decay_pre | {"head.weight", "head.bias"}  # frozen + tied alias left out
    for name in decay_pre:
        assert got[name] == ("pretrained_decay", 0.05, 1e-3)
    for name in no_decay_pre:
        assert got[name] == ("pretrained_no_decay", 0.0, 1e-3)
    assert got["head.weight"] == ("new_decay", 0.05, 2e-3)
    assert got["head.bias"] == ("new_no_decay", 0.0, 2e-3)
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 2.0, 2.0]
    # Every trainable tensor once, including the shared embedding.
    params = [p for g in groups for p in g["params"]]
    assert (
        len(params) == len({id(p) for p in params}) == sum(1 for p in model.parameters() if p.requires_grad)
    )


def test_new_via_alias_and_unknown_name() -> None:
    model = _Toy()
    groups = param_groups(model, 0.01, 1e-3, 3.0, new={"tied.weight"})  # alias of embed.weight
    assert _membership(groups)["embed.weight"] == ("new_decay", 0.01, 3e-3)
    with pytest.raises(ValueError, match="not in the model: nope"):
        param_groups(model, 0.01, 1e-3, 2.0, new={"nope"})


def test_schedule_values() -> None:
    assert warmup_linear_decay(0, 10, 110) == 0.0
    assert warmup_linear_decay(5, 10, 110) == 0.5
    assert warmup_linear_decay(10, 10, 110) == 1.0
    assert warmup_linear_decay(60, 10, 110) == 0.5
    assert warmup_linear_decay(110, 10, 110) == 0.0
    assert warmup_linear_decay(200, 10, 110) == 0.0
    assert warmup_linear_decay(0, 0, 4) == 1.0
    assert warmup_linear_decay(3, 0, 4) == 0.25
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 5, 4)


def test_optimizer_and_schedule_keep_lr_ratio() -> None:
    model = _Toy()
    cfg = TrainConfig(lr=1e-3, weight_decay=0.02, betas=(0.9, 0.98), new_param_lr_scale=2.0, warmup_steps=4)
    opt = build_optimizer(model, cfg, new={"head.weight", "head.bias"})
    assert all(g["betas"] == (0.9, 0.98) for g in opt.param_groups)
    sched = build_scheduler(opt, warmup_steps=4, total_steps=12)
    seen = []
    for step in range(13):
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        expected = 1e-3 * warmup_linear_decay(step, 4, 12)
        assert lrs["pretrained_decay"] == pytest.approx(expected, abs=1e-15)
        assert lrs["new_decay"] == pytest.approx(2 * expected, abs=1e-15)
        assert lrs["new_no_decay"] == pytest.approx(2 * expected, abs=1e-15)
        seen.append(lrs["pretrained_decay"])
        opt.step()
        sched.step()
    assert (
        seen[0] == 0.0
        and seen[4] == pytest.approx(1e-3)
        and seen[8] == pytest.approx(5e-4)
        and seen[12] == 0.0
    )


def test_weight_decay_is_applied_only_to_decay_group() -> None:
    model = _Toy()
    opt = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5), new=set())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled weight decay moves a parameter
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["block.0.weight"], before["block.0.weight"] * (1 - 0.1 * 0.5))
    torch.testing.assert_close(after["pos_embed"], before["pos_embed"])
    torch.testing.assert_close(after["trunk.special"], before["trunk.special"])
