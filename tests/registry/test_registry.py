"""The registry: hookspecs, entry-point loading, plugin isolation (SystemExit, duplicates), errors (each message
checked)."""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import registry
from registry import (
    DuplicatePluginError,
    PluginLoadError,
    PluginRegistry,
    PluginSpec,
    UnknownPluginError,
    hookimpl,
    hookspecs,
)
from x2vlm_core.contracts.factories import KINDS
from x2vlm_core.discovery import ENTRY_POINT_GROUP


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = 3


def _factory(config: _Cfg) -> int:
    """Return the size (a test plugin)."""
    return config.size


def _module(*specs: PluginSpec) -> types.SimpleNamespace:
    @hookimpl
    def x2vlm_provide_plugins() -> list[PluginSpec]:
        return list(specs)

    return types.SimpleNamespace(x2vlm_provide_plugins=x2vlm_provide_plugins)


def test_kinds_and_hookspecs_are_pinned() -> None:
    assert KINDS == ("vision", "video", "text", "fusion", "loss", "data", "task")
    specs = sorted(n for n in dir(hookspecs) if n.startswith("x2vlm_"))
    assert specs == ["x2vlm_provide_plugins"]
    assert set(registry.__all__) >= {"hookimpl", "PluginSpec", "PluginRegistry"}


def test_register_build_and_summary() -> None:
    reg = PluginRegistry(KINDS)
    reg.register_module(_module(PluginSpec("vision", "toy", _Cfg, _factory)), "vision.toy", "toy-dist", "1.2")
    (info,) = reg.plugins("vision")
    assert (info.spec.name, info.distribution, info.version) == ("toy", "toy-dist", "1.2")
    assert info.spec.summary == "Return the size (a test plugin)."
    assert reg.build("vision", {"plugin": "toy", "size": 5}) == 5


def test_unknown_name_lists_names_and_close_match() -> None:
    reg = PluginRegistry(KINDS)
    reg.register_module(_module(PluginSpec("vision", "beit2", _Cfg, _factory),
                                PluginSpec("vision", "timm_vit", _Cfg, _factory)), "m")
    with pytest.raises(UnknownPluginError) as err:
        reg.get("vision", "beit3", where="model.vision.plugin")
    msg = str(err.value)
    assert "unknown vision plugin 'beit3' (at model.vision.plugin)" in msg
    assert "Did you mean 'beit2'?" in msg
    assert "Available vision plugins: beit2, timm_vit." in msg


def test_unknown_kind() -> None:
    with pytest.raises(UnknownPluginError, match=r"unknown kind plugin 'visoin'.*Did you mean 'vision'"):
        PluginRegistry(KINDS).plugins("visoin")


def test_duplicate_names_mark_both_broken_and_name_both_distributions() -> None:
    reg = PluginRegistry(KINDS)
    reg.register_module(_module(PluginSpec("text", "bert", _Cfg, _factory),
                                PluginSpec("text", "tiny", _Cfg, _factory)), "text.bert", "x2vlm", "0.1.0")
    added = reg.register_module(_module(PluginSpec("text", "bert", _Cfg, _factory)), "text.mybert", "acme-nlp", "2.0")
    assert added == [] and reg.names("text") == ["tiny"]  # the module's other plugin is unaffected
    broken = reg.broken
    assert [(b.entry_point, b.distribution, b.kind, b.name) for b in broken] == [
        ("text.bert", "x2vlm", "text", "bert"), ("text.mybert", "acme-nlp", "text", "bert")]
    for b in broken:
        assert isinstance(b.error, DuplicatePluginError)
        assert "text plugin 'bert' is provided twice" in b.reason and "none of them is used" in b.reason
        assert "x2vlm 0.1.0 (text.bert)" in b.reason and "acme-nlp 2.0 (text.mybert)" in b.reason
    for ask in (lambda: reg.get("text", "bert"), lambda: reg.build("text", {"plugin": "bert"}),
                lambda: reg.find("text.bert"), lambda: reg.find("bert")):
        with pytest.raises(DuplicatePluginError, match=r"by x2vlm 0.1.0 \(text.bert\) and by acme-nlp 2.0"):
            ask()
    reg.register_module(_module(PluginSpec("text", "bert", _Cfg, _factory)), "text.third", "third", "1")
    assert len(reg.broken) == 3 and "provided 3 times" in reg.broken[0].reason and "third 1" in reg.broken[0].reason
    assert reg.build("text", {"plugin": "tiny", "size": 2}) == 2


