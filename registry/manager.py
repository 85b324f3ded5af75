"""The plugin registry: loads entry points of group "x2vlm" through pluggy, validates and builds plugins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from registry import hookspecs
from registry.errors import ConfigError, DuplicatePluginError, PluginLoadError, UnknownPluginError
from registry.spec import BrokenPlugin, PluginInfo, PluginSpec

__all__ = ["PluginRegistry", "validation_error"]


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>", ""
    return str(dist.metadata["Name"]), str(dist.version)


class PluginRegistry:
    """All plugins known to one process, keyed by (kind, name); `kinds` (from the caller) are the kinds it accepts.

    Built-in and third-party plugins arrive the same way: a module with an `x2vlm_provide_plugins`
    hookimpl, registered under its entry-point name. Nothing a plugin module does while it is imported
    or while its hook runs ends the process (an exception, `sys.exit()`, any BaseException but
    KeyboardInterrupt): the module is kept as broken, with the reason, and every other plugin still
    loads. Two plugins claiming one (kind, name) are both kept as broken, each naming all providers.
    """

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds: tuple[str, ...] = tuple(kinds)
        self._pm = pluggy.PluginManager("x2vlm")
        self._pm.add_hookspecs(hookspecs)
        self._plugins: dict[tuple[str, str], PluginInfo] = {}
        self._duplicates: dict[tuple[str, str], list[PluginInfo]] = {}
        self._broken: list[BrokenPlugin] = []

    @classmethod
    def from_entry_points(cls, group: str, kinds: Sequence[str]) -> PluginRegistry:
        """Load every entry point of `group` (each import in its own try)."""
        registry = cls(kinds)
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist, version = _dist_of(ep)
            try:
                module = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # SystemExit too: a plugin must not end the host command
                registry._broken.append(BrokenPlugin(ep.name, dist, error))
                continue
            registry.register_module(module, ep.name, dist, version)
        return registry

    def register_module(
        self, module: ModuleType | object, name: str, distribution: str = "<local>", version: str = ""
    ) -> list[PluginInfo]:
        """Register one plugin module (an object with `x2vlm_provide_plugins`) under `name`; returns the
        plugins it added (a failing module adds none and is kept in `broken`)."""
        try:
            self._pm.register(module, name=name)
            self._pm.check_pending()
            specs = self._specs_of(name)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit in the hook, too
            if self._pm.is_registered(module):
                self._pm.unregister(module)
            self._broken.append(BrokenPlugin(name, distribution, error))
            return []
        added = []
        for spec in specs:
            info = PluginInfo(spec, name, distribution, version)
            if self._add(info):
                added.append(info)
        return added

    def _specs_of(self, name: str) -> list[PluginSpec]:
        impls = [i for i in self._pm.hook.x2vlm_provide_plugins.get_hookimpls() if i.plugin_name == name]
        specs: list[PluginSpec] = [s for impl in impls for s in list(impl.function())]  # type: ignore[call-overload]
        for spec in specs:
            if not isinstance(spec, PluginSpec):
                raise TypeError(f"x2vlm_provide_plugins returned {type(spec).__name__}, not PluginSpec")
            if spec.kind not in self.kinds:
                raise ValueError(f"plugin {spec.name!r}: kind {spec.kind!r} is not one of {', '.join(self.kinds)}")
        return specs

    def _add(self, info: PluginInfo) -> bool:
        """Add one plugin; False when its (kind, name) is already taken (then every claimant is unusable)."""
        key = (info.spec.kind, info.spec.name)
        if key in self._duplicates:
            self._duplicates[key].append(info)
            return False
        if key in self._plugins:
            self._duplicates[key] = [self._plugins.pop(key), info]
            return False
        self._plugins[key] = info
        return True

    def _duplicate_error(self, key: tuple[str, str]) -> DuplicatePluginError:
        providers = [f"{p.source} ({p.entry_point})" for p in self._duplicates[key]]
        return DuplicatePluginError(key[0], key[1], providers)

    # ------------------------------------------------------------------ queries
    @property
    def broken(self) -> list[BrokenPlugin]:
        """Modules that failed to load, then each plugin that shares its (kind, name) with another."""
        duplicated = [
            BrokenPlugin(p.entry_point, p.distribution, self._duplicate_error(key), kind=key[0], name=key[1])
            for key, infos in self._duplicates.items()
            for p in infos
        ]
        return [*self._broken, *duplicated]

    def plugins(self, kind: str | None = None) -> list[PluginInfo]:
        """Registered plugins, sorted by kind then name."""
        if kind is not None and kind not in self.kinds:
            raise UnknownPluginError("kind", kind, self.kinds)
        found = [p for (k, _), p in self._plugins.items() if kind is None or k == kind]
        return sorted(found, key=lambda p: (self.kinds.index(p.spec.kind), p.spec.name))

    def names(self, kind: str) -> list[str]:
        return [p.spec.name for p in self.plugins(kind)]

    def get(self, kind: str, name: str, where: str | None = None) -> PluginInfo:
        """The plugin `name` of `kind`; an unknown name lists the names that exist."""
        if kind not in self.kinds:
            raise UnknownPluginError("kind", kind, self.kinds, where)
        info = self._plugins.get((kind, name))
        if info is None:
            if (kind, name) in self._duplicates:
                raise self._duplicate_error((kind, name))
            broken = [b for b in self._broken if b.entry_point in (f"{kind}.{name}", name)]
            if broken:
                raise PluginLoadError(broken[0].entry_point, broken[0].distribution, broken[0].error)
            raise UnknownPluginError(kind, name, self.names(kind), where)
        return info

    def find(self, name: str) -> list[PluginInfo]:
        """Plugins called `name` (of any kind), or matched as "kind.name"; when none is usable but the name
        is claimed twice, the DuplicatePluginError naming the providers."""
        kind, _, short = name.rpartition(".")

        def matches(key: tuple[str, str]) -> bool:
            return key[1] == (short if kind else name) and (not kind or key[0] == kind)

        found = [p for key, p in self._plugins.items() if matches(key)]
        duplicated = [key for key in self._duplicates if matches(key)]
        if not found and duplicated:
            raise self._duplicate_error(duplicated[0])
        return found

    # ------------------------------------------------------------------ config + build
    def validate(self, kind: str, section: Mapping[str, Any], where: str) -> tuple[PluginInfo, BaseModel]:
        """Validate a `{plugin: NAME, ...fields}` section against NAME's config model."""
        raw = dict(section)
        name = raw.pop("plugin", None)
        if not isinstance(name, str):
            raise ConfigError(f"{where}.plugin", f"missing plugin name; one of: {', '.join(self.names(kind))}",
                              name, has_value=name is not None)
        info = self.get(kind, name, where=f"{where}.plugin")
        try:
            config = info.spec.config.model_validate(raw)
        except ValidationError as error:
            raise validation_error(error, where, f"{kind} plugin {name!r}") from None
        return info, config

    def build(self, kind: str, section: Mapping[str, Any], where: str = "", **inject: object) -> object:
        """Validate then build: `factory(config, **inject)`; `inject` passes already-built modules."""
        info, config = self.validate(kind, section, where or kind)
        return info.spec.factory(config, **inject)


def validation_error(error: ValidationError, where: str, owner: str, file: str | None = None) -> ConfigError:
    """Turn pydantic's error into a ConfigError naming the dotted path, the value and what is allowed."""
    first = error.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    path = f"{where}.{loc}" if where and loc else (where or loc)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
        model = error.title
        msg += f" for {owner}" if owner else f" of {model}"
    elif owner:
        msg = f"{msg} ({owner})"
    extra = f" and {len(error.errors()) - 1} more error(s)" if len(error.errors()) > 1 else ""
    value = first.get("input")
    # a whole section as "the value" would bury the message; scalars and short lists are shown
    shown = value is not None and not isinstance(value, dict) and len(repr(value)) <= 200
    return ConfigError(path, msg + extra, value if shown else None, file=file, has_value=shown)

