"""Fixtures of the QA and NLVR2 task tests: a tiny pretrained checkpoint (configs/tiny.yaml, pretrained for a
few real steps here), the model loaded from it, and a short fine-tuning run on the synthetic world.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import load_config
from x2vlm_core.model import X2VLM
from x2vlm_core.training.finetune import finetune, finetune_config_from
from x2vlm_core.training.loop import TrainResult
from x2vlm_core.training.pretrain import pretrain

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding configs/tiny.yaml pretrained for 6 steps (its own tokenizer, video plugin)."""
    root = tmp_path_factory.mktemp("tiny_pretrained")
    cfg = load_config(CONFIGS / "tiny.yaml", [
        f"model.text.tokenizer={root / 'tokenizer'}", f"train.tokenizer.out={root / 'tokenizer'}",
        f"train.out_dir={root / 'run'}", "train.steps=6", "train.checkpoint_every=6", "train.log_every=3",
    ])
    pretrain(cfg, progress=False, evaluate=False)
    return root / "run"


@pytest.fixture
def tiny_model(tiny_checkpoint: Path) -> X2VLM:
    """A fresh copy of the tiny pretrained model, in eval mode."""
    return load_model(tiny_checkpoint).model


@pytest.fixture
def answer_file(tmp_path: Path) -> Callable[[list[str]], str]:
    """Writes a candidate list (a JSON list of strings) and returns its path."""

    def write(answers: list[str]) -> str:
        path = tmp_path / f"answers_{len(list(tmp_path.glob('answers_*')))}.json"
        path.write_text(json.dumps(answers))
        return str(path)

    return write


@pytest.fixture
def finetune_tiny(tiny_checkpoint: Path, tmp_path: Path) -> Callable[..., TrainResult]:
    """Fine-tune the tiny checkpoint on a synthetic task kind and evaluate it on its test split."""

    def run(task: dict[str, Any], source: dict[str, Any], steps: int, lr: float = 2e-3, batch_size: int = 32,
            samples: int = 200, out: str = "finetuned", eval_source: dict[str, Any] | None = None) -> TrainResult:
        raw = {
            "task": task,
            "data": {"sources": [{"plugin": "synthetic", **source}], "batch_size": batch_size},
            "train": {"steps": steps, "warmup_steps": 5, "lr": lr, "log_every": 10, "checkpoint_every": steps,
                      "accelerator": "cpu", "precision": "32-true", "out_dir": str(tmp_path / out)},
            "eval": {"data": [{"plugin": "synthetic", **(eval_source or {**source, "split": "test"})}], "samples": samples,
                     "batch_size": 64},
        }
        return finetune(tiny_checkpoint, finetune_config_from(raw), progress=False)

    return run
