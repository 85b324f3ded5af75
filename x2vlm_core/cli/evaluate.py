"""`x2vlm evaluate`: rebuild a model from a checkpoint (x2vlm_core/loading.py) and evaluate one task.

Tasks: retrieval (image-text recall@1/5/10 both ways, contrastive ranking re-ranked by the matching
head), grounding (bbox head: accuracy at IoU 0.5, mean IoU), video_retrieval (video-text recall).
Sources are data plugin sections (`--data '{plugin: synthetic, split: test, kind: image}'`), by default
the checkpoint's run config `eval.data` entries that yield the task's visuals. Prints a table per
source and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["TASKS", "add_arguments", "run"]

TASKS = ("retrieval", "grounding", "video_retrieval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint directory, or a run directory (its newest complete checkpoint)")
    parser.add_argument("--task", required=True, choices=TASKS, help="what to evaluate")
    parser.add_argument("--data", action="append", default=[], metavar="YAML",
                        help="a data plugin section as inline YAML, e.g. '{plugin: synthetic, split: test, "
                        "kind: image}' (repeatable; default: the run config's eval.data entries for the task)")
    parser.add_argument("--samples", type=int, help="records read per source (default: the run config's eval.samples)")
    parser.add_argument("--rerank-k", type=int,
                        help="matching head re-ranks the contrastive top-k, 0 = off (default: eval.rerank_k)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the run config's eval.batch_size)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--out", help="JSON file to write (default: eval-<task>-<checkpoint>.json in the run "
                        "directory, or in the current directory for a checkpoint outside a run)")


def _positive(value: int | None, default: int, flag: str, minimum: int = 1) -> int:
    from x2vlm_core.cli import UsageError

    if value is None:
        return default
    if value < minimum:
        raise UsageError(f"{flag} must be at least {minimum}, got {value}")
    return value


def _parse_data(texts: list[str]) -> list[tuple[str, Any]]:
    """Inline YAML sections → (where, DataSourceSection) pairs; a bad one is a UsageError naming it."""
    import yaml
    from pydantic import ValidationError

    from registry import validation_error
    from x2vlm_core.cli import UsageError
    from x2vlm_core.config import DataSourceSection

    sections = []
    for i, text in enumerate(texts):
        where = f"--data #{i + 1}"
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"{where} is not valid YAML ({error}): {text!r}") from None
        if not isinstance(data, dict) or "plugin" not in data:
            raise UsageError(f"{where} must be a mapping with a `plugin` key, e.g. "
                             f"'{{plugin: synthetic, split: test, kind: image}}'; got {text!r}")
        try:
            sections.append((where, DataSourceSection.model_validate(data)))
        except ValidationError as error:
            raise UsageError(f"{validation_error(error, where, 'a data section')} ({text!r})") from None
    return sections


def _default_out(checkpoint: Path, task: str) -> Path:
    name = f"eval-{task}-{checkpoint.name}.json"
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / name
    return Path(name)


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from x2vlm_core.checkpoint.rebuild import load_model
    from x2vlm_core.cli import UsageError
    from x2vlm_core.discovery import default_registry
    from x2vlm_core.evaluation.evalsets import encode_eval_set, load_eval_set
    from x2vlm_core.evaluation.report import format_table
    from x2vlm_core.evaluation.runner import grounding_metrics, retrieval_metrics

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    registry = default_registry()
    explicit = _parse_data(args.data)
    loaded = load_model(args.checkpoint, registry)
    model, e = loaded.model, loaded.manifest.run_config().eval
    samples = _positive(args.samples, e.samples, "--samples")
    rerank_k = _positive(args.rerank_k, e.rerank_k, "--rerank-k", minimum=0)
    batch_size = _positive(args.batch_size, e.batch_size, "--batch-size")
    sections = explicit or [(f"eval.data.{i}", s) for i, s in enumerate(e.data)]
    if not sections:
        raise UsageError(f"checkpoint {loaded.path}: its run config has no eval.data; pass --data")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    want_video = args.task == "video_retrieval"
    kind = "videos" if want_video else "images"
    sources: list[dict[str, Any]] = []
    for where, section in sections:
        data = load_eval_set(section, where, samples, model.vision.image_size, registry)
        if data.video != want_video:
            if explicit:
                raise UsageError(f"{where} ({section.plugin}) yields {'videos' if data.video else 'images'}; "
                                 f"task {args.task} needs {kind}")
            continue  # a default source for another task
        tokens = encode_eval_set(model, data, batch_size)
        n = tokens.shape[0]
        if args.task == "grounding":
            if not data.concept_texts:
                raise UsageError(f"{where} ({section.plugin}) has no object concepts (boxes with labels) to ground")
            metrics, _ = grounding_metrics(model, data, tokens, batch_size)
        else:
            metrics = retrieval_metrics(model, data, tokens, rerank_k, batch_size, f"{args.task}/")
        print(f"{data.name} ({n} {kind})")
        print(format_table(metrics), flush=True)
        sources.append({"name": data.name, "data": section.plugin_section(), "metrics": metrics})
    if not sources:
        raise UsageError(f"none of the run config's eval.data sources yields {kind} for task {args.task}; "
                         "pass --data")

    out = Path(args.out) if args.out else _default_out(loaded.path, args.task)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(loaded.path), "step": loaded.manifest.step, "task": args.task, "samples": samples,
        "rerank_k": rerank_k, "sources": sources,
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0
