"""The compile cache: torch.compile's artifacts written after a compiled run and hot-loaded by the next one
(on a fresh inductor cache directory: the case of a new machine); an unusable file is skipped, never fatal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from x2vlm_core.training.compile_cache import load_compile_cache, save_compile_cache

# Compile a small MLP (forward + backward), report inductor's cache counters, keep the artifacts.
_SCRIPT = """
import sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from x2vlm_core.training.compile_cache import load_compile_cache, save_compile_cache
path = Path(sys.argv[1])
loaded = load_compile_cache(path)
torch.manual_seed(0)
net = torch.compile(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 2)))
net(torch.randn(4, 8)).square().sum().backward()
saved = save_compile_cache(path)
print(loaded, saved, counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


def _compile(cache: Path, inductor_dir: Path) -> list[int]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir)}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(cache)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [int(v) for v in done.stdout.split()]


@pytest.mark.slow
def test_a_fresh_machine_compiles_from_the_kept_artifacts(tmp_path: Path) -> None:
    """~25 s: two processes, each with an empty inductor cache directory of its own."""
    cache = tmp_path / "compile-cache.bin"
    loaded, saved, hits, misses = _compile(cache, tmp_path / "inductor-1")
    assert loaded == 0 and saved > 0 and hits == 0 and misses > 0 and cache.stat().st_size > 0
    loaded, saved_again, hits, misses = _compile(cache, tmp_path / "inductor-2")
    assert loaded == saved and hits > 0 and misses == 0  # every graph came from the file
    assert saved_again == saved  # what was loaded is kept for the next run


def test_a_missing_or_unusable_file_means_compiling_from_scratch(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert load_compile_cache(tmp_path / "none.bin") == 0
    torn = tmp_path / "torn.bin"
    torn.write_bytes(b"not a cache" * 10)
    with caplog.at_level(logging.WARNING, logger="x2vlm.train"):
        assert load_compile_cache(torn) == 0
    assert str(torn) in caplog.text and "compiling from scratch" in caplog.text


def test_save_replaces_the_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = type("Info", (), {"artifacts": {"inductor": ["a", "b"], "aot_autograd": ["c"]}})()
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"new artifacts", info))
    path = tmp_path / "compile-cache.bin"
    path.write_bytes(b"old")
    assert save_compile_cache(path) == 3
    assert path.read_bytes() == b"new artifacts" and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert save_compile_cache(tmp_path / "new" / "dir" / "cache.bin") == 3  # its folder is made
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)  # nothing compiled
    assert save_compile_cache(path) == 0 and path.read_bytes() == b"new artifacts"


def test_a_failed_save_warns_and_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    info = type("Info", (), {"artifacts": {"inductor": ["a"]}})()
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"new", info))
    path = tmp_path / "compile-cache.bin"
    path.write_bytes(b"old")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with caplog.at_level(logging.WARNING, logger="x2vlm.train"):
        assert save_compile_cache(path) == 0  # training goes on
    assert "not written" in caplog.text and "No space left" in caplog.text
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp left