def test_bad_hook_return_is_broken_not_fatal() -> None:
    reg = PluginRegistry(KINDS)
    bad = types.SimpleNamespace(x2vlm_provide_plugins=hookimpl(lambda: ["not a spec"]))
    reg.register_module(bad, "vision.bad", "bad-dist")
    reg.register_module(_module(PluginSpec("vision", "good", _Cfg, _factory)), "vision.good")
    assert [b.entry_point for b in reg.broken] == ["vision.bad"]
    assert "not PluginSpec" in reg.broken[0].reason
    assert reg.names("vision") == ["good"]


def test_misspelled_hook_is_rejected() -> None:
    reg = PluginRegistry(KINDS)
    typo = types.SimpleNamespace(x2vlm_provide_plugin=hookimpl(lambda: []))
    reg.register_module(typo, "typo")
    assert "x2vlm_provide_plugin" in reg.broken[0].reason


def test_spec_validates_kind_and_config() -> None:
    reg = PluginRegistry(("vision", "text"))  # the caller's kinds, not the registry's
    reg.register_module(_module(PluginSpec("vison", "x", _Cfg, _factory)), "vison.x", "typo-dist")
    (broken,) = reg.broken
    assert broken.entry_point == "vison.x" and "kind 'vison' is not one of vision, text" in broken.reason
    assert reg.plugins() == []
    with pytest.raises(TypeError, match="config must be a pydantic BaseModel"):
        PluginSpec("vision", "x", dict, _factory)  # type: ignore[arg-type]


def test_validate_reports_dotted_path_and_value() -> None:
    reg = PluginRegistry(KINDS)
    reg.register_module(_module(PluginSpec("vision", "toy", _Cfg, _factory)), "m")
    with pytest.raises(registry.ConfigError) as err:
        reg.validate("vision", {"plugin": "toy", "size": "big"}, "model.vision")
    assert "model.vision.size" in str(err.value) and "'big'" in str(err.value)
    with pytest.raises(registry.ConfigError, match=r"model.vision.sise: unknown field for vision plugin 'toy'"):
        reg.validate("vision", {"plugin": "toy", "sise": 1}, "model.vision")
    with pytest.raises(registry.ConfigError, match=r"model.vision.plugin: missing plugin name; one of: toy"):
        reg.validate("vision", {"size": 1}, "model.vision")


THIRD_PARTY = '''
from pydantic import BaseModel, ConfigDict
from registry import PluginSpec, hookimpl

class TinyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = 8

def build(config):
    """A third-party toy vision encoder."""
    return ("tiny", config.width)

@hookimpl
def x2vlm_provide_plugins():
    return [PluginSpec(kind="vision", name="acme_tiny", config=TinyConfig, factory=build)]
'''


def test_third_party_distribution_is_found(make_distribution: Callable[..., Path]) -> None:
    make_distribution("acme-vision", "acme_vision", THIRD_PARTY, {"vision.acme_tiny": "acme_vision"}, "3.1.4")
    reg = PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)
    info = reg.get("vision", "acme_tiny")
    assert (info.distribution, info.version, info.entry_point) == ("acme-vision", "3.1.4", "vision.acme_tiny")
    assert info.spec.summary == "A third-party toy vision encoder."
    assert reg.build("vision", {"plugin": "acme_tiny", "width": 4}) == ("tiny", 4)


def test_broken_import_keeps_others(make_distribution: Callable[..., Path]) -> None:
    make_distribution("acme-vision", "acme_vision", THIRD_PARTY, {"vision.acme_tiny": "acme_vision"})
    make_distribution("acme-broken", "acme_broken", "import not_a_real_module_xyz\n", {"text.broken": "acme_broken"})
    reg = PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)
    assert "acme_tiny" in reg.names("vision")
    (broken,) = [b for b in reg.broken if b.entry_point == "text.broken"]
    assert broken.distribution == "acme-broken"
    assert "ModuleNotFoundError" in broken.reason and "not_a_real_module_xyz" in broken.reason
    with pytest.raises(PluginLoadError, match=r"'text.broken' from acme-broken failed to load: ModuleNotFoundError"):
        reg.get("text", "broken")


