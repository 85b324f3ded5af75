"""Shared fixtures: seeding, a throwaway third-party plugin distribution."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Create an installed-looking distribution (package + .dist-info with entry points) on sys.path."""

    def make(dist: str, package: str, code: str, entry_points: dict[str, str], version: str = "0.1.0") -> Path:
        root = tmp_path / f"site-{dist}"
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(textwrap.dedent(code))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[x2vlm]\n{lines}\n")
        monkeypatch.syspath_prepend(str(root))
        return root

    return make
