"""Run configuration: YAML files (with `extends`), `--set a.b.c=value` overrides, pydantic validation.

Plugin sections are `{plugin: NAME, ...fields}`; their fields are validated against NAME's own config
model (through the registry) and filled with its defaults, so the resolved config says everything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DataSourceSection",
    "EvalConfig",
    "FinetuneConfig",
    "LossSection",
    "ModelConfig",
    "PluginSection",
    "RunConfig",
    "TaskDataConfig",
    "TaskEvalConfig",
    "TokenizerPrep",
    "TrainConfig",
]


class _Strict(BaseModel):
    # inf/nan are never a sensible value here (a lr of .inf passed validation and crashed training later)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PluginSection(BaseModel):
    """`{plugin: NAME, ...fields}`; the fields belong to plugin NAME and are validated by it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    plugin: str = Field(description="registered plugin name")

    def fields(self) -> dict[str, Any]:
        """The plugin's own fields (everything but `plugin` and core-owned keys)."""
        return dict(self.model_extra or {})

    def plugin_section(self) -> dict[str, Any]:
        """`{plugin: NAME, ...fields}` as the plugin sees it (core-owned keys such as `weight` removed)."""
        return {"plugin": self.plugin, **self.fields()}


class LossSection(PluginSection):
    """A loss plugin and its weight in the total loss."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    weight: float = Field(1.0, ge=0.0, description="weight in the summed loss")


class DataSourceSection(PluginSection):
    """A data plugin and its share of the mixed stream."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    weight: float = Field(1.0, gt=0.0, description="mixing ratio (relative)")


class ModelConfig(_Strict):
    """The three Transformer modules (plus the optional video wrapper) and the heads."""

    vision: PluginSection
    video: PluginSection | None = Field(None, description="video plugin wrapping the vision plugin")
    text: PluginSection
    fusion: PluginSection
    embed_dim: int = Field(256, gt=0, description="contrastive embedding size E")
    temperature: float = Field(0.07, gt=0.0, description="initial contrastive temperature")
    temperature_min: float = Field(0.001, gt=0.0)
    temperature_max: float = Field(0.5, gt=0.0)
    max_text_len: int = Field(40, gt=2, description="max text tokens, [CLS] and [SEP] included")


class AugmentConfig(_Strict):
    """Random resized crop + horizontal flip of every training image/clip (boxes and left/right words follow)."""

    scale: tuple[float, float] = Field((0.5, 1.0), description="crop area as a fraction of the image (min, max)")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="crop aspect ratio range (min, max)")
    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of a mirror flip (skipped when a "
                             "caption's direction words cannot be swapped)")

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        return self


class DataConfig(_Strict):
    """Sources, mixing and the per-step batch composition (bounded so memory is predictable)."""

    sources: list[DataSourceSection] = Field(min_length=1)
    image_pairs: int = Field(32, ge=0, description="image-text pairs per batch")
    box_pairs: int = Field(32, ge=0, description="max object/region box-text pairs per batch")
    video_pairs: int = Field(0, ge=0, description="video-text pairs per batch")
    num_workers: int = Field(0, ge=0)
    frames: int = Field(3, gt=0, description="frames per video clip")
    augment: AugmentConfig | None = Field(None, description="training-time augmentation (null = none)")

    @model_validator(mode="after")
    def _some_pairs(self) -> DataConfig:
        if self.image_pairs + self.box_pairs + self.video_pairs == 0:
            raise ValueError("image_pairs, box_pairs and video_pairs are all 0: a batch would hold nothing")
        return self


class TokenizerPrep(_Strict):
    """Train a tokenizer on the run's own data before the model is built (when `out` does not exist yet)."""

    out: str = Field(description="directory to write; point the text plugin's tokenizer field here")
    kind: Literal["wordpiece", "sentencepiece"] = "wordpiece"
    vocab_size: int = Field(2000, gt=10)
    texts: int = Field(20000, gt=0, description="how many texts to read from the data sources")


