"""The `x2vlm` command: one module per command, each with `add_arguments(parser)` and `run(args) -> int`.

Errors a user can fix (a bad config, an unknown plugin, a missing file, a full disk, a broken checkpoint)
print one paragraph and exit 2; `x2vlm --debug ...` shows the traceback. Logging is set up here, once.
Each command module imports its heavy dependencies inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import textwrap
from collections.abc import Sequence

from registry import PluginError

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]


class UsageError(Exception):
    """A user error outside the registry (missing file, bad argument); printed without a traceback."""


# name → (module under x2vlm_core.cli, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": ("plugins", "list installed plugins, or show one's config fields"),
    "config": ("config", "show the fully resolved config"),
    "data": ("data", "write data shards, train tokenizers, check data sources"),
    "pretrain": ("pretrain", "pretrain per a run config, then evaluate"),
    "finetune": ("finetune", "fine-tune a checkpoint on a task, then evaluate"),
    "evaluate": ("evaluate", "evaluate a checkpoint on a task"),
    "reassemble": ("reassemble", "swap a checkpoint's text encoder (e.g. to XLM-R) without re-pretraining"),
    "convert-official": ("convert_official", "import an official X²-VLM checkpoint (.pth)"),
    "predict": ("predict", "embed, score, ground, classify, answer, verify or caption with a checkpoint"),
    "index": ("index", "build or search an index of image / clip embeddings"),
    "serve": ("serve", "serve a checkpoint (and an index) over HTTP, with a web page"),
}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one paragraph (also under `python -m x2vlm_core.cli`)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full `x2vlm` argument parser."""
    parser = _ArgumentParser(prog="x2vlm", description="X²-VLM: multi-grained vision-language models as plugins.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_ArgumentParser)
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"x2vlm_core.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(p)
        p.set_defaults(command_module=command)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one paragraph."""
    return (PluginError, UsageError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `x2vlm` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.command_module.run(args)
        return code
    except _user_errors() as error:
        return _report(args, error)
    except OSError as error:  # a full disk, a read-only directory: the user's to fix, not a bug
        if error.errno is None:
            raise
        return _report(args, error)


def _report(args: argparse.Namespace, error: BaseException) -> int:
    if args.debug:
        raise error
    text = str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        text += ("; free some space or point train.out_dir elsewhere, then run again with --resume (a checkpoint "
                 "is never half-written under its final name)")
    message = textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)
    print(f"x2vlm: error: {message}", file=sys.stderr)
    print("(run with --debug for the traceback)", file=sys.stderr)
    return 2
