"""Checkpoints: the directory format, writing, reading, trainer state, weights and rebuilding models."""

from x2vlm_core.checkpoint.format import (
    FORMAT_VERSION,
    Alias,
    CheckpointError,
    FileRecord,
    Manifest,
    PartRecord,
    checkpoint_name,
    list_checkpoints,
)
from x2vlm_core.checkpoint.reader import (
    latest_checkpoint,
    load_model_state,
    load_trainer_state,
    read_manifest,
    verify_checkpoint,
)
from x2vlm_core.checkpoint.trainer_state import RngState, TrainerState, capture_rng, restore_rng
from x2vlm_core.checkpoint.writer import save_checkpoint

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
