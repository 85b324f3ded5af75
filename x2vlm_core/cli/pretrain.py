"""`x2vlm pretrain`: train per a run config (Lightning Fabric), then evaluate."""

from __future__ import annotations

import argparse

from x2vlm_core.cli.options import add_config_arguments, add_training_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "YAML run config, e.g. configs/demo.yaml")
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.config import load_config
    from x2vlm_core.training.pretrain import pretrain

    cfg = load_config(args.config, args.set)
    result = pretrain(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                      evaluate=not args.no_eval)
    print(f"run directory: {result.run_dir}")
    return 0
