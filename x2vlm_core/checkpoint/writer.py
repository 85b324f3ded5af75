"""Writing checkpoints: one safetensors file per part, exported configs + assets, trainer state, hashed manifest.

Atomic: written into a `.tmp-*` directory, fsynced, renamed into place; older ones pruned (keep-last-K).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor

from x2vlm_core.checkpoint.format import (
    ASSETS,
    FORMAT_VERSION,
    TMP_PREFIX,
    TRASH_PREFIX,
    Alias,
    CheckpointError,
    FileRecord,
    Manifest,
    PartRecord,
    checkpoint_name,
    checkpoints_dir,
    list_checkpoints,
    map_strings,
    sha256_file,
)
from x2vlm_core.checkpoint.reader import verify_checkpoint
from x2vlm_core.checkpoint.trainer_state import TrainerState, rng_to_plain
from x2vlm_core.contracts import CHECKPOINT_VAR
from x2vlm_core.model import X2VLM

__all__ = ["save_checkpoint"]

logger = logging.getLogger(__name__)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _versions() -> dict[str, str]:
    from x2vlm_core import __version__

    out = {"x2vlm": __version__, "torch": torch.__version__}
    for dist in ("transformers", "safetensors", "timm"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _json_checked(value: Any, what: str) -> Any:
    """A JSON round trip: rejects values that would not survive the manifest unchanged."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"{what} must be JSON-serialisable (plain dicts/lists/str/numbers): {error}"
        ) from None


def _storage_key(t: Tensor) -> tuple[Any, ...]:
    return (t.device, t.untyped_storage().data_ptr())


def _split_parts(model: X2VLM) -> dict[str, tuple[dict[str, Tensor], dict[str, Alias]]]:
    """Per part: tensors to write (CPU, contiguous, no shared storage) and aliases of tensors seen earlier."""
    seen: dict[tuple[Any, ...], tuple[str, str, Tensor]] = {}
    out: dict[str, tuple[dict[str, Tensor], dict[str, Alias]]] = {}
    for part in model.parts():
        tensors: dict[str, Tensor] = {}
        aliases: dict[str, Alias] = {}
        for key, value in model.part_module(part).state_dict().items():
            t = value.detach()
            storage = _storage_key(t)
            earlier = seen.get(storage)
            same_view = earlier is not None and (
                earlier[2].storage_offset() == t.storage_offset()
                and earlier[2].shape == t.shape
                and earlier[2].stride() == t.stride()
                and earlier[2].dtype == t.dtype
            )
            if earlier is not None and same_view:
                aliases[key] = Alias(part=earlier[0], key=earlier[1])
                continue
            if earlier is None:
                seen[storage] = (part, key, t)
            stored = t.to("cpu")
            # safetensors refuses views and storage shared between entries: write a private copy then.
            if (
                earlier is not None
                or not stored.is_contiguous()
                or stored.untyped_storage().nbytes() != stored.nbytes
            ):
                stored = stored.contiguous().clone()
            tensors[key] = stored
        out[part] = (tensors, aliases)
    covered = {f"{part}.{k}" for part, (t, a) in out.items() for k in (*t, *a)}
    left = sorted(set(model.state_dict()) - covered)
    if left:
        logger.warning("checkpoint does not store %d state entries: %s", len(left), ", ".join(left[:8]))
    return out


_HEAD_FIELDS = ("embed_dim", "temperature", "temperature_min", "temperature_max", "max_text_len")


