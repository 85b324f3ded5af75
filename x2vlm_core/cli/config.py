"""`x2vlm config show --config C [--set ...]`: the fully resolved config, every plugin default filled in."""

from __future__ import annotations

import argparse

from x2vlm_core.cli.options import add_config_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"])
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.set)), end="")
    return 0
