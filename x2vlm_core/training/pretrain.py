"""Pretraining: a model built from the run config, trained by the step loop (training/loop.py)."""

from __future__ import annotations

from registry import PluginRegistry
from x2vlm_core.config import RunConfig
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.loop import TrainResult, fit

__all__ = ["pretrain"]


def pretrain(
    cfg: RunConfig,
    resume: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Pretrain a model built from `cfg.model` (resuming from the newest complete checkpoint when asked)."""
    registry = registry or default_registry()

    def build() -> tuple[X2VLM, set[str]]:
        model = build_model(cfg.model, registry)
        return model, {n for n, _ in model.named_parameters()} - model.pretrained_parameter_names()

    return fit(cfg, build, op="pretrain", resume=resume, registry=registry, progress=progress, evaluate=evaluate)
