"""A tiny random X²-VLM (configs/tiny.yaml sizes) for the generation and captioning tests."""

from __future__ import annotations

from pathlib import Path

import torch

from x2vlm_core.config import load_config
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def synthetic_tokenizer(out: Path, vocab_size: int = 300) -> Path:
    """A WordPiece tokenizer trained on the synthetic world's texts, written to `out`."""
    corpus = default_registry().build("data", {"plugin": "synthetic"}).corpus(1500)  # type: ignore[attr-defined]
    train_tokenizer(corpus, "wordpiece", vocab_size, out)
    return out


def tiny_model(tokenizer: Path, *overrides: str, seed: int = 0) -> X2VLM:
    """configs/tiny.yaml's model (random weights from `seed`) with `tokenizer`; `overrides` as --set."""
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizer}", *overrides])
    torch.manual_seed(seed)
    return build_model(cfg.model)
