"""Every user error is one paragraph and exit code 2 — through the real CLI, before any work is done.

Each case runs `x2vlm` in this process (main(argv)) and asserts: exit 2, `x2vlm: error:` with the words a
user needs, no traceback, and nothing written to the run directory.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from x2vlm_core.cli import main
from x2vlm_core.config import load_config
from x2vlm_core.discovery import default_registry
from x2vlm_core.training.pretrain import prepare_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tok"
    prepare_tokenizer(load_config(TINY, [f"model.text.tokenizer={path}", f"train.tokenizer.out={path}",
                                         "train.tokenizer.texts=300"]), default_registry())
    return path


def _pretrain(tok: Path, out: Path, *sets: str) -> list[str]:
    base = [f"model.text.tokenizer={tok}", f"train.tokenizer.out={tok}", f"train.out_dir={out}", "train.steps=2",
            "train.warmup_steps=1", "data.image_pairs=2", "data.box_pairs=2", "data.video_pairs=1",
            "eval.samples=8", *sets]
    return ["pretrain", "--config", str(TINY), "--quiet", *(a for s in base for a in ("--set", s))]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> None:
    assert main(argv) == 2, argv
    err = " ".join(capsys.readouterr().err.split())
    assert "x2vlm: error:" in err and "Traceback" not in err, err
    assert err.count("x2vlm: error:") == 1 and err.rstrip().endswith("(run with --debug for the traceback)"), err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize(("sets", "words"), [
    (["model.vision.image_size=60"], ["model.vision", "not a multiple of the patch size"]),
    (["model.vision.heads=3"], ["model.vision", "divisible by num_heads"]),
    (["model.vision.timm_name=vit_nonexistent"], ["timm has no model 'vit_nonexistent'"]),
    (["model.fusion.heads=3"], ["model.fusion", "not divisible by heads 3"]),
    (["data.image_pairs=0", "data.box_pairs=0", "data.video_pairs=0"], ["are all 0"]),
    (["train.accelerator=banana"], ["train.accelerator", "'cpu'"]),
    (["train.accelerator=gpu"], ["no CUDA device is visible"]),
    (["train.devices=0"], ["devices must be at least 1"]),
    (["train.lr=.inf"], ["train.lr", "finite number"]),
    (["losses.0.weight=.inf"], ["losses.0.weight", "finite number"]),
])
def test_bad_configs_stop_before_any_work(sets: list[str], words: list[str], tok: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _fails(_pretrain(tok, tmp_path / "run", *sets), capsys, *words)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_an_earlier_run_a_full_disk_and_an_unwritable_directory(tok: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    assert main([*_pretrain(tok, run), "--no-eval"]) == 0
    capsys.readouterr()
    _fails([*_pretrain(tok, run), "--no-eval"], capsys, "already holds a run", "--resume", "--overwrite")
    blocker = tmp_path / "file"
    blocker.write_text("")
    _fails(_pretrain(tok, blocker / "run"), capsys, "cannot write the run directory")

    import safetensors.torch

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    _fails([*_pretrain(tok, tmp_path / "full"), "--no-eval"], capsys, "No space left on device", "free some space")
    assert not any((tmp_path / "full" / "checkpoints").glob("step-*"))  # no half checkpoint under a final name


def _plugin(make_distribution: Callable[..., Path], body: str, package: str) -> None:
    make_distribution(package.replace("_", "-"), package, f'''
        from pydantic import BaseModel
        from x2vlm_core.plugin_api import PluginSpec, hookimpl

        class Cfg(BaseModel):
            pass

        def factory(config):
            {body}

        @hookimpl
        def x2vlm_provide_plugins():
            return [PluginSpec(kind="vision", name="bad", config=Cfg, factory=factory)]
    ''', {"vision.bad": package})
    default_registry.cache_clear()


@pytest.mark.parametrize(("body", "package", "words"), [
    ("raise RuntimeError('weights missing')", "raising_vision", ["model.vision.plugin", "RuntimeError: weights missing"]),
    ("return 42", "wrong_type_vision", ["returned int, not a VisionEncoder"]),
])
def test_a_plugin_factory_that_raises_or_returns_the_wrong_type(body: str, package: str, words: list[str], tok: Path,
                                                                tmp_path: Path, make_distribution: Callable[..., Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _plugin(make_distribution, body, package)
    try:
        _fails(_pretrain(tok, tmp_path / "run", "model.vision={plugin: bad}"), capsys, *words)
    finally:
        default_registry.cache_clear()


def test_a_corrupt_checkpoint_file_and_bad_command_arguments(tok: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main([*_pretrain(tok, run), "--no-eval"]) == 0
    checkpoint = run / "checkpoints" / "step-00000002"
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "heads.safetensors").write_bytes(b"\xff" * 64)  # a corrupt header
    capsys.readouterr()
    _fails(["evaluate", "--checkpoint", str(broken), "--task", "retrieval"], capsys, "heads.safetensors")
    _fails(["evaluate", "--checkpoint", str(run), "--task", "retrieval", "--device", "banana"], capsys,
           "--device banana")
    _fails(["data", "synth", "--out", str(tmp_path / "s"), "--n", "4", "--shard-size", "0"], capsys,
           "--shard-size must be at least 1")
    _fails(["data", "check", "--config", str(TINY), "--records", "0"], capsys, "--records must be at least 1")


def test_usage_errors_under_python_dash_m_are_one_paragraph(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "x2vlm_core.cli", "pretrain"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the following arguments are required: --config" in done.stderr
