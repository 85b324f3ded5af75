"""The process-wide plugin registry: every installed entry point of group "x2vlm", with x2vlm's kinds."""

from __future__ import annotations

import functools

from registry import PluginRegistry
from x2vlm_core.contracts.factories import KINDS

__all__ = ["ENTRY_POINT_GROUP", "default_registry"]

ENTRY_POINT_GROUP = "x2vlm"


@functools.cache
def default_registry() -> PluginRegistry:
    """Loaded from entry points on first use (never at import time)."""
    return PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)
