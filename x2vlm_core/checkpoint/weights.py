"""Safe weight files: safetensors or `torch.load(weights_only=True)`, and strict loads that explain themselves."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from registry import PluginError

__all__ = ["LoadReport", "WeightsError", "load_state_file", "load_state_strict"]


class WeightsError(PluginError):
    """A weight file is missing, unreadable, or does not match the module it is loaded into."""


def load_state_file(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from .safetensors, or .pth/.pt/.bin/.ckpt with `weights_only=True`.

    Args:
        path: the file.
        key: for torch files holding a wrapper dict, the entry to use (e.g. "model"); when None, the
            usual wrappers ("model", "state_dict", "module") are unwrapped if present.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist; pass a local path (nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as error:  # a corrupt header or a torn file: the safetensors error names neither
            raise WeightsError(f"cannot read the safetensors file {path} ({type(error).__name__}: {error}); the "
                               "file is damaged or not safetensors: restore or re-create it") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"cannot read {path} with weights_only=True ({type(error).__name__}: {error}); "
            "convert it to safetensors or a plain state dict"
        ) from None
    keys = [key] if key is not None else ["model", "state_dict", "module"]
    for k in keys:
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    else:
        if key is not None:
            raise WeightsError(f"{path} has no entry {key!r}; entries: {sorted(obj)[:20]}")
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


@dataclass(frozen=True)
class LoadReport:
    """What a strict load consumed: `loaded` parameter names and the allowed `missing` ones (kept as initialised)."""

    loaded: frozenset[str]
    missing: frozenset[str]


def load_state_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    allow_missing: Collection[str] = (),
    allow_unexpected: Collection[str] = (),
) -> LoadReport:
    """Load `state` into `module`; every missing or unexpected key is an error unless named as allowed.

    `allow_missing`/`allow_unexpected` hold exact names or prefixes ending in "." (a whole sub-module).
    Shape mismatches are always errors. `source` (a file or plugin name) goes into the message.
    """

    def allowed(name: str, patterns: Collection[str]) -> bool:
        return any(name == p or (p.endswith(".") and name.startswith(p)) for p in patterns)

    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not allowed(k, allow_missing))
    unexpected = sorted(k for k in state if k not in own and not allowed(k, allow_unexpected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}"
        )
    if problems:
        shapes = sorted(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in own
            if k in state and state[k].shape != own[k].shape
        )
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:6])}")
        raise WeightsError(f"weights from {source} do not match {type(module).__name__}: " + "; ".join(problems))
    usable = {k: v for k, v in state.items() if k in own}
    try:
        # Key sets were checked above (with the allowed exceptions); torch checks shapes after each
        # module's own `_load_from_state_dict` adapted what it can (e.g. a temporal table's length).
        module.load_state_dict(usable, strict=False)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise WeightsError(
            f"weights from {source} do not match {type(module).__name__}: shape mismatch: " + "; ".join(lines[:6])
        ) from None
    return LoadReport(loaded=frozenset(usable), missing=frozenset(k for k in own if k not in state))
