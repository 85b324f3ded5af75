"""Batches of a downstream task: the task groups records from a MixedStream (in DataLoader workers too)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from x2vlm_core.contracts import Preprocess, TaskBatch, TaskModule
from x2vlm_core.data.collate import BatchLoader, MixedStream

__all__ = ["TaskBatchStream", "task_loader"]


class TaskBatchStream(IterableDataset):  # type: ignore[type-arg]
    """Endless task batches: `task.batches` over the stream's records, with a generator seeded per worker."""

    def __init__(self, stream: MixedStream, task: TaskModule, prep: Preprocess, batch_size: int) -> None:
        super().__init__()
        self.stream, self.task, self.prep, self.batch_size = stream, task, prep, batch_size

    def __iter__(self) -> Iterator[TaskBatch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        generator = torch.Generator().manual_seed(self.stream.seed * 104729 + 7 + worker)
        return self.task.batches(iter(self.stream), self.prep, self.batch_size, generator)


def task_loader(
    stream: MixedStream, task: TaskModule, prep: Preprocess, batch_size: int, num_workers: int
) -> BatchLoader:
    """A BatchLoader of the task's batches (counts of every worker summed, see BatchLoader)."""
    return BatchLoader(TaskBatchStream(stream, task, prep, batch_size), num_workers)