def test_duplicate_across_distributions(make_distribution: Callable[..., Path]) -> None:
    make_distribution("acme-vision", "acme_vision", THIRD_PARTY, {"vision.acme_tiny": "acme_vision"})
    make_distribution("other-vision", "other_vision", THIRD_PARTY, {"vision.acme_tiny2": "other_vision"}, "9.0")
    reg = PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)  # loads: the rest of the CLI still works
    assert "timm_vit" in reg.names("vision") and "acme_tiny" not in reg.names("vision")
    dup = [b for b in reg.broken if b.name == "acme_tiny"]
    assert sorted(b.distribution for b in dup) == ["acme-vision", "other-vision"]
    assert all(re.search(r"acme-vision 0.1.0 \(vision.acme_tiny\) and by other-vision 9.0", b.reason) for b in dup)
    with pytest.raises(DuplicatePluginError, match=r"acme-vision 0.1.0.*other-vision 9.0"):
        reg.build("vision", {"plugin": "acme_tiny"})


EXITS_AT_IMPORT = "import sys\nsys.exit(3)\n"

EXITS_IN_HOOK = """
import sys
from registry import hookimpl

@hookimpl
def x2vlm_provide_plugins():
    sys.exit("leaving")
"""

RAISES_BASE_EXCEPTION = """
class Odd(BaseException):
    pass

raise Odd("not an Exception subclass")
"""


def test_base_exceptions_from_plugins_are_kept_broken(make_distribution: Callable[..., Path]) -> None:
    make_distribution("acme-exit", "acme_exit", EXITS_AT_IMPORT, {"text.acme_exit": "acme_exit"})
    make_distribution("acme-hook", "acme_hook", EXITS_IN_HOOK, {"text.acme_hook": "acme_hook"})
    make_distribution("acme-odd", "acme_odd", RAISES_BASE_EXCEPTION, {"text.acme_odd": "acme_odd"})
    make_distribution("acme-vision", "acme_vision", THIRD_PARTY, {"vision.acme_tiny": "acme_vision"})
    reg = PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)
    reasons = {b.entry_point: (b.distribution, b.reason) for b in reg.broken}
    assert reasons["text.acme_exit"] == ("acme-exit", "SystemExit: 3")
    assert reasons["text.acme_hook"] == ("acme-hook", "SystemExit: leaving")
    assert reasons["text.acme_odd"] == ("acme-odd", "Odd: not an Exception subclass")
    assert "acme_tiny" in reg.names("vision") and "bert" in reg.names("text")
    with pytest.raises(PluginLoadError, match=r"'text.acme_exit' from acme-exit failed to load: SystemExit: 3"):
        reg.get("text", "acme_exit")


def test_keyboard_interrupt_still_stops(make_distribution: Callable[..., Path]) -> None:
    reg = PluginRegistry(KINDS)

    @hookimpl
    def x2vlm_provide_plugins() -> list[PluginSpec]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reg.register_module(types.SimpleNamespace(x2vlm_provide_plugins=x2vlm_provide_plugins), "ctrl_c")
    make_distribution("acme-ctrlc", "acme_ctrlc", "raise KeyboardInterrupt\n", {"text.acme_ctrlc": "acme_ctrlc"})
    with pytest.raises(KeyboardInterrupt):
        PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)


def test_cli_lists_broken_and_duplicate_plugins(
    make_distribution: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from x2vlm_core.cli import main
    from x2vlm_core.discovery import default_registry

    make_distribution("acme-exit", "acme_exit", EXITS_AT_IMPORT, {"text.acme_exit": "acme_exit"})
    make_distribution("acme-vision", "acme_vision", THIRD_PARTY, {"vision.acme_tiny": "acme_vision"})
    make_distribution("other-vision", "other_vision", THIRD_PARTY, {"vision.acme_tiny2": "other_vision"}, "9.0")
    default_registry.cache_clear()
    try:
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert main(["plugins", "show", "acme_tiny"]) == 2
        err = capsys.readouterr().err
    finally:
        default_registry.cache_clear()  # later tests must not see the throwaway distributions
    assert re.search(r"^vision\s+timm_vit\s", out, re.MULTILINE)
    assert "BROKEN  text.acme_exit  acme-exit  SystemExit: 3" in out
    assert "BROKEN  vision.acme_tiny  acme-vision  DuplicatePluginError: vision plugin 'acme_tiny'" in out
    assert "BROKEN  vision.acme_tiny2  other-vision  DuplicatePluginError" in out
    assert "provided twice" in err and "acme-vision 0.1.0" in err and "other-vision 9.0" in err
