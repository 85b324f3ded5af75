"""Per-step seeding: a step's randomness depends only on (seed, rank, step)."""

from __future__ import annotations

import random

import torch

__all__ = ["seed_step"]


def seed_step(seed: int, rank: int, step: int) -> None:
    """Re-seed torch (CPU + CUDA), `random` and numpy from (seed, rank, step).

    Why: a step's randomness then depends on nothing but its number, so a resumed run repeats it
    exactly on every rank without per-rank RNG snapshots, and ranks draw different dropout/masks.
    """
    from x2vlm_core.data.collate import stable_id

    value = stable_id("x2vlm-train-step", seed, rank, step) & 0x7FFF_FFFF_FFFF_FFFF
    torch.manual_seed(value)
    random.seed(value)
    try:
        import numpy as np
    except ImportError:  # numpy is optional
        return
    np.random.seed(value % (1 << 32))
