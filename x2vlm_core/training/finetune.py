"""Fine-tuning a (pretrained, re-assembled or converted) checkpoint on a task plugin, then evaluating it.

A fine-tuning config (`FinetuneConfig`) names the task (`task: {plugin: vqa, ...fields}`), its data, the
training and the evaluation; the model, its tokenizer and its recorded new parameters come from the
checkpoint. The task's heads are new parameters (lr × new_param_lr_scale); the fine-tuned checkpoint
records the task, so `x2vlm evaluate` and the inference pipeline rebuild it with no flag repeated.

New parameters are the task's, plus the manifest's `new_parameters` unless the checkpoint's last lineage
step trained (pretrain, finetune): a re-assembled checkpoint's new text encoder trains with lr × scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from registry import ConfigError, PluginRegistry, validation_error
from x2vlm_core.checkpoint.rebuild import load_model, model_config_of, resolve_checkpoint
from x2vlm_core.config import FinetuneConfig, PluginSection, apply_overrides, load_yaml
from x2vlm_core.contracts import DataSource, TaskModule
from x2vlm_core.data.collate import BatchLoader, MixedStream
from x2vlm_core.data.task_batches import task_loader
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM, TaskStep
from x2vlm_core.model.factory import build_task
from x2vlm_core.training.loop import Job, TrainResult, fit

__all__ = ["finetune", "finetune_config_from", "load_finetune_config", "task_data_loader"]

log = logging.getLogger("x2vlm.finetune")

# Lineage ops after which a checkpoint's recorded new parameters have been trained.
_TRAINING_OPS = frozenset({"pretrain", "finetune"})


def load_finetune_config(
    path: str | Path, overrides: Sequence[str] = (), registry: PluginRegistry | None = None, task: str | None = None
) -> FinetuneConfig:
    """YAML (+ extends) + `--set` overrides → a validated FinetuneConfig; `task` (the --task flag) must agree
    with the config's task plugin, or names it when the config has none."""
    data = apply_overrides(load_yaml(path), overrides)
    return finetune_config_from(data, registry, task, file=str(path))


def finetune_config_from(
    data: Mapping[str, Any], registry: PluginRegistry | None = None, task: str | None = None, file: str | None = None
) -> FinetuneConfig:
    """Validate a raw mapping as a FinetuneConfig: the schema, then every plugin section against its plugin."""
    registry = registry or default_registry()
    data = dict(data)
    if "model" in data:
        raise ConfigError("model", "fine-tuning takes the model from the checkpoint; remove the model section",
                          file=file, has_value=False)
    section = dict(data.get("task") or {})
    if task is not None:
        if section.get("plugin", task) != task:
            raise ConfigError("task.plugin", f"the config fine-tunes task {section['plugin']!r} but --task says "
                              f"{task!r}; drop one of them", section["plugin"], file=file)
        data["task"] = {**section, "plugin": task}
    try:
        cfg = FinetuneConfig.model_validate(data)
    except ValidationError as error:
        raise validation_error(error, "", "", file=file) from None
    if cfg.train.tokenizer is not None:
        raise ConfigError("train.tokenizer", "fine-tuning uses the checkpoint's tokenizer; remove train.tokenizer",
                          file=file, has_value=False)
    _, fields = registry.validate("task", cfg.task.plugin_section(), "task")
    for i, section in enumerate(cfg.eval.data):
        known = registry.get("data", section.plugin, where=f"eval.data.{i}.plugin").spec.config.model_fields
        if cfg.eval.languages and "languages" not in known:
            raise ConfigError(f"eval.data.{i}", "eval.languages needs data sources with a `languages` field; plugin "
                              f"{section.plugin!r} has none", section.plugin, file=file)
    for where, sections in (("data.sources", cfg.data.sources), ("eval.data", cfg.eval.data)):
        for i, source in enumerate(sections):
            registry.validate("data", source.plugin_section(), f"{where}.{i}")
            for lang in cfg.eval.languages if where == "eval.data" else ():
                registry.validate("data", {**source.plugin_section(), "languages": [lang]},
                                  f"{where}.{i} (language {lang})")
    filled = cfg.model_dump(mode="json")
    filled["task"] = {"plugin": cfg.task.plugin, **fields.model_dump(mode="json")}
    return FinetuneConfig.model_validate(filled)


def task_data_loader(cfg: FinetuneConfig, model: X2VLM, task: TaskModule, registry: PluginRegistry,
                     rank: int, world: int) -> BatchLoader:
    """This rank's endless batches of the task, from its data sources."""
    sources = [cast(DataSource, registry.build("data", s.plugin_section(), f"data.sources.{i}", rank=rank,
                                               world_size=world)) for i, s in enumerate(cfg.data.sources)]
    stream = MixedStream(sources, [s.weight for s in cfg.data.sources], seed=cfg.train.seed + rank,
                         accept=task.record_types, purpose=f"batches of task {task.name!r}")
    prep = model.preprocess(task.frames)
    return task_loader(stream, task, prep, cfg.data.batch_size, cfg.data.num_workers)


def finetune(
    checkpoint: str | Path,
    cfg: FinetuneConfig,
    resume: bool = False,
    overwrite: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Fine-tune the model of `checkpoint` (or a run directory's newest one) on `cfg.task`, then evaluate it.

    Checkpoints land in `train.out_dir` with the source's lineage; the evaluation goes to eval.json there.
    """
    registry = registry or default_registry()
    path, manifest = resolve_checkpoint(checkpoint)
    model_cfg = model_config_of(manifest, path)
    trained = bool(manifest.lineage) and manifest.lineage[-1].get("op") in _TRAINING_OPS
    inherited = set() if trained else set(manifest.new_parameters)
    config = {**cfg.model_dump(mode="json"), "model": model_cfg.model_dump(mode="json")}

    def build() -> Job:
        from x2vlm_core.evaluation.runner import evaluate_task

        model = load_model(path, registry).model
        old = model.task
        if old is not None and old.name == cfg.task.plugin:
            log.warning("the checkpoint was fine-tuned for %s already: its %s heads go on training", old.name, old.name)
            task = old
        else:
            task = build_task(PluginSection.model_validate(cfg.task.plugin_section()), model, registry)
            model.task = task
        # The task's heads are new, unless they are the checkpoint's own (already trained) heads.
        new = inherited | (set() if task is old else {f"task.{n}" for n, _ in task.named_parameters()})
        model.train()
        return Job(
            model=model, step=TaskStep(model), new_parameters=new,
            loader=lambda rank, world: task_data_loader(cfg, model, task, registry, rank, world),
            evaluate=lambda m, run_dir: evaluate_task(m, task, cfg.eval, registry, run_dir) if cfg.eval.data else {},
        )

    lineage = [*manifest.lineage, {"op": "load", "checkpoint": str(path.resolve()), "step": manifest.step,
                                   "task": cfg.task.plugin}]
    return fit(cfg.train, build, config, op="finetune", lineage=lineage, resume=resume, overwrite=overwrite,
               progress=progress, evaluate=evaluate)
