"""A counting progress bar for embedding and index building: "label n/total, items/s, ETA" on stderr.

On a terminal the line is redrawn in place; elsewhere a plain line is printed at most every `every_s`
seconds (and at the end), so logs of long builds stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Counter"]

_ERASE = "\r\x1b[K"


class Counter:
    """Counts `total` items; `advance(n)` after each batch, `close()` at the end (also as a context manager)."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None,
                 every_s: float = 10.0) -> None:
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.every_s = 0, every_s
        self.t0 = self._last = time.perf_counter()

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write(_ERASE + self.line())
            self.stream.flush()
        elif now - self._last >= self.every_s:
            print(self.line(), file=self.stream, flush=True)
            self._last = now

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.label} {self.done}/{self.total} | {rate:.1f}/s | "
                f"ETA {int(left // 60)}:{int(left % 60):02d}")

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(_ERASE + self.line() + "\n")
        else:
            print(self.line(), file=self.stream)
        self.stream.flush()
        self.enabled = False
