"""AdamW parameter groups (decay / no decay × pretrained / new) and the warm-up + linear-decay schedule.

X²-VLM trains with AdamW (betas 0.9/0.98, wd 0.01), linear warm-up then linear decay to 0, and gives
freshly initialised parameters lr × 2 (docs/recipes.md, "Pretraining"); this module builds exactly that.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from x2vlm_core.config import TrainConfig

__all__ = ["NO_DECAY_NAME_PARTS", "build_optimizer", "build_scheduler", "param_groups", "warmup_linear_decay"]

# Name fragments of parameters that are positions/tokens, not weights: decaying them only hurts.
NO_DECAY_NAME_PARTS: tuple[str, ...] = (
    "pos_embed",
    "cls_token",
    "relative_position_bias_table",
    "temporal_embedding",
)


def _own_no_weight_decay(model: nn.Module) -> set[int]:
    """ids of parameters that some sub-module lists in its `no_weight_decay()` (timm's convention)."""
    ids: set[int] = set()
    for module in model.modules():
        hook = getattr(module, "no_weight_decay", None)
        if not callable(hook):
            continue
        listed = {str(n) for n in hook()}
        # timm lists names relative to the module that declares them; an entry may also name a sub-module.
        for name, param in module.named_parameters(remove_duplicate=False):
            if name in listed or any(name.startswith(f"{entry}.") for entry in listed):
                ids.add(id(param))
    return ids


def _named_unique(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Trainable parameters once each (a tensor shared under two names keeps its first name)."""
    for name, param in model.named_parameters():
        if param.requires_grad:
            yield name, param


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, new_param_lr_scale: float, new: Collection[str]
) -> list[dict[str, Any]]:
    """AdamW groups: no decay for 1-D params, positions and tokens; lr × new_param_lr_scale for `new` names.

    Each group carries `lr_scale` (its lr / base lr) and `param_names`; empty groups are left out.
    `new` holds names as in `model.state_dict()`; an alias of a shared tensor counts for the tensor.
    """
    all_params = dict(model.named_parameters(remove_duplicate=False))
    known = set(all_params) | set(model.state_dict())
    unknown = sorted(set(new) - known)
    if unknown:
        raise ValueError(
            f"new parameter names not in the model: {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}; "
            "pass names as they appear in model.state_dict()"
        )
    new_ids = {id(all_params[n]) for n in new if n in all_params}
    no_decay_ids = _own_no_weight_decay(model)

    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    for name, param in _named_unique(model):
        decay = not (
            param.ndim <= 1 or id(param) in no_decay_ids or any(part in name for part in NO_DECAY_NAME_PARTS)
        )
        is_new = id(param) in new_ids
        key = (decay, is_new)
        if key not in groups:
            scale = new_param_lr_scale if is_new else 1.0
            groups[key] = {
                "name": f"{'new' if is_new else 'pretrained'}_{'decay' if decay else 'no_decay'}",
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    # A fixed group order keeps optimizer state dicts comparable across runs of the same model.
    order = [(True, False), (False, False), (True, True), (False, True)]
    return [groups[k] for k in order if k in groups]


def build_optimizer(
    model: nn.Module, train_cfg: TrainConfig, new: Collection[str], fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over `param_groups` with the run's lr, weight decay, betas and new-parameter lr scale.

    fused: one kernel for the whole update (CUDA); the default per-tensor-list update elsewhere."""
    groups = param_groups(model, train_cfg.weight_decay, train_cfg.lr, train_cfg.new_param_lr_scale, new)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        groups, lr=train_cfg.lr, betas=train_cfg.betas, weight_decay=train_cfg.weight_decay, fused=fused or None
    )


def warmup_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """lr factor: step/warmup during warm-up, then linear from 1 down to 0 at total_steps (0 after)."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """LambdaLR: linear warm-up 0 → 1 over warmup_steps, then linear decay to 0 at total_steps."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")

    # A plain closure: LambdaLR stores callable *objects* in its state dict, so a resumed run would
    # otherwise keep the old schedule even when train.steps changed.
    def factor(step: int) -> float:
        return warmup_linear_decay(step, warmup_steps, total_steps)

    return LambdaLR(optimizer, factor)
