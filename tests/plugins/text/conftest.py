"""Tiny tokenizers and HF model directories for the text-plugin tests (built here, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from x2vlm_core.data.tokenizer import train_tokenizer

CORPUS = [
    "a red circle on the left of a blue square",
    "two small green triangles near the top right corner",
    "the yellow star is above the purple rectangle",
    "一个红色的圆在蓝色正方形的左边。",
    "左側に赤い円があります。",
] * 20

TEXTS = ["a red circle on the left", "two green triangles", "一个红色的圆"]


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wordpiece")
    train_tokenizer(CORPUS, "wordpiece", 200, out)
    return out


@pytest.fixture(scope="session")
def sentencepiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sentencepiece")
    train_tokenizer(CORPUS, "sentencepiece", 200, out)
    return out
