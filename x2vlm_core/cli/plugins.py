"""`x2vlm plugins [--kind K]`, `x2vlm plugins show NAME|KIND.NAME`: the installed plugins and their config fields."""

from __future__ import annotations

import argparse

from x2vlm_core.discovery import default_registry

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("name", nargs="?", help="plugin NAME or KIND.NAME (with `show`)")
    parser.add_argument("--kind", help="only plugins of this kind")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            from x2vlm_core.cli.main import UsageError

            raise UsageError("`x2vlm plugins show` needs a plugin NAME (or KIND.NAME)")
        return _show_plugin(args.name)
    return _list(args.kind)


def _list(kind: str | None) -> int:
    registry = default_registry()
    rows = [
        (p.spec.kind, p.spec.name, p.distribution, p.version, p.spec.summary) for p in registry.plugins(kind)
    ]
    broken = [b for b in registry.broken if kind is None or (b.kind or b.entry_point.partition(".")[0]) == kind]
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


