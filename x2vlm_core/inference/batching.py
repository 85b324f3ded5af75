"""Dynamic batching for the server: concurrent requests' items of the same operation run as one model call.

A request submits its items under an operation key (e.g. ("ground",) or ("search", k, rerank)); one loop
takes the operation whose oldest job waited longest, waits up to `max_wait_s` from that job's arrival for
more items (until `max_items`), and runs the whole batch in the single model thread. While a batch runs,
new requests queue up, so the next batch is bigger: throughput grows with load. A batch that fails is
re-run job by job, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "BatcherStats"]

Work = Callable[[list[Any]], Sequence[Any]]


@dataclass
class _Job:
    op: Hashable
    fn: Work
    items: list[Any]
    future: asyncio.Future[list[Any]]
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatcherStats:
    """Model calls made, items they held, and the largest batch (the server's /info shows them)."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "mean_batch": round(self.items / self.batches, 2) if self.batches else 0.0}


class Batcher:
    """Collects jobs per operation and runs each batch in one worker thread (the model is not thread-safe).

    Use inside a running event loop: `start()`, then `await submit(op, fn, items)` from handlers; `fn` maps
    the concatenated items of every job in the batch to one result per item, in order."""

    def __init__(self, max_items: int = 32, max_wait_s: float = 0.005) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items, self.max_wait_s = max_items, max_wait_s
        self.stats = BatcherStats()
        self._pending: dict[Hashable, deque[_Job]] = {}
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="x2vlm-model")

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, op: Hashable, fn: Work, items: list[Any]) -> list[Any]:
        """Run fn over `items` (batched with other requests' items of the same `op`); one result per item."""
        if self._wake is None:
            raise RuntimeError("Batcher.start() was not called inside the event loop")
        if not items:
            return []
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(op, deque()).append(_Job(op, fn, items, future))
        self._wake.set()
        return await future

    def _oldest(self) -> Hashable | None:
        waiting = [(q[0].arrived, i, op) for i, (op, q) in enumerate(self._pending.items()) if q]
        return min(waiting)[2] if waiting else None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            op = self._oldest()
            if op is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            queue = self._pending[op]
            remaining = queue[0].arrived + self.max_wait_s - time.perf_counter()
            if sum(len(j.items) for j in queue) < self.max_items and remaining > 0:
                self._wake.clear()
                try:  # more items may arrive: wake on each, until the oldest job has waited max_wait_s
                    await asyncio.wait_for(self._wake.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
                continue
            jobs = [queue.popleft()]
            while queue and sum(len(j.items) for j in jobs) + len(queue[0].items) <= self.max_items:
                jobs.append(queue.popleft())
            await self._dispatch(jobs)

    async def _dispatch(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for job in jobs for item in job.items]
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        try:
            results = list(await loop.run_in_executor(self._executor, jobs[0].fn, items))
        except Exception as error:
            if len(jobs) == 1:
                _settle(jobs[0].future, error=error)
                return
            for job in jobs:  # find the culprit: each job alone
                try:
                    _settle(job.future, list(await loop.run_in_executor(self._executor, job.fn, job.items)))
                except Exception as own:
                    _settle(job.future, error=own)
            return
        start = 0
        for job in jobs:
            _settle(job.future, results[start : start + len(job.items)])
            start += len(job.items)


def _settle(future: asyncio.Future[list[Any]], value: list[Any] | None = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value if value is not None else [])
