"""x2vlm's plugin registry: pluggy hooks, entry-point discovery, validated config sections.

Knows pluggy and pydantic, nothing about models: the kinds of plugins come from the caller.
"""

from registry.errors import ConfigError, DuplicatePluginError, PluginError, PluginLoadError, UnknownPluginError
from registry.hookspecs import hookimpl
from registry.manager import PluginRegistry, validation_error
from registry.spec import BrokenPlugin, PluginInfo, PluginSpec

__all__ = [
    "BrokenPlugin",
    "ConfigError",
    "DuplicatePluginError",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "PluginSpec",
    "UnknownPluginError",
    "hookimpl",
    "validation_error",
]
