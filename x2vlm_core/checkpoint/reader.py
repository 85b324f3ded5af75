"""Reading checkpoints: manifest validation, hash verification, the newest good one, strict loads."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path, PurePosixPath

import torch
from pydantic import ValidationError
from torch import Tensor

from registry import validation_error
from x2vlm_core.checkpoint.format import (
    FORMAT_VERSION,
    STEP_DIR,
    CheckpointError,
    FileRecord,
    Manifest,
    list_checkpoints,
    sha256_file,
)
from x2vlm_core.checkpoint.migrate import upgrade_aliases, upgrade_part_state
from x2vlm_core.checkpoint.trainer_state import TrainerState, rng_from_plain
from x2vlm_core.checkpoint.weights import WeightsError, load_state_file, load_state_strict
from x2vlm_core.model import X2VLM

__all__ = ["check_file", "latest_checkpoint", "load_model_state", "load_trainer_state", "read_manifest", "verify_checkpoint"]

logger = logging.getLogger(__name__)


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate `manifest.json` (no file hashing; see verify_checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory")
    file = path / "manifest.json"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} has no manifest.json (its save did not finish)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"checkpoint {path}: manifest.json is unreadable or not valid JSON ({error})"
        ) from None
    if (
        isinstance(data, dict)
        and isinstance(data.get("format_version"), int)
        and data["format_version"] > FORMAT_VERSION
    ):
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}, newer than this x2vlm "
            f"understands ({FORMAT_VERSION}); upgrade x2vlm"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        raise CheckpointError(f"checkpoint {path}: {validation_error(error, '', 'manifest.json')}") from None
    for name in manifest.files:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or name == "manifest.json":
            raise CheckpointError(f"checkpoint {path}: manifest.json lists an invalid file path {name!r}")
    for part, record in manifest.parts.items():
        if record.file not in manifest.files:
            raise CheckpointError(
                f"checkpoint {path}: part {part!r} file {record.file} is not in the manifest's files"
            )
    if manifest.has_trainer_state and not {"trainer.pt", "trainer.json"} <= set(manifest.files):
        raise CheckpointError(
            f"checkpoint {path}: has_trainer_state is set but trainer.pt/trainer.json are not listed"
        )
    return manifest


def check_file(path: Path, name: str, record: FileRecord) -> None:
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path}: file {name} is missing")
    size = file.stat().st_size
    if size != record.size:
        raise CheckpointError(
            f"checkpoint {path}: file {name} has {size} bytes, the manifest says {record.size} (truncated?)"
        )
    digest = sha256_file(file)
    if digest != record.sha256:
        raise CheckpointError(
            f"checkpoint {path}: file {name} has sha256 {digest[:12]}…, the manifest says {record.sha256[:12]}… (corrupt)"
        )


def verify_checkpoint(path: str | Path) -> Manifest:
    """Check the manifest and every file's size and sha256; raise CheckpointError naming the first problem."""
    path = Path(path)
    manifest = read_manifest(path)
    match = STEP_DIR.match(path.name)
    if match and int(match.group(1)) != manifest.step:
        raise CheckpointError(
            f"checkpoint {path}: directory says step {int(match.group(1))}, manifest says {manifest.step}"
        )
    for name, record in manifest.files.items():
        check_file(path, name, record)
    return manifest


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint under `<run>/checkpoints` that verifies; broken ones are skipped with a warning."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            logger.warning("skipping broken checkpoint, trying an earlier one: %s", error)
            continue
        return path
    return None


def load_model_state(model: X2VLM, path: str | Path, parts: Collection[str] | None = None) -> set[str]:
    """Strictly load checkpoint parts (default: all, which must equal the model's parts) into `model`.

    Returns the loaded state-dict names, prefixed as in `model.state_dict()`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if parts is None:
        if list(manifest.parts) != model.parts():
            raise CheckpointError(
                f"checkpoint {path} has parts {list(manifest.parts)} but the model has {model.parts()}; "
                "pass `parts` to load a subset"
            )
        wanted = list(manifest.parts)
    else:
        wanted = list(parts)
        unknown = [p for p in wanted if p not in manifest.parts]
        if unknown:
            raise CheckpointError(
                f"checkpoint {path} has no part(s) {unknown}; it has {list(manifest.parts)}"
            )

    cache: dict[str, dict[str, Tensor]] = {}

    def part_file(part: str) -> dict[str, Tensor]:
        if part not in cache:
            record = manifest.parts[part]
            check_file(path, record.file, manifest.files[record.file])
            cache[part] = upgrade_part_state(manifest.format_version, part, load_state_file(path / record.file))
        return cache[part]

    loaded: set[str] = set()
    for part in wanted:
        record = manifest.parts[part]
        state = dict(part_file(part))
        for key, alias in upgrade_aliases(manifest.format_version, part, record.aliases).items():
            source = part_file(alias.part)
            if alias.key not in source:
                raise CheckpointError(
                    f"checkpoint {path}: alias {part}/{key} -> {alias.part}/{alias.key} is dangling"
                )
            state[key] = source[alias.key]
        if part not in model.parts():
            raise CheckpointError(f"checkpoint {path} has a {part!r} part but the model has no {part} module")
        try:
            report = load_state_strict(model.part_module(part), state, f"{path / record.file}")
        except WeightsError as error:
            raise CheckpointError(f"checkpoint {path}, part {part!r}: {error}") from None
        loaded |= {f"{part}.{k}" for k in report.loaded}
    return loaded


def load_trainer_state(path: str | Path) -> TrainerState | None:
    """Optimizer/scheduler/RNG/data state of a checkpoint (None when it was saved without one)."""
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.has_trainer_state:
        return None
    for name in ("trainer.pt", "trainer.json"):
        check_file(path, name, manifest.files[name])
    try:
        blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        info = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path}: cannot read trainer state ({type(error).__name__}: {error})"
        ) from None
    if blob.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: trainer.pt format {blob['format_version']} is newer than this x2vlm"
        )
    if int(blob["step"]) != int(info["step"]) or int(blob["step"]) != manifest.step:
        raise CheckpointError(
            f"checkpoint {path}: trainer.pt, trainer.json and manifest disagree on the step"
        )
    return TrainerState(
        step=int(blob["step"]),
        optimizer=blob["optimizer"],
        scheduler=blob["scheduler"],
        rng=rng_from_plain(blob["rng"]),
        data_state=dict(info["data_state"]),
        scaler=blob["scaler"],
    )
