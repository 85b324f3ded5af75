"""`x2vlm pretrain`: train per a run config (Lightning Fabric), then evaluate."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config, e.g. configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in train.out_dir")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging

    from x2vlm_core.config import load_config
    from x2vlm_core.train import pretrain

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.set)
    result = pretrain(cfg, resume=args.resume, progress=not args.quiet, evaluate=not args.no_eval)
    print(f"run directory: {result.run_dir}")
    return 0
