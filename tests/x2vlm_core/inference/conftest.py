"""Fixtures of the inference tests: real checkpoints made here (tiny, a few steps), scenes, awkward files.

- `tiny_run`: configs/tiny.yaml pretrained for 4 steps (a run directory);
- `qa_run`: tiny_run fine-tuned for 2 steps on the test task of qa_task.py (answer / verify / caption);
- `registry`: the installed plugins plus that test task (rebuilding qa_run needs it);
- `scenes`: synthetic held-out scenes as PNG files, with their captions and object boxes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import qa_task
from infer_helpers import Scenes, Server, free_port, wait_until_up, write_scenes

from registry import PluginRegistry
from x2vlm_core.config import load_config
from x2vlm_core.contracts.factories import KINDS
from x2vlm_core.discovery import ENTRY_POINT_GROUP
from x2vlm_core.inference import Pipeline, load
from x2vlm_core.training.finetune import finetune, finetune_config_from
from x2vlm_core.training.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    cfg = load_config(CONFIGS / "tiny.yaml", [
        f"train.out_dir={out}/run", f"model.text.tokenizer={out}/tokenizer", f"train.tokenizer.out={out}/tokenizer",
        "train.tokenizer.texts=300", "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=4",
        "train.log_every=2",
    ])
    pretrain(cfg, progress=False, evaluate=False)
    return out / "run"


@pytest.fixture(scope="session")
def registry() -> PluginRegistry:
    reg = PluginRegistry.from_entry_points(ENTRY_POINT_GROUP, KINDS)
    reg.register_module(qa_task, "task.test_qa")
    return reg


@pytest.fixture(scope="session")
def qa_run(tiny_run: Path, registry: PluginRegistry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "run"
    cfg = finetune_config_from({
        "task": {"plugin": "test_qa"},
        "data": {"sources": [{"plugin": "synthetic", "split": "train", "kind": "vqa", "seed": 0}], "batch_size": 8},
        "train": {"steps": 2, "warmup_steps": 1, "accelerator": "cpu", "checkpoint_every": 2, "log_every": 1,
                  "out_dir": str(out)},
    }, registry)
    finetune(tiny_run, cfg, registry=registry, progress=False, evaluate=False)
    return out


@pytest.fixture(scope="session")
def pipe(tiny_run: Path) -> Pipeline:
    return load(tiny_run, device="cpu")


@pytest.fixture(scope="session")
def qa_pipe(qa_run: Path, registry: PluginRegistry) -> Pipeline:
    return load(qa_run, device="cpu", registry=registry)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Scenes:
    return write_scenes(tmp_path_factory.mktemp("scenes") / "images", 12)


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 20,000 × 20,000 PNG (1 bit per pixel, ~90 KB on disk, 400 megapixels decoded)."""
    from PIL import Image

    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20_000, 20_000), 1).save(path)
    return path


@pytest.fixture(scope="session")
def live_server(tiny_run: Path, scenes: Scenes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`x2vlm serve` in its own process on a free loopback port, with an index of the scenes."""
    from x2vlm_core.inference.index import build_index

    work = tmp_path_factory.mktemp("live")
    build_index(load(tiny_run, device="cpu"), work / "idx", images=scenes.dir, progress=False)
    port = free_port()
    log = work / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "x2vlm_core.cli", "serve", "--checkpoint", str(tiny_run), "--index",
             str(work / "idx"), "--port", str(port), "--device", "cpu", "--log-level", "warning"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=work,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, log)
        yield Server(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


