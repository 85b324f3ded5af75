"""Rebuild a trained X2VLM from a checkpoint directory alone (portable: it may have been moved or copied).

Every module is built from the exported config its checkpoint part records (`export_config` of the
plugin, with `${checkpoint}` replaced by the directory's real path), the heads from the run config's
model section, and then every part is loaded strictly from the checkpoint's safetensors files (layout:
checkpoint/format.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from registry import PluginError, PluginRegistry, validation_error
from x2vlm_core.checkpoint import (
    CheckpointError,
    Manifest,
    latest_checkpoint,
    load_model_state,
    read_manifest,
    verify_checkpoint,
)
from x2vlm_core.checkpoint.format import map_strings
from x2vlm_core.config import ModelConfig, PluginSection
from x2vlm_core.contracts import CHECKPOINT_VAR
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model, build_task

__all__ = ["LoadedModel", "load_model", "model_config_of", "resolve_checkpoint"]

_MODULE_PARTS = ("vision", "video", "text", "fusion")


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint (in eval mode, on the CPU), its manifest and its directory."""

    model: X2VLM
    manifest: Manifest
    path: Path


def resolve_checkpoint(path: str | Path) -> tuple[Path, Manifest]:
    """A checkpoint directory, or a run directory's newest complete checkpoint; verified (sizes + sha256)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not (path / "manifest.json").exists() and (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"run directory {path} has no complete checkpoint under {path / 'checkpoints'} "
                "(none finished saving, or every one fails its hash check)"
            )
        return latest, read_manifest(latest)  # latest_checkpoint verified it
    return path, verify_checkpoint(path)


def _at(fields: dict[str, Any], path: Path) -> dict[str, Any]:
    """An exported config with `${checkpoint}` replaced by the checkpoint's real directory."""
    directory = str(path.resolve())
    return dict(map_strings(fields, lambda text: text.replace(CHECKPOINT_VAR, directory)))


def model_config_of(manifest: Manifest, path: Path) -> ModelConfig:
    """The model section that rebuilds a checkpoint's architecture: each module part's exported config
    (its recorded config for checkpoints written before exports), the heads from the run config."""
    model = manifest.config.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"checkpoint {path}: the manifest's run config has no model section")
    data = dict(model)
    for part in _MODULE_PARTS:
        record = manifest.parts.get(part)
        if record is None:
            if part == "video":
                data["video"] = None
                continue
            raise CheckpointError(f"checkpoint {path} has no {part!r} part (it has {', '.join(manifest.parts)})")
        if record.plugin is None:
            raise CheckpointError(f"checkpoint {path}: part {part!r} records no plugin name")
        fields = record.exported if record.exported is not None else record.config
        data[part] = {"plugin": record.plugin, **_at(fields, path)}
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as error:
        raise CheckpointError(f"checkpoint {path}: {validation_error(error, 'model', 'the recorded model config')}") from None


def load_model(checkpoint: str | Path, registry: PluginRegistry | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint (or a run directory's newest checkpoint) holds and load it strictly.

    Args:
        checkpoint: a checkpoint directory (`.../checkpoints/step-XXXXXXXX`) or a run directory.
        registry: where plugins are found (default: the installed ones).
    Raises:
        CheckpointError: naming the checkpoint and what is wrong (missing/corrupt file, a plugin that is
            not installed, weights that do not match the rebuilt modules).
    """
    registry = registry or default_registry()
    path, manifest = resolve_checkpoint(checkpoint)
    model_cfg = model_config_of(manifest, path)
    try:
        model = build_model(model_cfg, registry)
        task = manifest.parts.get("task")
        if task is not None:  # a fine-tuned checkpoint: its task is rebuilt too
            fields = task.exported if task.exported is not None else task.config
            section = PluginSection.model_validate({"plugin": task.plugin, **_at(fields, path)})
            model.task = build_task(section, model, registry)
    except CheckpointError:
        raise
    except (PluginError, ValueError, TypeError, OSError) as error:
        raise CheckpointError(
            f"checkpoint {path}: cannot rebuild the model from its manifest ({type(error).__name__}: {error})"
        ) from None
    load_model_state(model, path)
    model.eval()
    return LoadedModel(model=model, manifest=manifest, path=path)
