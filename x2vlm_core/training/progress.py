"""A live one-line progress bar for the step loop."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

__all__ = ["Progress"]


class Progress:
    """A live one-line progress bar (step, losses, pairs/s, ETA); plain lines when not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

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
        if self.tty:
            print("\r" + line[:160].ljust(160), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)
