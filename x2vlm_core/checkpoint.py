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

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import random
import re
import secrets
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from registry import PluginError
from x2vlm_core.config import RunConfig
from x2vlm_core.interfaces import CHECKPOINT_VAR
from x2vlm_core.model import X2VLM
from x2vlm_core.weights import WeightsError, load_state_file, load_state_strict

__all__ = [
    "FORMAT_VERSION",
    "Alias",
    "CheckpointError",
    "FileRecord",
    "Manifest",
    "PartRecord",
    "RngState",
    "TrainerState",
    "capture_rng",
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_model_state",
    "load_trainer_state",
    "read_manifest",
    "restore_rng",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_MODULE_PARTS = ("vision", "video", "text", "fusion")
_CHUNK = 1 << 20
_ASSETS = "assets"


class CheckpointError(PluginError):
    """A checkpoint directory is missing, incomplete, corrupt, or does not match the model."""


# ------------------------------------------------------------------------------------------ manifest
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


# ------------------------------------------------------------------------------------------ trainer state
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


def _rng_to_plain(rng: RngState) -> dict[str, Any]:
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


def _rng_from_plain(data: Mapping[str, Any]) -> RngState:
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


# ------------------------------------------------------------------------------------------ helpers
def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint at `step`: step-00000100."""
    return f"step-{step:08d}"


def _checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step-*` directory under `<run>/checkpoints`, oldest first (unverified)."""
    root = _checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    for part in model.module_names():
        tensors: dict[str, Tensor] = {}
        aliases: dict[str, Alias] = {}
        for key, value in model.module_state(part).items():
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
    covered = {k if part == "heads" else f"{part}.{k}" for part, (t, a) in out.items() for k in (*t, *a)}
    left = sorted(set(model.state_dict()) - covered)
    if left:
        # module_state() leaves loss modules out: state kept there would not survive a resume.
        logger.warning("checkpoint does not store %d state entries: %s", len(left), ", ".join(left[:8]))
    return out


def _part_record(part: str, config: RunConfig) -> tuple[str | None, dict[str, Any]]:
    if part == "heads":
        m = config.model
        fields = ("embed_dim", "temperature", "temperature_min", "temperature_max", "max_text_len")
        return None, {f: getattr(m, f) for f in fields}
    section = getattr(config.model, part, None)
    if section is None:
        raise CheckpointError(
            f"the model has a {part!r} module but the run config has no model.{part} section"
        )
    data = section.model_dump(mode="json")
    return str(data.pop("plugin")), data


def _export_part(model: X2VLM, part: str, config: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The module's `export_config` with its assets in `<checkpoint>/assets/<part>/`, paths made relative."""
    module = getattr(model, part)
    asset_dir = checkpoint / _ASSETS / part
    asset_dir.mkdir(parents=True)
    exported = module.export_config(copy.deepcopy(config), asset_dir)
    if not isinstance(exported, dict):
        raise CheckpointError(
            f"{type(module).__name__}.export_config (part {part!r}) returned {type(exported).__name__}, not a dict"
        )
    exported = _json_checked(_relocate(exported, asset_dir, f"{CHECKPOINT_VAR}/{_ASSETS}/{part}"),
                             f"the exported config of part {part!r}")
    if not any(asset_dir.iterdir()):
        asset_dir.rmdir()
    _warn_external(part, exported)
    return dict(exported)


def _relocate(value: Any, asset_dir: Path, reference: str) -> Any:
    """Strings naming `asset_dir` or a path inside it → `reference` + the rest; other values unchanged."""
    if isinstance(value, dict):
        return {k: _relocate(v, asset_dir, reference) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relocate(v, asset_dir, reference) for v in value]
    if isinstance(value, str) and value:
        try:
            rest = Path(value).relative_to(asset_dir)
        except ValueError:
            return value
        return reference if rest == Path(".") else f"{reference}/{rest.as_posix()}"
    return value


def _warn_external(part: str, value: Any) -> None:
    """Warn about strings that name existing files outside the checkpoint (a plugin whose export misses them)."""
    if isinstance(value, dict):
        for v in value.values():
            _warn_external(part, v)
    elif isinstance(value, list):
        for v in value:
            _warn_external(part, v)
    elif isinstance(value, str) and value.strip() and not value.startswith(CHECKPOINT_VAR) and Path(value).exists():
        logger.warning(
            "the exported config of checkpoint part %r still names %s outside the checkpoint; the plugin's "
            "export_config should copy it into its asset directory, or the checkpoint cannot be moved", part, value,
        )


def _clean_leftovers(root: Path, keep: Path | None = None) -> None:
    """Remove `.tmp-*` / `.trash-*` directories left by interrupted saves (only the writer calls this)."""
    for entry in root.iterdir():
        if entry != keep and entry.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            logger.warning("removing leftover %s from an interrupted checkpoint save", entry)
            shutil.rmtree(entry, ignore_errors=True)


# ------------------------------------------------------------------------------------------ save
def save_checkpoint(
    run_dir: str | Path,
    model: X2VLM,
    step: int,
    config: RunConfig,
    trainer_state: TrainerState | None,
    keep_last: int,
    lineage: list[dict[str, Any]],
    new_parameters: Collection[str],
) -> Path:
    """Atomically write `<run>/checkpoints/step-XXXXXXXX/` and prune older ones beyond `keep_last`.

    Call on one process only (rank 0) with a model holding full (unsharded) weights.
    """
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

    root = _checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root)
    name = checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{name}-{secrets.token_hex(4)}"
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
        if (tmp / _ASSETS).is_dir() and not any((tmp / _ASSETS).iterdir()):
            (tmp / _ASSETS).rmdir()
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
                    "rng": _rng_to_plain(trainer_state.rng),
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
                sha256=_sha256(path), size=path.stat().st_size
            )
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            step=step,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            versions=_versions(),
            config=config.model_dump(mode="json"),
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
            trash = root / f"{_TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
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


