"""Checkpoint directories: one safetensors file per model part, a hashed manifest, optional trainer state.

Layout of `<run>/checkpoints/step-00000100/`:
    manifest.json        format, step, versions, resolved run config, per part plugin + config + file,
                         sha256/size of every other file, new parameter names, lineage
    vision.safetensors   (video.safetensors), text.safetensors, fusion.safetensors, heads.safetensors
    tokenizer/           the text tokenizer (`Tokenizer.save`)
    assets/<part>/       what a part's exported config needs to rebuild it (e.g. HF config.json, tokenizer)
    trainer.pt           optimizer, scheduler, (grad scaler), RNG states: tensors/lists only (weights_only)
    trainer.json         step and the data position (JSON)
Each module part also records an exported config (`export_config` of the module): fields that rebuild
the same architecture with no file outside the checkpoint; `${checkpoint}` in it stands for the
checkpoint directory, so a checkpoint can be moved (x2vlm_core/loading.py rebuilds models from it).
A checkpoint is written into a `.tmp-*` directory, fsynced and renamed into place, so a crash leaves
either the complete directory or nothing under its final name; `latest_checkpoint` verifies hashes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from registry import PluginError
from x2vlm_core.config import RunConfig
from x2vlm_core.contracts import CHECKPOINT_VAR

__all__ = [
    "ASSETS",
    "FORMAT_VERSION",
    "MODULE_PARTS",
    "STEP_DIR",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "Alias",
    "CheckpointError",
    "FileRecord",
    "Manifest",
    "PartRecord",
    "checkpoint_name",
    "checkpoints_dir",
    "list_checkpoints",
    "map_strings",
    "sha256_file",
]

logger = logging.getLogger(__name__)


FORMAT_VERSION = 2  # 1: x2vlm 0.1 (heads under the model's attribute names, checkpoint/migrate.py)


STEP_DIR = re.compile(r"^step-(\d{8,})$")


TMP_PREFIX = ".tmp-"


TRASH_PREFIX = ".trash-"


MODULE_PARTS = ("vision", "video", "text", "fusion")


_CHUNK = 1 << 20


ASSETS = "assets"


class CheckpointError(PluginError):
    """A checkpoint directory is missing, incomplete, corrupt, or does not match the model."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRecord(_Frozen):
    """Size and content hash of one file in the checkpoint directory."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Alias(_Frozen):
    """A state-dict key stored once under another part/key (a tensor shared between modules)."""

    part: str
    key: str


class PartRecord(_Frozen):
    """One model part: the plugin that built it, its validated config, its file and shared-tensor aliases."""

    plugin: str | None = Field(description="plugin name; None for the core heads")
    config: dict[str, Any]
    file: str
    aliases: dict[str, Alias] = Field(default_factory=dict, description="key -> where its tensor is stored")
    exported: dict[str, Any] | None = Field(
        None, description="plugin fields that rebuild the architecture from files inside the checkpoint "
        f"({CHECKPOINT_VAR} = its directory); None for the heads and for checkpoints written before exports",
    )


class Manifest(_Frozen):
    """Everything `manifest.json` holds (see the module docstring)."""

    format_version: int
    step: int = Field(ge=0)
    created: str
    versions: dict[str, str]
    config: dict[str, Any] = Field(description="the resolved RunConfig (model_dump(mode='json'))")
    parts: dict[str, PartRecord]
    files: dict[str, FileRecord] = Field(description="relative posix path -> record; manifest.json excluded")
    new_parameters: list[str]
    lineage: list[dict[str, Any]]
    has_trainer_state: bool

    def run_config(self) -> RunConfig:
        """The run config this checkpoint was written with."""
        return RunConfig.model_validate(self.config)


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint at `step`: step-00000100."""
    return f"step-{step:08d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step-*` directory under `<run>/checkpoints`, oldest first (unverified)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """A JSON value (dicts, lists/tuples, scalars) with `fn` applied to every string in it."""
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, str) else value
