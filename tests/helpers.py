"""Helpers shared by several test modules."""

from __future__ import annotations

from collections.abc import Sequence

from x2vlm_core.config import LossSection
from x2vlm_core.model import X2VLM, TrainingStep
from x2vlm_core.model.factory import build_losses, build_step

PRETRAINING_LOSSES = ("contrastive", "matching", "mlm", "bbox")


def pretraining_step(model: X2VLM, losses: Sequence[str] = PRETRAINING_LOSSES) -> TrainingStep:
    """The training step of `model` with the named loss plugins (weight 1, default fields)."""
    return build_step(model, build_losses([LossSection.model_validate({"plugin": p}) for p in losses]))
