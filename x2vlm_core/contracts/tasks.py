"""Task contract: a downstream task (retrieval, VQA, NLVR2, grounding, captioning, video QA, ...) as a plugin.

A task plugin's factory is called as `factory(config, model=model)` with the model to fine-tune (injected by
the core) and returns a TaskModule. The TaskModule's own parameters are the task's heads: they are new
(lr × new_param_lr_scale) and stored as the checkpoint's `task` part, so a fine-tuned checkpoint rebuilds
its task and `evaluate` / the inference pipeline need no flag repeated. The task says:

- what records it reads (`record_types`: Sample, QASample, PairSample, CompositionSample) — from any data
  plugin that yields them;
- how records become batches (`batches`, run in the data-loader workers with the model's Preprocess);
- its objective (`loss`), its metrics (`evaluate`, with `metric` the headline), and the fields of its
  config hold its recipe (image size, frames, top-k, ...).

Shapes: B batch, L tokens, D fusion width.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from x2vlm_core.contracts.data import Record
from x2vlm_core.contracts.encoders import ExportableModule, VisualMemory
from x2vlm_core.contracts.losses import LossOutput
from x2vlm_core.contracts.text import Tokenizer

__all__ = [
    "AnswersQuestions",
    "Captions",
    "Prediction",
    "Preprocess",
    "TaskBatch",
    "TaskModule",
    "VLModel",
    "VerifiesStatements",
]


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its inputs: tokenizer, image side (H = W), pixel mean/std in [0, 1] units, the most
    text tokens, and frames per clip. Picklable, so data-loader workers can batch with it."""

    tokenizer: Tokenizer
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_text_len: int
    frames: int = 3


class TaskBatch(Protocol):
    """What `TaskModule.batches` yields: tensors that move to a device together; `size` counts its examples."""

    @property
    def size(self) -> int: ...

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TaskBatch: ...


class VLModel(Protocol):
    """The parts of the X²-VLM model a task uses (x2vlm_core.model.X2VLM implements them)."""

    heads: Any  # x2vlm_core.model.Heads: vision_proj, text_proj, temperature, itm, bbox, mlm, text_to_fusion
    max_text_len: int

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def device(self) -> torch.device: ...

    def preprocess(self, frames: int = 3) -> Preprocess: ...

    def check_frames(self, frames: int, who: str) -> None: ...

    def encode_images(self, pixels: Tensor) -> Tensor: ...

    def encode_videos(self, frames: Tensor) -> Tensor: ...

    def encode_text(self, ids: Tensor, mask: Tensor, causal: bool = False) -> Any: ...

    def fuse(
        self, text: Tensor, text_mask: Tensor, memory: VisualMemory, segment: Tensor,
        positions: Tensor | None = None, causal: bool = False,
    ) -> Tensor: ...


class TaskModule(ExportableModule):
    """A downstream task: its heads (this module's parameters), batches, objective, metrics.

    Class attributes: `name` (the plugin name), `record_types` (the record classes it reads) and `metric`
    (the key of the headline number `evaluate` returns). Do not store the model as a sub-module (its weights
    would be saved twice); every method receives it. `export_config` (see ExportableModule) copies files the
    task's config names (e.g. an answer list) into the checkpoint.
    """

    name: ClassVar[str] = ""
    record_types: ClassVar[tuple[type, ...]] = ()
    metric: ClassVar[str] = ""
    frames: int = 3  # frames per clip the task samples (video tasks set it from their config)

    def batches(
        self, records: Iterator[Record], prep: Preprocess, batch_size: int, generator: torch.Generator
    ) -> Iterator[TaskBatch]:  # pragma: no cover - abstract
        """Endless training batches of `batch_size` examples from an endless record stream (random choices
        from `generator` only, so a run repeats exactly)."""
        raise NotImplementedError

    def loss(self, model: VLModel, batch: TaskBatch) -> LossOutput:  # pragma: no cover - abstract
        """The task's training objective on one batch."""
        raise NotImplementedError

    def evaluate(
        self, model: VLModel, records: Sequence[Record], batch_size: int
    ) -> dict[str, float]:  # pragma: no cover - abstract
        """Metrics on held-out records (the model in eval mode, no gradients); includes `metric` and `n`."""
        raise NotImplementedError

    def write_figures(self, directory: Path, name: str = "") -> list[Path]:
        """Pictures of the last evaluation into a run directory (`name`: which evaluation source, "" for a
        single one); returns the files written. Default: none."""
        return []


# ------------------------------------------------------------------ what fine-tuned tasks predict
# The inference pipeline (`x2vlm_core.load`) offers `answer`, `verify` and `caption` when the checkpoint's
# task implements the matching protocol. Visuals arrive preprocessed: normalised pixels [B, 3, H, W] (images)
# or [B, F, 3, H, W] (clips, with video=True), on the model's device.


@dataclass(frozen=True)
class Prediction:
    """One output of a task: an answer, a verdict ("true"/"false") or a caption, and its score (a
    probability, or a length-normalised log-probability for generated text)."""

    text: str
    score: float


@runtime_checkable
class AnswersQuestions(Protocol):
    def answer(self, model: VLModel, visuals: Tensor, questions: Sequence[str], video: bool = False) -> list[Prediction]:
        """One answer per (visual, question) pair."""
        ...


@runtime_checkable
class VerifiesStatements(Protocol):
    def verify(self, model: VLModel, left: Tensor, right: Tensor, statements: Sequence[str]) -> list[Prediction]:
        """Whether each statement is true of its image pair (left [B, 3, H, W], right [B, 3, H, W]); score = p(true)."""
        ...


@runtime_checkable
class Captions(Protocol):
    def caption(self, model: VLModel, visuals: Tensor, video: bool = False) -> list[Prediction]:
        """One caption per visual, decoded as the task's config says (greedy or beam, lengths)."""
        ...
