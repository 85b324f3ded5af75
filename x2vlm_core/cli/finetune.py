"""`x2vlm finetune --task NAME --checkpoint DIR --config C`: fine-tune a checkpoint on a task, then evaluate."""

from __future__ import annotations

import argparse

from x2vlm_core.cli.options import add_config_arguments, add_training_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="task plugin (`x2vlm plugins --kind task`); default: the config's task.plugin")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (newest checkpoint)")
    add_config_arguments(parser, "fine-tuning config: task/data/train/eval (no model: it comes from the checkpoint), "
                         "e.g. configs/tasks/vqa.yaml")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.training.finetune import finetune, load_finetune_config

    cfg = load_finetune_config(args.config, args.set, task=args.task)
    result = finetune(args.checkpoint, cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                      evaluate=not args.no_eval)
    print(f"run directory: {result.run_dir}")
    return 0
