"""`x2vlm finetune`: fine-tune a (re-assembled) checkpoint on a task, then evaluate per language."""

from __future__ import annotations

import argparse

from x2vlm_core.cli._training_args import add_training_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["retrieval"], default="retrieval",
                        help="retrieval: contrastive + matching losses, ITC top-k + ITM re-rank evaluation")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (newest checkpoint)")
    parser.add_argument("--config", required=True,
                        help="fine-tuning config: losses/data/train/eval (no model: it comes from the checkpoint), "
                        "e.g. configs/finetune_multilingual.yaml")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import logging

    from x2vlm_core.training.finetune import finetune, load_finetune_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_finetune_config(args.config, args.set, task=args.task)
    result = finetune(args.checkpoint, cfg, task=args.task, resume=args.resume, progress=not args.quiet,
                      evaluate=not args.no_eval)
    print(f"run directory: {result.run_dir}")
    return 0
