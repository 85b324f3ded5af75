"""A run directory that never loses a run: one run at a time (a lock), no silent restart over an old run.

- A non-empty run directory is only reused with `resume` (continue it) or `overwrite` (delete what an
  earlier run wrote there, then start over); otherwise the run is refused before any work is done.
- `.lock` holds the pid and host of the run using the directory; a second run is refused while that
  process lives, and a lock left by a killed process is taken over (with a note).
- `resume` with history but no usable checkpoint asks for `overwrite` instead of truncating the history.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

from registry import PluginError

__all__ = ["RUN_OUTPUTS", "RunDirError", "RunLock", "check_run_dir", "clear_run_dir"]

# What a run writes into its directory (and `overwrite` deletes); anything else is left alone.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "metrics.csv", "tensorboard", "config.yaml", "eval.json",
               "curves.png", "grounding.png", "captions.png")
_LOCK = ".lock"


class RunDirError(PluginError):
    """The run directory holds another run, is in use, or cannot be written (printed as one paragraph)."""


def _outputs(run_dir: Path) -> list[str]:
    return [name for name in RUN_OUTPUTS if (run_dir / name).exists()]


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over an earlier one unless told; check the directory is writable."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: continue the run, or start over")
    found = _outputs(run_dir)
    if found and not resume and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(found)}); pass --resume to continue it, or --overwrite to "
            "delete its checkpoints and history and start over (or choose another train.out_dir)"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"cannot write the run directory {run_dir}: {error.strerror}; choose another "
                          "train.out_dir or fix its permissions") from None


def clear_run_dir(run_dir: Path) -> list[str]:
    """Delete what an earlier run wrote into `run_dir` (RUN_OUTPUTS only); returns what was deleted."""
    removed = _outputs(run_dir)
    for name in removed:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(run_dir):` — exclusive use of a run directory by this process (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / _LOCK
        self.held = False

    def __enter__(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me["host"])
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return self
        raise RunDirError(f"cannot take the lock {self.path}; remove it if no run uses {self.path.parent}")

    def _take_over_if_stale(self, host: str) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            owner = {}
        pid, where = int(owner.get("pid", -1)), str(owner.get("host", ""))
        if where and where != host:
            raise RunDirError(f"{self.path.parent} is in use by a run on host {where} (pid {pid}); wait for it to "
                              f"finish, or delete {self.path} if that run is gone")
        if pid > 0 and _alive(pid):
            raise RunDirError(f"{self.path.parent} is in use by another run (pid {pid}); wait for it to finish or "
                              "choose another train.out_dir")
        print(f"note: removing the lock of a run that no longer exists (pid {pid}) in {self.path.parent}",
              file=sys.stderr)
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
