"""The `x2vlm` command line (x2vlm_core/cli/main.py); one module per command."""

from x2vlm_core.cli.main import UsageError, build_parser, main

__all__ = ["UsageError", "build_parser", "main"]
