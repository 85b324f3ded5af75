"""Run configs: YAML + extends + --set overrides, validated against each plugin's config model."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from registry import ConfigError, PluginRegistry, PluginSpec, UnknownPluginError, hookimpl
from x2vlm_core.config import apply_overrides, dump_config, load_config, load_yaml
from x2vlm_core.contracts.factories import KINDS


class _Vision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = Field(16, gt=0)
    image_size: int = 32


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: int = 2


def _factory(config: BaseModel) -> BaseModel:
    """Toy."""
    return config


@pytest.fixture
def reg() -> PluginRegistry:
    specs = [
        PluginSpec("vision", "toyvit", _Vision, _factory),
        PluginSpec("text", "toytext", _Plain, _factory),
        PluginSpec("fusion", "toyfusion", _Plain, _factory),
        PluginSpec("loss", "contrastive", _Plain, _factory),
        PluginSpec("data", "toydata", _Plain, _factory),
    ]
    reg = PluginRegistry(KINDS)
    reg.register_module(types.SimpleNamespace(x2vlm_provide_plugins=hookimpl(lambda: specs)), "toys")
    return reg


BASE = {
    "model": {
        "vision": {"plugin": "toyvit", "width": 8},
        "text": {"plugin": "toytext"},
        "fusion": {"plugin": "toyfusion", "layers": 1},
        "embed_dim": 32,
    },
    "losses": [{"plugin": "contrastive", "weight": 1.0}],
    "data": {"sources": [{"plugin": "toydata", "weight": 2.0}], "image_pairs": 4},
    "train": {"steps": 10, "warmup_steps": 1},
}


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_fills_plugin_defaults(tmp_path: Path, reg: PluginRegistry) -> None:
    cfg = load_config(_write(tmp_path / "a.yaml", BASE), registry=reg)
    assert cfg.model.vision.fields() == {"width": 8, "image_size": 32}
    assert cfg.model.text.fields() == {"layers": 2}
    assert cfg.data.sources[0].weight == 2.0 and cfg.data.sources[0].fields() == {"layers": 2}
    # the dump is complete and loads back to the same config
    again = load_config(_write(tmp_path / "b.yaml", yaml.safe_load(dump_config(cfg))), registry=reg)
    assert again == cfg


def test_extends_and_overrides(tmp_path: Path, reg: PluginRegistry) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "train": {"lr": 0.5}, "model": {"vision": {"image_size": 64}}})
    cfg = load_config(child, ["train.steps=7", "model.embed_dim=64", "losses.0.weight=0.25", "train.betas=[0.8, 0.9]"], reg)
    assert (cfg.train.steps, cfg.train.lr, cfg.model.embed_dim) == (7, 0.5, 64)
    assert cfg.model.vision.fields() == {"width": 8, "image_size": 64}  # merged, not replaced
    assert cfg.losses[0].weight == 0.25 and cfg.train.betas == (0.8, 0.9)


def test_compile_takes_its_scopes_and_the_old_flag(tmp_path: Path, reg: PluginRegistry) -> None:
    path = _write(tmp_path / "a.yaml", BASE)
    for value, scope in [("true", "encoders"), ("false", "off"), ("on", "encoders"), ("off", "off"),
                         ("encoders", "encoders"), ("step", "step")]:
        assert load_config(path, [f"train.compile={value}"], reg).train.compile == scope, value
    with pytest.raises(ConfigError, match=r"train.compile: Input should be 'off', 'encoders' or 'step'"):
        load_config(path, ["train.compile=everything"], reg)


def test_changing_plugin_in_child_drops_parent_fields(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "model": {"text": {"plugin": "other", "x": 1}}})
    assert load_yaml(child)["model"]["text"] == {"plugin": "other", "x": 1}


def test_yaml_syntax_error_gives_file_and_line(tmp_path: Path, reg: PluginRegistry) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  vision: {plugin: toyvit\ntrain: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: <yaml>: YAML syntax error"):
        load_config(bad, registry=reg)


def test_errors_name_file_path_and_value(tmp_path: Path, reg: PluginRegistry) -> None:
    path = _write(tmp_path / "a.yaml", BASE)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["model.vision.width=-3"], reg)
    assert f"{path}: model.vision.width: Input should be greater than 0" in str(err.value)
    assert "(got -3)" in str(err.value)
    with pytest.raises(ConfigError, match=r"train.stepz: unknown field"):
        load_config(path, ["train.stepz=3"], reg)
    with pytest.raises(ConfigError, match=r"train.precision: Input should be '32-true'"):
        load_config(path, ["train.precision=fp8"], reg)
    with pytest.raises(UnknownPluginError, match=r"unknown text plugin 'toytxt' \(at model.text.plugin\).*Did you mean 'toytext'"):
        load_config(path, ["model.text.plugin=toytxt"], reg)


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match=r"losses.3: not a valid list index \(list has 1 items\)"):
        apply_overrides({"losses": [{}]}, ["losses.3.weight=1"])
    with pytest.raises(ConfigError, match="cannot set a field inside a scalar"):
        apply_overrides({"train": 3}, ["train.steps=1"])


def test_circular_extends(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="circular extends"):
        load_yaml(tmp_path / "a.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml(tmp_path / "nope.yaml")
