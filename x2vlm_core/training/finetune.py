"""Fine-tuning a (re-assembled) checkpoint on retrieval, with per-language evaluation.

X²-VLM's retrieval recipe (docs/recipes.md, "Fine-tuning recipes"): contrastive + matching losses, ITC top-k
then ITM re-rank at test time. The multilingual setting (Multi30K, multilingual COCO) fine-tunes a
re-assembled model directly and reports, per language, the mean of R@1/5/10 in both directions.

A fine-tuning config (`FinetuneConfig`) is a run config without the model: the model, its tokenizer
and its new parameters come from the checkpoint. A `model` section in the YAML (e.g. inherited with
`extends`) is dropped with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry import ConfigError, PluginRegistry, validation_error
from x2vlm_core.checkpoint.rebuild import load_model, model_config_of, resolve_checkpoint
from x2vlm_core.config import (
    DataConfig,
    EvalConfig,
    FinetuneEvalConfig,
    LossSection,
    TrainConfig,
    apply_overrides,
    load_yaml,
    resolve_config,
)
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.report import format_table
from x2vlm_core.evaluation.runner import evaluate_languages
from x2vlm_core.model import X2VLM
from x2vlm_core.training.loop import TrainResult, fit

__all__ = ["TASKS", "FinetuneConfig", "FinetuneEvalConfig", "Task", "finetune", "finetune_config_from", "load_finetune_config"]


log = logging.getLogger("x2vlm.finetune")


Task = Literal["retrieval"]


TASKS: tuple[str, ...] = get_args(Task)


# The objectives each task trains (docs/recipes.md: retrieval = contrastive + matching).
_TASK_LOSSES: dict[str, frozenset[str]] = {"retrieval": frozenset({"contrastive", "matching"})}


# Lineage ops after which a checkpoint's recorded new parameters have been trained.
_TRAINING_OPS = frozenset({"pretrain", "finetune"})


class FinetuneConfig(BaseModel):
    """A run config without `model` (the checkpoint provides it): losses, data, train, eval."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    losses: list[LossSection] = Field(
        default_factory=lambda: [LossSection.model_validate({"plugin": p}) for p in ("contrastive", "matching")],
        min_length=1, description="the task's objectives (retrieval: contrastive + matching)",
    )
    data: DataConfig
    train: TrainConfig = TrainConfig.model_validate({})
    eval: FinetuneEvalConfig = FinetuneEvalConfig.model_validate({})


def load_finetune_config(
    path: str | Path, overrides: Sequence[str] = (), registry: PluginRegistry | None = None, task: Task = "retrieval"
) -> FinetuneConfig:
    """YAML (+ extends) + `--set` overrides → a validated FinetuneConfig (plugin sections filled by their plugins)."""
    data = apply_overrides(load_yaml(path), overrides)
    return finetune_config_from(data, registry, task, file=str(path))


def finetune_config_from(
    data: Mapping[str, Any], registry: PluginRegistry | None = None, task: Task = "retrieval", file: str | None = None
) -> FinetuneConfig:
    """Validate a raw mapping as a FinetuneConfig for `task` (see load_finetune_config)."""
    registry = registry or default_registry()
    data = dict(data)
    if "model" in data:
        data.pop("model")
        log.warning("%s: the model section is ignored: fine-tuning takes the model from the checkpoint", file or "config")
    try:
        cfg = FinetuneConfig.model_validate(data)
    except ValidationError as error:
        raise validation_error(error, "", "", file=file) from None
    if task not in _TASK_LOSSES:
        raise ConfigError("--task", f"unknown fine-tuning task; choose one of {', '.join(TASKS)}", task)
    wanted = _TASK_LOSSES[task]
    names = {s.plugin for s in cfg.losses}
    if names != wanted:
        raise ConfigError("losses", f"{task} fine-tuning trains exactly {', '.join(sorted(wanted))} "
                          f"(docs/recipes.md); got {', '.join(sorted(names))}", file=file, has_value=False)
    if cfg.train.tokenizer is not None:
        raise ConfigError("train.tokenizer", "fine-tuning uses the checkpoint's tokenizer; remove train.tokenizer",
                          file=file, has_value=False)
    for i, section in enumerate(cfg.eval.data):
        fields = registry.get("data", section.plugin, where=f"eval.data.{i}.plugin").spec.config.model_fields
        if cfg.eval.languages and "languages" not in fields:
            raise ConfigError(f"eval.data.{i}", f"eval.languages needs data sources with a `languages` field; "
                              f"plugin {section.plugin!r} has none", section.plugin, file=file)
    # validate every plugin section now (before a checkpoint is loaded); the filled values are kept
    for i, loss in enumerate(cfg.losses):
        registry.validate("loss", loss.plugin_section(), f"losses.{i}")
    for where, sections in (("data.sources", cfg.data.sources), ("eval.data", cfg.eval.data)):
        for i, source in enumerate(sections):
            registry.validate("data", source.plugin_section(), f"{where}.{i}")
            for lang in cfg.eval.languages if where == "eval.data" else ():
                registry.validate("data", {**source.plugin_section(), "languages": [lang]},
                                  f"{where}.{i} (language {lang})")
    return cfg


def finetune(
    checkpoint: str | Path,
    cfg: FinetuneConfig,
    task: Task = "retrieval",
    resume: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
    print_table: bool = True,
) -> TrainResult:
    """Fine-tune the model of `checkpoint` (or a run directory's newest one) per `cfg`, then evaluate
    (and print the result table when `print_table`).

    New parameters (lr × train.new_param_lr_scale) are the manifest's `new_parameters` unless the
    checkpoint's last lineage step trained (pretrain, finetune): those were new when that run started
    and are trained now. So a re-assembled checkpoint's new text encoder and MLM decoder train with
    lr × scale. Checkpoints land in `train.out_dir` with the source's lineage; evaluation goes to
    `<out_dir>/eval.json`.
    """
    registry = registry or default_registry()
    path, manifest = resolve_checkpoint(checkpoint)
    model_cfg = model_config_of(manifest, path)
    eval_cfg = EvalConfig.model_validate(cfg.eval.model_dump(exclude={"languages"}))
    run_cfg = resolve_config({
        "model": model_cfg.model_dump(mode="json"),
        "losses": [s.model_dump(mode="json") for s in cfg.losses],
        "data": cfg.data.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "eval": eval_cfg.model_dump(mode="json"),
    }, registry)
    trained = bool(manifest.lineage) and manifest.lineage[-1].get("op") in _TRAINING_OPS
    new = set() if trained else set(manifest.new_parameters)
    built: list[X2VLM] = []

    def build() -> tuple[X2VLM, set[str]]:
        model = load_model(path, registry).model
        model.train()
        built.append(model)
        return model, new

    lineage = [*manifest.lineage, {"op": "load", "checkpoint": str(path.resolve()), "step": manifest.step,
                                   "task": task}]
    result = fit(run_cfg, build, op="finetune", lineage=lineage, resume=resume, registry=registry,
                 progress=progress, evaluate=False)
    if not evaluate or not cfg.eval.data or _rank() != 0:
        return result
    evaluation = evaluate_languages(built[-1], cfg.eval, registry)
    (result.run_dir / "eval.json").write_text(json.dumps(evaluation, indent=2))
    if print_table:
        print(format_table(evaluation), file=sys.stdout, flush=True)
    return dataclasses.replace(result, evaluation=evaluation)


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0
