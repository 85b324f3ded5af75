"""Errors raised by the plugin registry; each message says what went wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "DuplicatePluginError",
    "PluginError",
    "PluginLoadError",
    "UnknownPluginError",
]


class PluginError(Exception):
    """Base class of every user-facing registry error (the CLI prints these without a traceback)."""


class UnknownPluginError(PluginError, KeyError):
    """No plugin of this kind has this name."""

    def __init__(self, kind: str, name: str, available: Sequence[str], where: str | None = None) -> None:
        self.kind, self.name, self.available = kind, name, list(available)
        close = difflib.get_close_matches(name, self.available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        names = ", ".join(sorted(self.available)) or "(none installed)"
        at = f" (at {where})" if where else ""
        msg = f"unknown {kind} plugin {name!r}{at}.{hint} Available {kind} plugins: {names}."
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class DuplicatePluginError(PluginError):
    """Two (or more) plugins claim the same kind and name; `providers` names each ("dist version (entry point)")."""

    def __init__(self, kind: str, name: str, providers: Sequence[str]) -> None:
        self.kind, self.name, self.providers = kind, name, tuple(providers)
        count = "twice" if len(self.providers) == 2 else f"{len(self.providers)} times"
        listed = ", ".join(self.providers[:-1]) + f" and by {self.providers[-1]}"
        super().__init__(
            f"{kind} plugin {name!r} is provided {count}: by {listed}; none of them is used. "
            "Uninstall all but one of these distributions, or rename the plugin in one of them."
        )


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import or its hook raised."""

    def __init__(self, entry_point: str, distribution: str, error: BaseException) -> None:
        self.entry_point, self.distribution, self.error = entry_point, distribution, error
        super().__init__(
            f"plugin entry point {entry_point!r} from {distribution} failed to load: "
            f"{type(error).__name__}: {error}"
        )


class ConfigError(PluginError, ValueError):
    """A configuration value is wrong; names the file, the dotted path, the value and what is allowed."""

    def __init__(
        self, path: str, message: str, value: object = None, file: str | None = None, has_value: bool = True
    ) -> None:
        self.path, self.message, self.value, self.file = path, message, value, file
        where = f"{file}: " if file else ""
        shown = f" (got {value!r})" if has_value else ""
        super().__init__(f"{where}{path}: {message}{shown}")
