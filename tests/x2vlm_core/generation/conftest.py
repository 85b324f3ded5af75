"""Fixtures of the generation tests: a synthetic-world tokenizer and a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.x2vlm_core.generation.tiny import synthetic_tokenizer, tiny_model
from x2vlm_core.model import X2VLM


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_tokenizer(tmp_path_factory.mktemp("captions-tokenizer"))


@pytest.fixture(scope="module")
def random_model(tokenizer_dir: Path) -> X2VLM:
    return tiny_model(tokenizer_dir).eval()
