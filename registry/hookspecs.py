"""Hook specifications of x2vlm: the only contract between the registry and a plugin module."""

from __future__ import annotations

import pluggy

from registry.spec import PluginSpec

__all__ = ["hookimpl", "hookspec", "x2vlm_provide_plugins"]

hookspec = pluggy.HookspecMarker("x2vlm")
hookimpl = pluggy.HookimplMarker("x2vlm")


@hookspec
def x2vlm_provide_plugins() -> list[PluginSpec]:
    """Return the plugins this module provides (any kinds). Called once per registry load."""
    raise NotImplementedError  # a spec has no body; pluggy never calls it
