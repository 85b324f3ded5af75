"""Run configuration: YAML files (with `extends`), `--set a.b.c=value` overrides, pydantic validation.

Plugin sections are `{plugin: NAME, ...fields}`; their fields are validated against NAME's own config
model (through the registry) and filled with its defaults, so the resolved config says everything.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry import ConfigError, PluginRegistry, default_registry, validation_error

__all__ = [
    "DataConfig",
    "DataSourceSection",
    "EvalConfig",
    "LossSection",
    "ModelConfig",
    "PluginSection",
    "RunConfig",
    "TokenizerPrep",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_yaml",
    "resolve_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    weight: float = Field(1.0, ge=0.0, description="weight in the summed loss")


class DataSourceSection(PluginSection):
    """A data plugin and its share of the mixed stream."""

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


class DataConfig(_Strict):
    """Sources, mixing and the per-step batch composition (bounded so memory is predictable)."""

    sources: list[DataSourceSection] = Field(min_length=1)
    image_pairs: int = Field(32, ge=0, description="image-text pairs per batch")
    box_pairs: int = Field(32, ge=0, description="max object/region box-text pairs per batch")
    video_pairs: int = Field(0, ge=0, description="video-text pairs per batch")
    num_workers: int = Field(0, ge=0)
    frames: int = Field(3, gt=0, description="frames per video clip")


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
    accelerator: str = "auto"
    compile: bool = Field(
        False, description="torch.compile the vision, text and fusion encoders (on an H200, base steps ran 25% "
        "faster after ~2.5 minutes of compilation: benchmarks/results/train_step-cuda-compiled.json)",
    )
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    keep_last: int = Field(2, gt=0)
    out_dir: str = "runs/x2vlm"
    tokenizer: TokenizerPrep | None = None

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
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
    batch_size: int = Field(64, gt=0)


class RunConfig(_Strict):
    """A whole run: model, losses, data, training and evaluation."""

    model: ModelConfig
    losses: list[LossSection] = Field(min_length=1)
    data: DataConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


# ------------------------------------------------------------------------------------------ YAML
def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping and follow `extends` (a path or list, relative to the file)."""
    return _load_yaml(Path(path), ())


def _load_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError("extends", f"circular extends: {chain}", file=str(seen[-1]), has_value=False)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("<file>", f"cannot read config file: {error.strerror}", str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError("<yaml>", f"YAML syntax error: {problem}", file=f"{path}{line}", has_value=False) from None
    if not isinstance(data, dict):
        raise ConfigError("<root>", "a config file must hold a mapping", type(data).__name__, file=str(path))
    parents = data.pop("extends", None)
    if parents is None:
        return data
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        merged = _merge(merged, _load_yaml(path.parent / str(parent), (*seen, path)))
    return _merge(merged, data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in `over` replace. A changed `plugin` drops the old fields."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("plugin", value.get("plugin")) == value.get(
            "plugin", old.get("plugin")
        ):
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 3 → int, [1,2] → list)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", "expected KEY=VALUE with a dotted key, e.g. train.steps=100", item)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(where, f"not a valid list index (list has {len(node)} items)", part)
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(where, "cannot set a field inside a scalar value", node)
    return out


# ------------------------------------------------------------------------------------------ validation
def resolve_config(
    data: Mapping[str, Any], registry: PluginRegistry | None = None, file: str | None = None
) -> RunConfig:
    """Validate a raw mapping: the run schema, then each plugin section against its plugin."""
    registry = registry or default_registry()
    try:
        cfg = RunConfig.model_validate(dict(data))
    except ValidationError as error:
        raise validation_error(error, "", "", file=file) from None
    try:
        return _fill_plugins(cfg, registry)
    except ConfigError as error:
        if error.file is None and file is not None:
            raise ConfigError(error.path, error.message, error.value, file=file) from None
        raise


def _filled(registry: PluginRegistry, kind: str, section: PluginSection, where: str) -> dict[str, Any]:
    core = {k: getattr(section, k) for k in type(section).model_fields if k != "plugin"}
    _, config = registry.validate(kind, section.plugin_section(), where)
    return {"plugin": section.plugin, **core, **config.model_dump(mode="json")}


def _fill_plugins(cfg: RunConfig, registry: PluginRegistry) -> RunConfig:
    data = cfg.model_dump(mode="json")
    m = cfg.model
    for name, kind in (("vision", "vision"), ("video", "video"), ("text", "text"), ("fusion", "fusion")):
        section = getattr(m, name)
        if section is not None:
            data["model"][name] = _filled(registry, kind, section, f"model.{name}")
    data["losses"] = [_filled(registry, "loss", s, f"losses.{i}") for i, s in enumerate(cfg.losses)]
    data["data"]["sources"] = [
        _filled(registry, "data", s, f"data.sources.{i}") for i, s in enumerate(cfg.data.sources)
    ]
    data["eval"]["data"] = [_filled(registry, "data", s, f"eval.data.{i}") for i, s in enumerate(cfg.eval.data)]
    return RunConfig.model_validate(data)


def load_config(
    path: str | Path, overrides: Sequence[str] = (), registry: PluginRegistry | None = None
) -> RunConfig:
    """YAML file (+ extends) + overrides → validated RunConfig; errors name the file and dotted path."""
    data = apply_overrides(load_yaml(path), overrides)
    return resolve_config(data, registry, file=str(path))


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML (round-trips through `load_config`)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
