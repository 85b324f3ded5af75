"""Data-parallel helpers for the losses: all-gather rows across ranks, and denominators over all ranks.

With DDP every rank's gradient is averaged. A loss that divides its local sum by the count over ALL
ranks / world size (`shared_denominator`) therefore trains exactly like one process on the global batch,
also when ranks hold different numbers of pairs (box pairs vary per batch). `gather_rows` lets the
contrastive loss see every rank's features; its backward sums the gathered gradient over ranks, so each
rank's features also get the gradient of the other ranks' losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gather_rows", "shared_denominator", "world_size"]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return int(torch.distributed.get_world_size()) if _distributed() else 1


def _sizes(local: int, device: torch.device) -> list[int]:
    # One tiny collective; ranks may hold different numbers of rows.
    size = torch.tensor([local], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    """cat over ranks of each rank's first sizes[r] rows (padded to max(sizes) for all_gather)."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    chunks = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(chunks, padded)
    chunks[torch.distributed.get_rank()] = x
    return torch.cat([c[:n] for c, n in zip(chunks, sizes, strict=True)])


class _GatherRows(torch.autograd.Function):
    """_gather whose backward all-reduces (sums) the gradient over ranks and returns this rank's rows."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes  # type: ignore[attr-defined]
        return _gather(x.detach(), sizes)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        sizes: list[int] = ctx.sizes  # type: ignore[attr-defined]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may share `grad`
        torch.distributed.all_reduce(grad)
        start = sum(sizes[: torch.distributed.get_rank()])
        return grad[start : start + sizes[torch.distributed.get_rank()]], None


def gather_rows(x: Tensor) -> Tensor:
    """All-gather x [n, ...] along dim 0 across ranks (sizes may differ) → [Σn, ...]; identity on one process."""
    if world_size() == 1:
        return x
    sizes = _sizes(x.shape[0], x.device)
    if x.requires_grad:
        out: Tensor = _GatherRows.apply(x, sizes)
        return out
    return _gather(x, sizes)


def shared_denominator(count: Tensor) -> Tensor:
    """A local count (scalar) summed over ranks / world size, detached, float32.

    local_sum / shared_denominator(local_count), averaged over ranks (as DDP averages gradients), equals
    global_sum / global_count. On one process it is `count`. Clamped so that a global count of 0 gives a
    loss of exactly 0, never NaN.
    """
    total = count.detach().float().clone()
    n = world_size()
    if n > 1:
        torch.distributed.all_reduce(total)
        total = total / n
    return total.clamp_min(1.0 / n)
