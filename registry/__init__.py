"""x2vlm's plugin registry: pluggy hooks, entry-point discovery, validated config sections.

Everything a plugin or x2vlm_core may use is exported here.
"""

from registry.errors import ConfigError, DuplicatePluginError, PluginError, PluginLoadError, UnknownPluginError
from registry.hookspecs import hookimpl
from registry.manager import ENTRY_POINT_GROUP, PluginRegistry, default_registry, validation_error
from registry.spec import KINDS, BrokenPlugin, Kind, PluginInfo, PluginSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "BrokenPlugin",
    "ConfigError",
    "DuplicatePluginError",
    "Kind",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "PluginSpec",
    "UnknownPluginError",
    "default_registry",
    "hookimpl",
    "validation_error",
]
