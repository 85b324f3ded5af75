"""A non-finite loss or gradient never reaches the weights: the step is skipped, counted and reported.

The decision stays on the device: a fused optimizer (CUDA) skips its update itself through `found_inf`,
so the step needs no host sync; elsewhere the host reads one flag (on a CPU that is free). The counts are
read once per log interval; after `limit` bad steps in a row the run stops with what to try.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from registry import PluginError

__all__ = ["NumericGuard", "TrainingDiverged"]


class TrainingDiverged(PluginError):
    """The losses or gradients stayed non-finite for too many steps in a row (printed as one paragraph)."""


class NumericGuard:
    """Per step: `finite = guard.check(parts, grad_norm, step)`, then `guard.step(optimizer, finite)`;
    per log interval: `guard.report(lr)`."""

    def __init__(self, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.run = torch.zeros((), dtype=torch.long, device=device)  # bad steps in a row, now
        self.worst = torch.zeros((), dtype=torch.long, device=device)  # longest run since the last report
        self.bad = torch.zeros((), dtype=torch.long, device=device)  # bad steps since the last report
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # first bad step since the last report
        self.flags: dict[str, Tensor] = {}  # loss name → went non-finite since the last report
        self.skipped = 0  # over the whole run (host)
        self.named: set[str] = set()  # losses already reported as non-finite

    def check(self, parts: Mapping[str, Tensor], grad_norm: Tensor, step: int) -> Tensor:
        """A device bool: every loss part and the gradient norm are finite."""
        finite = torch.isfinite(grad_norm.detach().float())
        for name, value in parts.items():
            ok = torch.isfinite(value.detach().float())
            self.flags[name] = self.flags.get(name, torch.zeros_like(ok)) | ~ok
            finite = finite & ok
        self.run = torch.where(finite, torch.zeros_like(self.run), self.run + 1)
        self.worst = torch.maximum(self.worst, self.run)
        self.bad = self.bad + (~finite).long()
        self.first = torch.where((self.first < 0) & ~finite, torch.full_like(self.first, step), self.first)
        return finite

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, finite: Tensor) -> None:
        """The optimizer update, only when `finite` (skipped on the device by fused optimizers)."""
        inner = getattr(optimizer, "optimizer", optimizer)  # Fabric wraps optimizers
        if getattr(inner, "_step_supports_amp_scaling", False):
            inner.found_inf = (~finite).float()  # type: ignore[attr-defined]
            inner.grad_scale = None  # type: ignore[attr-defined]
            optimizer.step()
            del inner.found_inf, inner.grad_scale  # type: ignore[attr-defined]
        elif bool(finite):
            optimizer.step()

    def report(self, lr: float) -> int:
        """Bad steps since the last report (one host sync); logs each newly non-finite loss once; raises
        TrainingDiverged after `limit` bad steps in a row."""
        bad, worst, first = (int(v) for v in torch.stack((self.bad, self.worst, self.first)).cpu())
        flagged = sorted(name for name, flag in self.flags.items() if bool(flag))
        self.bad.zero_()
        self.worst.copy_(self.run)
        self.first.fill_(-1)
        self.flags = {}
        if not bad:
            return 0
        self.skipped += bad
        import logging

        new = [n for n in flagged if n not in self.named] or (["gradients"] if not flagged else [])
        if new:
            self.named |= set(new)
            what = ", ".join(new)
            logging.getLogger("x2vlm.train").warning(
                "step %d: %s became non-finite (NaN/inf); the step was skipped and the weights left as they "
                "were (%d skipped steps so far)", first, what, self.skipped,
            )
        if worst >= self.limit:
            raise TrainingDiverged(
                f"training diverged: {worst} steps in a row had non-finite losses or gradients (first at step "
                f"{first}: {', '.join(flagged) or 'gradients'}); no update reached the weights. Try a lower "
                f"train.lr (now {lr:g}) or more warm-up, precision 32-true or bf16-mixed instead of 16-mixed, or a "
                "smaller train.grad_clip; resume from the last checkpoint with --resume after changing the config"
            )
        return bad
