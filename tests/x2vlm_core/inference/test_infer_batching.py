"""Dynamic batching: concurrent jobs of one operation share a model call; operations never mix; one bad job
fails alone."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from x2vlm_core.inference.batching import Batcher


class Recorder:
    """A fake model call that records each batch it gets (and how many run at once)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[object]] = []
        self.delay, self.running, self.most = delay, 0, 0
        self.lock = threading.Lock()

    def __call__(self, items: list[object]) -> list[object]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        if any(item == "bad" for item in items):
            with self.lock:
                self.running -= 1
            raise ValueError("bad item")
        self.batches.append(list(items))
        with self.lock:
            self.running -= 1
        return [f"{item}!" for item in items]


def _run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_concurrent_jobs_are_batched_and_results_go_back_to_their_owners() -> None:
    fn = Recorder()

    async def main() -> list[list[object]]:
        batcher = Batcher(max_items=64, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(("op",), fn, [i, i + 100]) for i in range(10)))
        finally:
            await batcher.stop()

    results = _run(main())
    assert results == [[f"{i}!", f"{i + 100}!"] for i in range(10)]
    assert len(fn.batches) == 1 and len(fn.batches[0]) == 20


def test_batches_hold_at_most_max_items_and_run_one_at_a_time() -> None:
    fn = Recorder(delay=0.01)

    async def main() -> None:
        batcher = Batcher(max_items=4, max_wait_s=0.02)
        batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(("op",), fn, [i]) for i in range(10)))
            assert batcher.stats.batches == len(fn.batches) and batcher.stats.items == 10
            assert batcher.stats.largest == 4
        finally:
            await batcher.stop()

    _run(main())
    assert [len(b) for b in fn.batches] == [4, 4, 2] and fn.most == 1  # the model is never called concurrently


def test_operations_are_batched_separately() -> None:
    fn = Recorder()

    async def main() -> tuple[object, ...]:
        batcher = Batcher(max_items=64, max_wait_s=0.05)
        batcher.start()
        try:
            return tuple(await asyncio.gather(batcher.submit(("a",), fn, [1]), batcher.submit(("b", 3), fn, [2]),
                                              batcher.submit(("a",), fn, [3])))
        finally:
            await batcher.stop()

    assert _run(main()) == (["1!"], ["2!"], ["3!"])
    assert sorted(map(sorted, fn.batches)) == [[1, 3], [2]]  # type: ignore[type-var]


def test_a_failing_job_fails_alone() -> None:
    fn = Recorder()

    async def main() -> list[object]:
        batcher = Batcher(max_items=64, max_wait_s=0.05)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit(("op",), fn, ["x"]), batcher.submit(("op",), fn, ["bad"]),
                                        batcher.submit(("op",), fn, ["y"]), return_exceptions=True)
        finally:
            await batcher.stop()

    good, bad, other = _run(main())
    assert good == ["x!"] and other == ["y!"] and isinstance(bad, ValueError)


def test_a_lone_request_waits_at_most_max_wait() -> None:
    fn = Recorder()

    async def main() -> float:
        batcher = Batcher(max_items=64, max_wait_s=0.02)
        batcher.start()
        try:
            t0 = time.perf_counter()
            await batcher.submit(("op",), fn, [1])
            return time.perf_counter() - t0
        finally:
            await batcher.stop()

    assert _run(main()) < 1.0  # generous: a loaded CI machine; without the deadline it would hang
    with pytest.raises(ValueError, match="max_items must be at least 1"):
        Batcher(max_items=0)
