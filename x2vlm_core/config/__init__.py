"""Run configuration: the schema (pydantic) and the loader (YAML, extends, --set overrides)."""

from x2vlm_core.config.loader import apply_overrides, dump_config, load_config, load_yaml, resolve_config
from x2vlm_core.config.schema import (
    AugmentConfig,
    DataConfig,
    DataSourceSection,
    EvalConfig,
    FinetuneConfig,
    LossSection,
    ModelConfig,
    PluginSection,
    RunConfig,
    TaskDataConfig,
    TaskEvalConfig,
    TokenizerPrep,
    TrainConfig,
)

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
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_yaml",
    "resolve_config",
]
