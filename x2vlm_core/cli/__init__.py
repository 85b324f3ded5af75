"""`x2vlm` command line: plugins, config, data, pretrain, evaluate, finetune, reassemble, convert-official.

User errors (bad config, unknown plugin, missing file) print one paragraph and exit 2; `--debug`
shows the traceback. Heavy modules are imported inside each command so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

from registry import PluginError
from x2vlm_core.discovery import default_registry

__all__ = ["UsageError", "build_parser", "main"]


class UsageError(Exception):
    """A user error outside the registry (missing file, bad argument); printed without a traceback."""


Handler = Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------------------ plugins
def _cmd_plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.action == "show":
        if not args.name:
            raise UsageError("`x2vlm plugins show` needs a plugin NAME (or KIND.NAME)")
        return _show_plugin(args.name)
    rows = [
        (p.spec.kind, p.spec.name, p.distribution, p.version, p.spec.summary) for p in registry.plugins(args.kind)
    ]
    broken = [b for b in registry.broken if args.kind is None or b.entry_point.startswith(f"{args.kind}.")]
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "SUMMARY")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    for b in broken:
        print(f"BROKEN  {b.entry_point}  {b.distribution}  {b.reason}")
    return 0


def _show_plugin(name: str) -> int:
    registry = default_registry()
    found = registry.find(name)
    if not found:
        kind, _, short = name.rpartition(".")
        names = [f"{p.spec.kind}.{p.spec.name}" for p in registry.plugins()]
        from registry import UnknownPluginError

        raise UnknownPluginError(kind or "any", short, names)
    for info in found:
        spec = info.spec
        print(f"{spec.kind} plugin {spec.name!r} from {info.source} (entry point {info.entry_point})")
        if spec.summary:
            print(f"  {spec.summary}")
        print(f"  config: {spec.config.__name__}")
        for field_name, field in spec.config.model_fields.items():
            annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            doc = f"  # {field.description}" if field.description else ""
            print(f"    {field_name}: {annotation} = {default}{doc}")
    return 0


# ------------------------------------------------------------------------------------------ config
def _cmd_config(args: argparse.Namespace) -> int:
    from x2vlm_core.config import dump_config, load_config

    cfg = load_config(args.config, args.set)
    print(dump_config(cfg), end="")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _lazy(module: str, function: str) -> Handler:
    """A handler that imports its implementation only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        result: int = getattr(importlib.import_module(module), function)(args)
        return result

    return handler


def _add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run config (may `extends` another)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value by dotted path, e.g. --set train.steps=100 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full `x2vlm` argument parser."""
    parser = argparse.ArgumentParser(
        prog="x2vlm", description="X²-VLM: multi-grained vision-language pretraining as plugins."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("plugins", help="list installed plugins, or show one's config fields")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="plugin NAME or KIND.NAME (with `show`)")
    p.add_argument("--kind", help="only plugins of this kind")
    p.set_defaults(handler=_cmd_plugins)

    p = sub.add_parser("config", help="show the fully resolved config")
    p.add_argument("action", choices=["show"])
    _add_config_args(p)
    p.set_defaults(handler=_cmd_config)

    for name, module, help_text in _EXTRA_COMMANDS:
        cmd = sub.add_parser(name, help=help_text)
        add_arguments = _lazy_attr(module, "add_arguments")
        add_arguments(cmd)
        cmd.set_defaults(handler=_lazy(module, "run"))
    return parser


# Commands implemented in their own modules: (name, module, help). Each module has
# `add_arguments(parser)` and `run(args) -> int`.
_EXTRA_COMMANDS: list[tuple[str, str, str]] = [
    ("pretrain", "x2vlm_core.cli.pretrain", "pretrain per a run config, then evaluate"),
    ("data", "x2vlm_core.cli.data", "write data shards, train tokenizers"),
    ("evaluate", "x2vlm_core.cli.evaluate", "evaluate a checkpoint: retrieval, grounding, video retrieval"),
    ("reassemble", "x2vlm_core.cli.reassemble", "swap a checkpoint's text encoder (e.g. to XLM-R) without re-pretraining"),
    ("finetune", "x2vlm_core.cli.finetune", "fine-tune a checkpoint on a task (retrieval), multilingual evaluation"),
    ("convert-official", "x2vlm_core.cli.convert_official", "import an official X²-VLM checkpoint (.pth)"),
]


def _lazy_attr(module: str, name: str) -> Callable[[argparse.ArgumentParser], None]:
    import importlib

    fn: Callable[[argparse.ArgumentParser], None] = getattr(importlib.import_module(module), name)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `x2vlm` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except (PluginError, UsageError, FileNotFoundError) as error:
        if args.debug:
            raise
        message = textwrap.fill(str(error), width=100, break_long_words=False, break_on_hyphens=False)
        print(f"x2vlm: error: {message}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 2

