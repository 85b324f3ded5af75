"""A live one-line progress bar for the step loop that log records do not overwrite.

On a terminal the bar is one line redrawn in place ("\\r", then the text, then "erase to end of line").
A log record printed meanwhile would land on that line, so while the bar is shown the logging
handlers that write to the bar's terminal are wrapped: the wrapper erases the bar, lets the record
print on a clean line, then redraws the bar below it. Not on a terminal, every update is a plain line.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["Progress", "ProgressSafeHandler"]

_ERASE = "\r\x1b[K"  # carriage return + ANSI "erase to end of line"


class Progress:
    """A live one-line progress bar (step, losses, pairs/s, ETA); plain lines when `stream` is not a terminal.

    `stream` defaults to sys.stderr. While shown on a terminal, the root logger's handlers that write to
    the same stream are wrapped in ProgressSafeHandler; `close()` (or leaving a `with` block) unwraps them.
    """

    def __init__(self, total: int, start: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.lock = threading.RLock()  # shared with the handlers: a record and a redraw never interleave
        self._line = ""  # what the bar shows now ("" = nothing drawn)
        self._wrapped: list[tuple[logging.Logger, int, ProgressSafeHandler]] = []
        if self.enabled and self.tty:
            self._wrap_handlers(logging.getLogger())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, step: int, losses: Mapping[str, float], pairs_per_s: float) -> None:
        """Show `losses` (name → value, in order), the throughput and the time left."""
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
        line = (f"step {step}/{self.total} | {parts} | {pairs_per_s:.0f} pairs/s | "
                f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        with self.lock:
            if self.tty:
                # one column short of the width: a full line would wrap and "\r" could not reach its start
                self._line = line[: max(20, shutil.get_terminal_size().columns - 1)]
                self.redraw()
            else:
                print(line, file=self.stream, flush=True)

    def clear(self) -> None:
        """Erase the bar from its line (the cursor stays at the line's start)."""
        with self.lock:
            if self.tty and self._line:
                self.stream.write(_ERASE)
                self.stream.flush()

    def redraw(self) -> None:
        """Draw the bar again on the current line."""
        with self.lock:
            if self.tty and self._line:
                self.stream.write(_ERASE + self._line)
                self.stream.flush()

    def close(self) -> None:
        """End the bar's line and give the logging handlers back."""
        with self.lock:
            if self.enabled and self.tty and self._line:
                print(file=self.stream, flush=True)
            self._line = ""
            for logger, index, wrapper in reversed(self._wrapped):
                if index < len(logger.handlers) and logger.handlers[index] is wrapper:
                    logger.handlers[index] = wrapper.inner
            self._wrapped = []

    def _wrap_handlers(self, logger: logging.Logger) -> None:
        for index, handler in enumerate(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is self.stream:
                wrapper = ProgressSafeHandler(handler, self)
                logger.handlers[index] = wrapper
                self._wrapped.append((logger, index, wrapper))


class ProgressSafeHandler(logging.Handler):
    """Wraps a handler that writes to the progress bar's terminal: erase the bar, emit the record, redraw."""

    def __init__(self, inner: logging.Handler, progress: Progress) -> None:
        super().__init__(inner.level)
        self.inner, self.progress = inner, progress

    def handle(self, record: logging.LogRecord) -> bool:
        # the inner handler keeps its own level, filters, formatter and lock
        with self.progress.lock:
            self.progress.clear()
            try:
                return bool(self.inner.handle(record))
            finally:
                self.progress.redraw()

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does the work
        self.inner.emit(record)

    def setLevel(self, level: int | str) -> None:
        super().setLevel(level)
        self.inner.setLevel(level)
