"""CLI sub-commands; each module has `add_arguments(parser)` and `run(args) -> int`, and imports heavy
modules only inside `run`."""

from __future__ import annotations

import argparse

__all__ = ["add_training_arguments"]


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that train (pretrain, finetune): overrides, resume, eval, progress."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in train.out_dir")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
