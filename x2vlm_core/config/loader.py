"""Config files: YAML with `extends`, `--set a.b.c=value` overrides, validation against the schema and plugins."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from registry import ConfigError, PluginRegistry, validation_error
from x2vlm_core.config.schema import PluginSection, RunConfig
from x2vlm_core.discovery import default_registry

__all__ = ["apply_overrides", "dump_config", "load_config", "load_yaml", "resolve_config"]


# ------------------------------------------------------------------------------------------ YAML
def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping and follow `extends` (a path or list, relative to the file)."""
    return _load_yaml(Path(path), ())


def _load_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError("extends", f"circular extends: {chain}", file=str(seen[-1]), has_value=False)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("<file>", f"cannot read config file: {error.strerror}", str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError("<yaml>", f"YAML syntax error: {problem}", file=f"{path}{line}", has_value=False) from None
    if not isinstance(data, dict):
        raise ConfigError("<root>", "a config file must hold a mapping", type(data).__name__, file=str(path))
    parents = data.pop("extends", None)
    if parents is None:
        return data
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        merged = _merge(merged, _load_yaml(path.parent / str(parent), (*seen, path)))
    return _merge(merged, data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in `over` replace. A changed `plugin` drops the old fields."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("plugin", value.get("plugin")) == value.get(
            "plugin", old.get("plugin")
        ):
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 3 → int, [1,2] → list)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", "expected KEY=VALUE with a dotted key, e.g. train.steps=100", item)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(where, f"not a valid list index (list has {len(node)} items)", part)
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(where, "cannot set a field inside a scalar value", node)
    return out


# ------------------------------------------------------------------------------------------ validation
def resolve_config(
    data: Mapping[str, Any], registry: PluginRegistry | None = None, file: str | None = None
) -> RunConfig:
    """Validate a raw mapping: the run schema, then each plugin section against its plugin."""
    registry = registry or default_registry()
    try:
        cfg = RunConfig.model_validate(dict(data))
    except ValidationError as error:
        raise validation_error(error, "", "", file=file) from None
    try:
        return _fill_plugins(cfg, registry)
    except ConfigError as error:
        if error.file is None and file is not None:
            raise ConfigError(error.path, error.message, error.value, file=file) from None
        raise


def _filled(registry: PluginRegistry, kind: str, section: PluginSection, where: str) -> dict[str, Any]:
    core = {k: getattr(section, k) for k in type(section).model_fields if k != "plugin"}
    _, config = registry.validate(kind, section.plugin_section(), where)
    return {"plugin": section.plugin, **core, **config.model_dump(mode="json")}


def _fill_plugins(cfg: RunConfig, registry: PluginRegistry) -> RunConfig:
    data = cfg.model_dump(mode="json")
    m = cfg.model
    for name, kind in (("vision", "vision"), ("video", "video"), ("text", "text"), ("fusion", "fusion")):
        section = getattr(m, name)
        if section is not None:
            data["model"][name] = _filled(registry, kind, section, f"model.{name}")
    data["losses"] = [_filled(registry, "loss", s, f"losses.{i}") for i, s in enumerate(cfg.losses)]
    data["data"]["sources"] = [
        _filled(registry, "data", s, f"data.sources.{i}") for i, s in enumerate(cfg.data.sources)
    ]
    data["eval"]["data"] = [_filled(registry, "data", s, f"eval.data.{i}") for i, s in enumerate(cfg.eval.data)]
    return RunConfig.model_validate(data)


def load_config(
    path: str | Path, overrides: Sequence[str] = (), registry: PluginRegistry | None = None
) -> RunConfig:
    """YAML file (+ extends) + overrides → validated RunConfig; errors name the file and dotted path."""
    data = apply_overrides(load_yaml(path), overrides)
    return resolve_config(data, registry, file=str(path))


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML (round-trips through `load_config`)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
