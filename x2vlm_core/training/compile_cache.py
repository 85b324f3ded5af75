"""train.compile: what is compiled (compile_in_place), and torch.compile's artifacts kept in one file between
runs (torch's portable "mega-cache").

A compiled run spends minutes compiling before its first step (~2.5 on an H200 for base). Inductor caches on
the local disk already, but a fresh machine (a cluster node, a lent GPU) starts cold. The trainer loads the
file before the first step and rewrites it after the first step and at each checkpoint, so a resumed or
repeated run, here or on a machine with the same torch and GPU, reuses the compiled graphs and kernels.
torch checks versions and devices itself; a file it cannot use is ignored with a warning, never an error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from x2vlm_core.model import X2VLM

__all__ = ["compile_in_place", "load_compile_cache", "save_compile_cache"]

log = logging.getLogger("x2vlm.train")


def compile_in_place(scope: str, model: X2VLM, step: nn.Module) -> None:
    """train.compile's scope: "encoders" (vision, text, fusion) or "step" (the whole step, losses included);
    in place, so state-dict keys stay the eager ones. "off" compiles nothing."""
    if scope == "encoders":
        model.compile_encoders()
    elif scope == "step":
        step.compile()
    elif scope != "off":
        raise ValueError(f"compile scope must be off, encoders or step, got {scope!r}")


def _count(info: object) -> int:
    artifacts = getattr(info, "artifacts", None) or {}
    return sum(len(v) for v in artifacts.values())


def _supported() -> bool:
    return hasattr(torch.compiler, "save_cache_artifacts")  # torch ≥ 2.7


def load_compile_cache(path: Path) -> int:
    """Hot-load the artifacts in `path` (before anything compiles); the number loaded, 0 without a usable file."""
    if not path.is_file() or not _supported():
        return 0
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as error:  # a stale or torn cache must not stop training: compile from scratch
        info, why = None, f"{type(error).__name__}: {error}"
    else:
        why = "torch could not read it"  # torch logs its own reason and returns None
    if info is None:
        log.warning("compile cache %s not used (%s); compiling from scratch", path, why)
        return 0
    return _count(info)


def save_compile_cache(path: Path) -> int:
    """Write every artifact this process compiled or loaded to `path` (atomically); the number written.
    A failure (no space, no permission) is a warning: the cache only saves time."""
    if not _supported():
        return 0
    tmp = None
    try:
        out = torch.compiler.save_cache_artifacts()
        if out is None:
            return 0
        data, info = out
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of its own: runs sharing one cache never write into each other's
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never a torn one
        return _count(info)
    except Exception as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        log.warning("compile cache %s not written (%s: %s)", path, type(error).__name__, error)
        return 0
