"""No lost runs: an earlier run is never silently replaced, one run at a time per directory (a lock that a
killed run does not leave behind for good), and --resume without a usable checkpoint keeps the history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from x2vlm_core.training.loop import _resume_point
from x2vlm_core.training.run_dir import RunDirError, RunLock, check_run_dir, clear_run_dir


def _earlier_run(run: Path) -> None:
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    (run / "config.yaml").write_text("train: {}\n")
    (run / "notes.txt").write_text("the user's own file")


def test_an_earlier_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    check_run_dir(run, resume=False, overwrite=False)  # a new directory is fine
    _earlier_run(run)
    with pytest.raises(RunDirError) as error:
        check_run_dir(run, resume=False, overwrite=False)
    message = str(error.value)
    assert "already holds a run (checkpoints, metrics.jsonl, config.yaml)" in message
    assert "--resume" in message and "--overwrite" in message
    check_run_dir(run, resume=True, overwrite=False)
    check_run_dir(run, resume=False, overwrite=True)
    with pytest.raises(RunDirError, match="contradict"):
        check_run_dir(run, resume=True, overwrite=True)
    assert clear_run_dir(run) == ["checkpoints", "metrics.jsonl", "config.yaml"]
    assert [p.name for p in run.iterdir()] == ["notes.txt"]  # only what a run writes is deleted


def test_an_unwritable_run_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="cannot write the run directory .*file/run"):
        check_run_dir(blocker / "run", resume=False, overwrite=False)


def test_one_run_at_a_time_and_a_dead_runs_lock_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(RunDirError, match=f"in use by another run \\(pid {os.getpid()}\\)"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()  # released
    # a run killed with its lock held: the next run finds the process gone and takes over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"removing the lock of a run that no longer exists (pid {dead.pid})" in capsys.readouterr().err
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(RunDirError, match="in use by a run on host another-machine"):
        RunLock(tmp_path).__enter__()


def test_resume_without_a_usable_checkpoint_asks_for_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _earlier_run(run)  # its only checkpoint is an empty (torn) directory
    with pytest.raises(RunDirError, match="no usable checkpoint .* pass --overwrite"):
        _resume_point(run, main=True)
    assert (run / "metrics.jsonl").read_text()  # the history is still there
    assert _resume_point(tmp_path / "fresh", main=True) is None  # nothing yet: start at step 0
