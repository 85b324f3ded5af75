"""The quick starts of README.md and docs/use.md run as written (each file's first ```python block), in a
directory holding runs/tiny."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from infer_helpers import Scenes

ROOT = Path(__file__).resolve().parents[3]


def quickstart(doc: Path) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert blocks, f"{doc} has no ```python block"
    return str(blocks[0])


@pytest.mark.parametrize("doc", [ROOT / "README.md", ROOT / "docs" / "use.md"], ids=["README", "use"])
def test_the_quickstart_snippet_runs_as_written(
    doc: Path,
    tiny_run: Path, scenes: Scenes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = quickstart(doc)
    assert 3 <= len([line for line in code.splitlines() if line.strip()]) <= 10
    (tmp_path / "runs").mkdir()
    os.symlink(tiny_run, tmp_path / "runs" / "tiny")
    (tmp_path / "scene.png").write_bytes(scenes.paths[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(doc), "exec"), {"__name__": "__quickstart__"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2
    assert printed[0].startswith("Box(cx=") and printed[1].startswith("torch.Size([2, 32]) ")
    assert printed[1].split()[-1] in ("circle", "square", "star")