def _part_record(part: str, config: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(plugin, fields) of a part from the run config: `model.<part>`, `task` for the task, the heads' fields."""
    model = config.get("model")
    if not isinstance(model, Mapping):
        raise CheckpointError("the run config given to save_checkpoint has no `model` mapping")
    if part == "heads":
        return None, {f: model[f] for f in _HEAD_FIELDS if f in model}
    section = config.get("task") if part == "task" else model.get(part)
    if not isinstance(section, Mapping) or "plugin" not in section:
        where = "task" if part == "task" else f"model.{part}"
        raise CheckpointError(f"the model has a {part!r} module but the run config has no {where} section")
    data = dict(copy.deepcopy(section))
    return str(data.pop("plugin")), data


def _export_part(model: X2VLM, part: str, config: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The module's `export_config` with its assets in `<checkpoint>/assets/<part>/`, paths made relative."""
    module = getattr(model, part)
    asset_dir = checkpoint / ASSETS / part
    asset_dir.mkdir(parents=True)
    exported = module.export_config(copy.deepcopy(config), asset_dir)
    if not isinstance(exported, dict):
        raise CheckpointError(
            f"{type(module).__name__}.export_config (part {part!r}) returned {type(exported).__name__}, not a dict"
        )
    exported = _json_checked(_relocate(exported, asset_dir, f"{CHECKPOINT_VAR}/{ASSETS}/{part}"),
                             f"the exported config of part {part!r}")
    if not any(asset_dir.iterdir()):
        asset_dir.rmdir()
    _warn_external(part, exported)
    return dict(exported)


def _relocate(value: Any, asset_dir: Path, reference: str) -> Any:
    """Strings naming `asset_dir` or a path inside it → `reference` + the rest; other values unchanged."""

    def relocated(text: str) -> str:
        try:
            rest = Path(text).relative_to(asset_dir)
        except ValueError:
            return text
        return reference if rest == Path(".") else f"{reference}/{rest.as_posix()}"

    return map_strings(value, lambda text: relocated(text) if text else text)


def _warn_external(part: str, value: Any) -> None:
    """Warn about strings that name existing files outside the checkpoint (a plugin whose export misses them)."""

    def check(text: str) -> str:
        if text.strip() and not text.startswith(CHECKPOINT_VAR) and Path(text).exists():
            logger.warning(
                "the exported config of checkpoint part %r still names %s outside the checkpoint; the plugin's "
                "export_config should copy it into its asset directory, or the checkpoint cannot be moved", part, text,
            )
        return text

    map_strings(value, check)


def _clean_leftovers(root: Path, keep: Path | None = None) -> None:
    """Remove `.tmp-*` / `.trash-*` directories left by interrupted saves (only the writer calls this)."""
    for entry in root.iterdir():
        if entry != keep and entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            logger.warning("removing leftover %s from an interrupted checkpoint save", entry)
            shutil.rmtree(entry, ignore_errors=True)


def save_checkpoint(
    run_dir: str | Path,
    model: X2VLM,
    step: int,
    config: Mapping[str, Any] | BaseModel,
    trainer_state: TrainerState | None,
    keep_last: int,
    lineage: list[dict[str, Any]],
    new_parameters: Collection[str],
) -> Path:
    """Atomically write `<run>/checkpoints/step-XXXXXXXX/` and prune older ones beyond `keep_last`.

    `config`: the run's config (a pydantic config or its JSON mapping) with a `model` section, and a `task`
    section when the model has a task.

    Call on one process only (rank 0) with a model holding full (unsharded) weights.
    """
    config = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    if step < 0:
        raise CheckpointError(f"step must be >= 0, got {step}")
    if keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1, got {keep_last}")
    if trainer_state is not None and trainer_state.step != step:
        raise CheckpointError(f"trainer_state.step is {trainer_state.step} but the checkpoint step is {step}")
    lineage = _json_checked(list(lineage), "lineage")
    data_state = (
        _json_checked(trainer_state.data_state, "trainer_state.data_state")
        if trainer_state is not None
        else None
    )
    known = set(model.state_dict())
    unknown = sorted(set(new_parameters) - known)
    if unknown:
        raise CheckpointError(f"new_parameters names not in the model's state dict: {', '.join(unknown[:8])}")

    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root)
    name = checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    final, trash = root / name, None
    try:
        parts: dict[str, PartRecord] = {}
        from safetensors.torch import save_file

        for part, (tensors, aliases) in _split_parts(model).items():
            plugin, part_config = _part_record(part, config)
            file = f"{part}.safetensors"
            save_file(tensors, str(tmp / file), metadata={"x2vlm_part": part, "step": str(step)})
            exported = None if part == "heads" else _export_part(model, part, part_config, tmp)
            parts[part] = PartRecord(plugin=plugin, config=part_config, file=file, aliases=aliases,
                                     exported=exported)
        if (tmp / ASSETS).is_dir() and not any((tmp / ASSETS).iterdir()):
            (tmp / ASSETS).rmdir()
        (tmp / "tokenizer").mkdir()
        model.tokenizer.save(str(tmp / "tokenizer"))
        if trainer_state is not None:
            torch.save(
                {
                    "format_version": FORMAT_VERSION,
                    "step": trainer_state.step,
                    "optimizer": trainer_state.optimizer,
                    "scheduler": trainer_state.scheduler,
                    "scaler": trainer_state.scaler,
                    "rng": rng_to_plain(trainer_state.rng),
                },
                tmp / "trainer.pt",
            )
            (tmp / "trainer.json").write_text(
                json.dumps({"step": trainer_state.step, "data_state": data_state}, indent=2, sort_keys=True)
                + "\n",
                encoding="utf-8",
            )
        files: dict[str, FileRecord] = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync_file(path)
            files[path.relative_to(tmp).as_posix()] = FileRecord(
                sha256=sha256_file(path), size=path.stat().st_size
            )
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            step=step,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            versions=_versions(),
            config=_json_checked(dict(config), "the run config"),
            parts=parts,
            files=files,
            new_parameters=sorted(new_parameters),
            lineage=lineage,
            has_trainer_state=trainer_state is not None,
        )
        manifest_path = tmp / "manifest.json"
        manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        _fsync_file(manifest_path)
        for directory in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
            _fsync_dir(directory)
        _fsync_dir(tmp)

        if final.exists():
            # Re-saving a step (e.g. after resuming from an earlier one): move the old one aside first,
            # since rename cannot replace a non-empty directory.
            trash = root / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
            os.rename(final, trash)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    _prune(root, final, step, keep_last)
    logger.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, final: Path, step: int, keep_last: int) -> None:
    """Keep `final` and the newest keep_last - 1 older checkpoints that verify; delete the other older ones.

    Verifying (hashes) costs a read of the kept ones, but counting a corrupt one as kept could delete
    the last good checkpoint.
    """
    older = [(s, p) for s, p in list_checkpoints(root.parent) if p != final and s < step]
    newer = [p.name for s, p in list_checkpoints(root.parent) if s > step]
    if newer:
        logger.warning(
            "checkpoints with later steps exist (%s) from an earlier run; latest_checkpoint prefers them",
            ", ".join(newer),
        )
    kept = 1
    for _, path in reversed(older):
        if kept < keep_last:
            try:
                verify_checkpoint(path)
            except CheckpointError as error:
                logger.warning("removing broken old checkpoint: %s", error)
            else:
                kept += 1
                continue
        else:
            logger.info("removing old checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)
