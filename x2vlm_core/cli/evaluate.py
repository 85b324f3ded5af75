"""`x2vlm evaluate --checkpoint DIR [--task NAME]`: rebuild a checkpoint and evaluate it on a task.

A fine-tuned checkpoint knows its task (and its eval data): no flag needs repeating. A pretrained one is
evaluated on any task that needs no trained head (retrieval, video_retrieval, grounding, ...) with its
run config's held-out sources, or `--data '{plugin: ..., ...}'`, and re-ranks retrieval as that run's
evaluation did. Prints a table per source; writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from x2vlm_core.cli.options import add_device_argument

if TYPE_CHECKING:
    from registry import PluginRegistry

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint directory, or a run directory (its newest complete checkpoint)")
    parser.add_argument("--task", help="task plugin to evaluate (default: the checkpoint's own task); "
                        "`x2vlm plugins --kind task` lists them")
    parser.add_argument("--set", action="append", default=[], metavar="task.FIELD=VALUE",
                        help="a field of the task, e.g. --set task.rerank_k=32 (repeatable)")
    parser.add_argument("--data", action="append", default=[], metavar="YAML",
                        help="a data plugin section as inline YAML, e.g. '{plugin: synthetic, split: test}' "
                        "(repeatable; default: the checkpoint's evaluation sources)")
    parser.add_argument("--samples", type=int, help="records read per source (default: the run config's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the run config's)")
    add_device_argument(parser)
    parser.add_argument("--out", help="JSON file to write (default: eval-<task>-<checkpoint>.json in the run "
                        "directory, or in the current directory for a checkpoint outside a run)")


def _positive(value: int | None, default: int, flag: str) -> int:
    from x2vlm_core.cli.main import UsageError

    if value is None:
        return default
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")
    return value


def _default_out(checkpoint: Path, task: str) -> Path:
    name = f"eval-{task}-{checkpoint.name}.json"
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / name
    return Path(name)


def _task_section(args: argparse.Namespace, manifest: Any, registry: PluginRegistry) -> dict[str, Any]:
    """The task to evaluate: --task (+ --set task.X), else the checkpoint's own; on a pretraining checkpoint
    the task re-ranks as the run's evaluation did (eval.rerank_k, eval.match_weight)."""
    from registry import ConfigError
    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.config import apply_overrides

    own = manifest.parts.get("task")
    if args.task is None and own is None:
        raise UsageError("this checkpoint was not fine-tuned for a task: name one with --task (e.g. retrieval, "
                         "grounding); `x2vlm plugins --kind task` lists them")
    for item in args.set:
        if not item.startswith("task."):
            raise ConfigError("--set", "only fields of the task can be set here (task.FIELD=VALUE)", item)
    if own is not None and args.task in (None, own.plugin):
        base = {"plugin": own.plugin, **(own.exported if own.exported is not None else own.config)}
    else:
        base = {"plugin": args.task}
        if own is None:  # a pretraining run: its re-ranking settings, where the task has such fields
            recorded = manifest.config.get("eval", {})
            fields = registry.get("task", args.task, "--task").spec.config.model_fields
            base |= {k: recorded[k] for k in ("rerank_k", "match_weight") if k in recorded and k in fields}
    return dict(apply_overrides({"task": base}, args.set)["task"])


def _sources(args: argparse.Namespace, manifest: Any, task: str) -> list[tuple[str, Any]]:
    """(where, DataSourceSection) to evaluate: --data, else the run config's eval sources fit for the task."""
    from pydantic import ValidationError

    from registry import validation_error
    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.cli.options import parse_section
    from x2vlm_core.config import DataSourceSection

    if args.data:
        out = []
        for i, text in enumerate(args.data):
            where = f"--data #{i + 1}"
            try:
                out.append((where, DataSourceSection.model_validate(parse_section(text, where))))
            except ValidationError as error:
                raise UsageError(f"{validation_error(error, where, 'a data section')} ({text!r})") from None
        return out
    sections = [(f"eval.data.{i}", DataSourceSection.model_validate(s))
                for i, s in enumerate(manifest.config.get("eval", {}).get("data", []))]
    # A pretraining run evaluates images and clips together: each task takes the sources of its kind.
    video = task.startswith("video")
    kept = [(w, s) for w, s in sections if (s.fields().get("kind") == "video") == video or "kind" not in s.fields()]
    if not kept:
        raise UsageError(f"the checkpoint's run config has no evaluation source for task {task}; pass --data")
    return kept


def run(args: argparse.Namespace) -> int:
    import torch

    from registry import PluginError
    from x2vlm_core.checkpoint.rebuild import load_model
    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.config import PluginSection, TaskEvalConfig
    from x2vlm_core.discovery import default_registry
    from x2vlm_core.evaluation.report import format_table
    from x2vlm_core.evaluation.runner import evaluate_task
    from x2vlm_core.model.factory import build_task

    registry = default_registry()
    loaded = load_model(args.checkpoint, registry)
    model, manifest = loaded.model, loaded.manifest
    section = PluginSection.model_validate(_task_section(args, manifest, registry))
    if model.task is not None and model.task.name == section.plugin and not args.set:
        task = model.task
    else:
        try:
            task = build_task(section, model, registry)
        except PluginError:
            raise
        if any(True for _ in task.parameters()):
            raise UsageError(
                f"checkpoint {loaded.path} has no trained {section.plugin} heads (it was "
                f"{'fine-tuned for ' + model.task.name if model.task is not None else 'not fine-tuned for a task'}); "
                f"fine-tune it first: x2vlm finetune --task {section.plugin} --checkpoint {args.checkpoint} "
                f"--config configs/tasks/{section.plugin}.yaml"
            )
    print(f"evaluating {loaded.path} (step {manifest.step}) on task {section.plugin}")
    recorded = manifest.config.get("eval", {})
    cfg = TaskEvalConfig.model_validate({
        "samples": _positive(args.samples, int(recorded.get("samples", 1000)), "--samples"),
        "batch_size": _positive(args.batch_size, int(recorded.get("batch_size", 64)), "--batch-size"),
        "languages": recorded.get("languages", ()) if not args.data else (),
    })
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model.to(device)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"--device {device}: {error}") from None
    task.to(device)
    model.eval()
    sources = _sources(args, manifest, section.plugin)
    metrics = evaluate_task(model, task, cfg, registry, None, print_table=False, sections=sources)
    print(format_table(metrics), flush=True)
    out = Path(args.out) if args.out else _default_out(loaded.path, section.plugin)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(loaded.path), "step": manifest.step, "task": section.plugin_section(),
              "sources": [s.plugin_section() for _, s in sources], "metrics": metrics}
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0