# ------------------------------------------------------------------------------------------ read / verify
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
        first = error.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "<root>"
        raise CheckpointError(
            f"checkpoint {path}: manifest.json field {where}: {first['msg']} ({error.error_count()} problem(s))"
        ) from None
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


def _check_file(path: Path, name: str, record: FileRecord) -> None:
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path}: file {name} is missing")
    size = file.stat().st_size
    if size != record.size:
        raise CheckpointError(
            f"checkpoint {path}: file {name} has {size} bytes, the manifest says {record.size} (truncated?)"
        )
    digest = _sha256(file)
    if digest != record.sha256:
        raise CheckpointError(
            f"checkpoint {path}: file {name} has sha256 {digest[:12]}…, the manifest says {record.sha256[:12]}… (corrupt)"
        )


def verify_checkpoint(path: str | Path) -> Manifest:
    """Check the manifest and every file's size and sha256; raise CheckpointError naming the first problem."""
    path = Path(path)
    manifest = read_manifest(path)
    match = _STEP_DIR.match(path.name)
    if match and int(match.group(1)) != manifest.step:
        raise CheckpointError(
            f"checkpoint {path}: directory says step {int(match.group(1))}, manifest says {manifest.step}"
        )
    for name, record in manifest.files.items():
        _check_file(path, name, record)
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


# ------------------------------------------------------------------------------------------ load
def load_model_state(model: X2VLM, path: str | Path, parts: Collection[str] | None = None) -> set[str]:
    """Strictly load checkpoint parts (default: all, which must equal the model's parts) into `model`.

    Returns the loaded state-dict names, prefixed as in `model.state_dict()`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if parts is None:
        if list(manifest.parts) != model.module_names():
            raise CheckpointError(
                f"checkpoint {path} has parts {list(manifest.parts)} but the model has {model.module_names()}; "
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
            _check_file(path, record.file, manifest.files[record.file])
            cache[part] = load_state_file(path / record.file)
        return cache[part]

    loaded: set[str] = set()
    for part in wanted:
        record = manifest.parts[part]
        state = dict(part_file(part))
        for key, alias in record.aliases.items():
            source = part_file(alias.part)
            if alias.key not in source:
                raise CheckpointError(
                    f"checkpoint {path}: alias {part}/{key} -> {alias.part}/{alias.key} is dangling"
                )
            state[key] = source[alias.key]
        if part == "heads":
            target: torch.nn.Module = model
            others = tuple(f"{p}." for p in (*_MODULE_PARTS, "losses"))
            prefix = ""
        else:
            module = getattr(model, part, None)
            if not isinstance(module, torch.nn.Module):
                raise CheckpointError(
                    f"checkpoint {path} has a {part!r} part but the model has no {part} module"
                )
            target, others, prefix = module, (), f"{part}."
        try:
            report = load_state_strict(target, state, f"{path / record.file}", allow_missing=others)
        except WeightsError as error:
            raise CheckpointError(f"checkpoint {path}, part {part!r}: {error}") from None
        loaded |= {prefix + k for k in report.loaded}
    return loaded


def load_trainer_state(path: str | Path) -> TrainerState | None:
    """Optimizer/scheduler/RNG/data state of a checkpoint (None when it was saved without one)."""
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.has_trainer_state:
        return None
    for name in ("trainer.pt", "trainer.json"):
        _check_file(path, name, manifest.files[name])
    try:
        blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        info = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - any read failure means the same thing to the user
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
        rng=_rng_from_plain(blob["rng"]),
        data_state=dict(info["data_state"]),
        scaler=blob["scaler"],
    )
