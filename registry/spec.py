"""What a plugin declares: kind, name, a pydantic config model and a factory."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

__all__ = ["BrokenPlugin", "PluginInfo", "PluginSpec"]


@dataclass(frozen=True)
class PluginSpec:
    """One plugin: `factory(config, **injected)` builds it from a validated `config` instance."""

    kind: str
    name: str
    config: type[BaseModel]
    factory: Callable[..., object]

    def __post_init__(self) -> None:
        if not (isinstance(self.config, type) and issubclass(self.config, BaseModel)):
            raise TypeError(f"{self.kind} plugin {self.name!r}: config must be a pydantic BaseModel class")

    @property
    def summary(self) -> str:
        """First line of the factory's docstring."""
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin and where it came from."""

    spec: PluginSpec
    entry_point: str
    distribution: str
    version: str

    @property
    def source(self) -> str:
        return f"{self.distribution} {self.version}".strip()


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load (import, hook), or one plugin of it that cannot be used (its
    kind and name are claimed twice: `kind`/`name` are then set); the registry keeps going without it."""

    entry_point: str
    distribution: str
    error: BaseException = field(repr=False)
    kind: str | None = None
    name: str | None = None

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"