class TrainConfig(_Strict):
    """Optimisation and the Fabric engine."""

    steps: int = Field(1000, gt=0)
    lr: float = Field(1e-4, gt=0.0)
    new_param_lr_scale: float = Field(2.0, gt=0.0, description="lr multiplier for newly initialised params")
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0.0)
    accumulate: int = Field(1, gt=0, description="gradient accumulation steps")
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = Field(
        "auto", description="Lightning Fabric accelerator (gpu/cuda need a visible CUDA device)"
    )
    compile: Literal["off", "encoders", "step"] = Field(
        "off", description="torch.compile nothing, the vision, text and fusion encoders (on an H200, base steps ran "
        "25% faster after ~2.5 minutes of compilation: benchmarks/results/train_step-cuda-compiled.json), or the "
        "whole step, losses included; true means encoders",
    )
    compile_cache: str | None = Field(
        None, description="file that keeps torch.compile's artifacts between runs and machines (default: "
        "<out_dir>/compile-cache.bin, which --overwrite keeps); read before the first step, written after it",
    )
    devices: int | Literal["auto"] = Field(1, description="devices per node (an int ≥ 1, or auto)")
    num_nodes: int = Field(1, gt=0)
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed", "dp", "single_device"] = "auto"
    seed: int = 0
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    keep_last: int = Field(2, gt=0)
    max_bad_steps: int = Field(
        10, gt=0, description="stop after this many steps in a row with non-finite losses or gradients (each is "
        "skipped: no update reaches the weights)",
    )
    out_dir: str = "runs/x2vlm"
    tokenizer: TokenizerPrep | None = None

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_flag(cls, value: Any) -> Any:
        # the field was a flag (true = the encoders); YAML reads off / on as booleans too
        return ("encoders" if value else "off") if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(f"devices must be at least 1 (or auto), got {self.devices}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        return self


class EvalConfig(_Strict):
    """What `pretrain` evaluates at the end (and `evaluate` by default)."""

    data: list[DataSourceSection] = Field(
        default_factory=list, description="held-out sources: image sources → retrieval + grounding, video → video retrieval"
    )
    samples: int = Field(1000, gt=0, description="records read from each eval source")
    rerank_k: int = Field(16, ge=0, description="ITM re-ranks the top-k of the contrastive ranking (0 = off)")
    match_weight: float = Field(1.0, gt=0, description="re-ranking score: sim / τ + match_weight · log p(match)")
    batch_size: int = Field(64, gt=0)


class TaskDataConfig(_Strict):
    """A task's training data: sources (their records must be of the task's record types) and the batch size."""

    sources: list[DataSourceSection] = Field(min_length=1)
    batch_size: int = Field(32, gt=0, description="examples per batch (per device)")
    num_workers: int = Field(0, ge=0)
    augment: AugmentConfig | None = Field(None, description="training-time augmentation (null = none)")


class TaskEvalConfig(_Strict):
    """Held-out sources, each evaluated on its own (e.g. val, testA, testB), and how much of each."""

    data: list[DataSourceSection] = Field(default_factory=list)
    samples: int = Field(1000, gt=0, description="records read from each eval source")
    batch_size: int = Field(64, gt=0)
    languages: tuple[str, ...] = Field(
        (), description="evaluate every source once per language, with its `languages` field set to [xx] (e.g. "
        "the synthetic plugin); reported as lang/<xx>/... and their mean. Empty: each source once, as configured",
    )


class FinetuneConfig(_Strict):
    """A fine-tuning run: the task plugin section, its data, training and evaluation. The model comes from
    the checkpoint (a `model` section here is refused)."""

    task: PluginSection
    data: TaskDataConfig
    train: TrainConfig = TrainConfig()
    eval: TaskEvalConfig = TaskEvalConfig()


class RunConfig(_Strict):
    """A whole run: model, losses, data, training and evaluation."""

    model: ModelConfig
    losses: list[LossSection] = Field(min_length=1)
    data: DataConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


