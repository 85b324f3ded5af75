"""The base of tasks that only evaluate a checkpoint (no heads, no objective): Winoground, attributes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import BaseModel

from x2vlm_core.plugin_api import ConfigError, LossOutput, Preprocess, Record, TaskBatch, TaskModule, VLModel

__all__ = ["EvaluationOnlyTask", "evaluation_only"]


def evaluation_only(task: str) -> ConfigError:
    """The error of an evaluation-only task asked to train (a ValueError the CLI reports as a user error)."""
    return ConfigError(f"task {task}", "this task is evaluation-only (it has no heads to fine-tune); evaluate a "
                       f"checkpoint with `x2vlm evaluate --checkpoint C --task {task}` instead", has_value=False)


class EvaluationOnlyTask(TaskModule):
    """A task with a config and `evaluate` only: asking it for batches or a loss is a clear error."""

    def __init__(self, config: BaseModel, model: VLModel) -> None:
        super().__init__()
        self.config = config

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[TaskBatch]:
        raise evaluation_only(self.name)

    def loss(self, model: VLModel, batch: TaskBatch) -> LossOutput:
        raise evaluation_only(self.name)
