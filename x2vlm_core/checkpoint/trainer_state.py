"""Trainer state for exact resume: optimizer, scheduler, RNG snapshots, data position (weights_only-safe)."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["RngState", "TrainerState", "capture_rng", "restore_rng", "rng_from_plain", "rng_to_plain"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RngState:
    """Generator states: torch CPU [uint8], CUDA per device, python `random`, numpy (None if absent)."""

    torch_cpu: Tensor
    torch_cuda: list[Tensor]
    python: tuple[int, list[int], float | None]
    numpy: tuple[str, list[int], int, int, float] | None


@dataclass(frozen=True)
class TrainerState:
    """What an exact resume needs beyond the weights; `data_state` must be JSON-able."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: RngState
    data_state: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None


def capture_rng() -> RngState:
    """Snapshot every random generator a training step may draw from."""
    version, state, gauss = random.getstate()
    numpy_state: tuple[str, list[int], int, int, float] | None = None
    try:
        import numpy as np
    except ImportError:  # numpy is optional; nothing to capture then
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        numpy_state = (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached))
    return RngState(
        torch_cpu=torch.get_rng_state(),
        torch_cuda=list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        python=(int(version), [int(s) for s in state], gauss),
        numpy=numpy_state,
    )


def restore_rng(rng: RngState) -> None:
    """Put every generator back to a captured state (CUDA only when the device count matches)."""
    torch.set_rng_state(rng.torch_cpu)
    if rng.torch_cuda and torch.cuda.is_available():
        if len(rng.torch_cuda) != torch.cuda.device_count():
            logger.warning(
                "checkpoint holds CUDA RNG states for %d devices but %d are visible; CUDA generators not restored",
                len(rng.torch_cuda),
                torch.cuda.device_count(),
            )
        else:
            torch.cuda.set_rng_state_all(rng.torch_cuda)
    version, state, gauss = rng.python
    random.setstate((version, tuple(state), gauss))
    if rng.numpy is not None:
        import numpy as np

        kind, keys, pos, has_gauss, cached = rng.numpy
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def rng_to_plain(rng: RngState) -> dict[str, Any]:
    # Long state vectors as int64 tensors: compact and readable with weights_only=True.
    out: dict[str, Any] = {
        "torch_cpu": rng.torch_cpu,
        "torch_cuda": list(rng.torch_cuda),
        "python_version": rng.python[0],
        "python_state": torch.tensor(rng.python[1], dtype=torch.int64),
        "python_gauss": rng.python[2],
        "numpy": None,
    }
    if rng.numpy is not None:
        kind, keys, pos, has_gauss, cached = rng.numpy
        out["numpy"] = {
            "kind": kind,
            "keys": torch.tensor(keys, dtype=torch.int64),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        }
    return out


def rng_from_plain(data: Mapping[str, Any]) -> RngState:
    np_data = data["numpy"]
    numpy_state = None
    if np_data is not None:
        numpy_state = (
            str(np_data["kind"]),
            [int(k) for k in np_data["keys"].tolist()],
            int(np_data["pos"]),
            int(np_data["has_gauss"]),
            float(np_data["cached"]),
        )
    gauss = data["python_gauss"]
    return RngState(
        torch_cpu=data["torch_cpu"],
        torch_cuda=list(data["torch_cuda"]),
        python=(int(data["python_version"]), [int(s) for s in data["python_state"].tolist()], gauss),
        numpy=numpy_state,
    )
