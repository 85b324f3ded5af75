"""The trainer end to end: exact resume after SIGKILL (torn checkpoint, torn log line, a kill inside a checkpoint
write, DataLoader workers) down to the final weights, run-directory outputs, reduced precision, compilation.
Runs `x2vlm pretrain` as subprocesses on the tiny config with small batches. (Distributed: test_distributed.py.)"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from x2vlm_core.checkpoint import list_checkpoints, verify_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import load_config
from x2vlm_core.discovery import default_registry
from x2vlm_core.training.history import read_history, truncate_history
from x2vlm_core.training.pretrain import prepare_tokenizer, pretrain
from x2vlm_core.training.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
STEPS = 10
# numbers that depend on wall-clock time, not on the computation
TIMING = {"pairs_per_s", "data_wait"}


def _overrides(tok: Path, out: Path, steps: int = STEPS) -> list[str]:
    sets = [
        f"model.text.tokenizer={tok}", f"train.tokenizer.out={tok}", f"train.out_dir={out}",
        f"train.steps={steps}", "train.warmup_steps=2", "train.log_every=1", "train.checkpoint_every=3",
        "train.keep_last=5", "data.image_pairs=4", "data.box_pairs=4", "data.video_pairs=1", "eval.samples=32",
    ]
    return [a for s in sets for a in ("--set", s)]


def _pretrain(tok: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "x2vlm_core.cli", "pretrain", "--config", str(TINY), *_overrides(tok, out), *extra]


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{cmd[3:5]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's tokenizer, trained once for every run of this module."""
    path = tmp_path_factory.mktemp("tokenizer") / "tok"
    cfg = load_config(TINY, [f"model.text.tokenizer={path}", f"train.tokenizer.out={path}"])
    prepare_tokenizer(cfg, default_registry())
    return path


@pytest.fixture(scope="module")
def full_run(tok: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An uninterrupted run with evaluation, in this process (saves a start-up): (run dir, its stderr)."""
    out = tmp_path_factory.mktemp("full") / "run"
    args = _overrides(tok, out)
    cfg = load_config(TINY, args[1::2])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        pretrain(cfg, progress=True, evaluate=True)
    return out, stderr.getvalue()


def _losses(rows: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    return {int(r["step"]): {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before {path.name} was written")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.01)


@pytest.mark.slow
def test_resume_after_sigkill_repeats_the_uninterrupted_run(full_run: tuple[Path, str], tok: Path,
                                                             tmp_path: Path) -> None:
    reference, _ = full_run
    out = tmp_path / "run"
    process = subprocess.Popen(_pretrain(tok, out, "--no-eval", "--quiet"), cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(out / "checkpoints" / "step-00000006", process)
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-way (rc {process.returncode}): {err}"
    steps = [s for s, _ in list_checkpoints(out)]
    assert 6 in steps and max(steps) < STEPS
    logged = read_history(out / "metrics.jsonl")
    assert logged and max(int(r["step"]) for r in logged) >= 6

    # A torn newest checkpoint (as after a crash during a copy) and a torn log line (as after a kill mid-write).
    newest = list_checkpoints(out)[-1][1]
    previous = list_checkpoints(out)[-2][1]
    heads = newest / "heads.safetensors"
    heads.write_bytes(heads.read_bytes()[: heads.stat().st_size // 2])
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "loss": 1.2')

    done = _run(_pretrain(tok, out, "--no-eval", "--quiet", "--resume"))
    assert f"{newest.name} in" in done.stderr and "incomplete or corrupt" in done.stderr
    assert f"resuming from {previous}" in done.stderr

    # Every logged value of every step equals the uninterrupted run's (timing aside).
    expected = _losses(read_history(reference / "metrics.jsonl"))
    got = _losses(read_history(out / "metrics.jsonl"))
    assert sorted(got) == list(range(1, STEPS + 1)) == sorted(expected)
    for step in expected:
        assert got[step].keys() == expected[step].keys()
        for key, value in expected[step].items():
            assert got[step][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (step, key)
    # no step twice, in the JSON lines or the CSV
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in lines] == list(range(1, STEPS + 1))
    with (out / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, STEPS + 1))
    verify_checkpoint(out / "checkpoints" / f"step-{STEPS:08d}")
    # ...and the final weights are the uninterrupted run's, bit for bit
    _assert_same_weights(reference, out)


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_leaves_the_previous_one_usable(full_run: tuple[Path, str], tok: Path,
                                                                        tmp_path: Path) -> None:
    """SIGKILL while step 6's checkpoint is being written (its temporary directory exists): the run resumes
    from step 3 and ends where the uninterrupted run ends."""
    reference, _ = full_run
    out = tmp_path / "run"
    process = subprocess.Popen(_pretrain(tok, out, "--no-eval", "--quiet"), cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = out / "checkpoints"
    try:
        _wait_for(root / "step-00000003", process)
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".tmp-step-00000006") for p in (root.iterdir() if root.is_dir() else [])):
            assert time.monotonic() < deadline and process.poll() is None, "never caught step 6 mid-write"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (root / "step-00000006").exists()  # killed before the rename
    assert [s for s, _ in list_checkpoints(out)] == [3]
    verify_checkpoint(root / "step-00000003")
    done = _run(_pretrain(tok, out, "--no-eval", "--quiet", "--resume"))
    assert "resuming from" in done.stderr and "step-00000003" in done.stderr
    assert "removing leftover" in done.stderr  # the torn temporary directory is cleaned up
    _assert_same_weights(reference, out)


@pytest.mark.slow
def test_resume_with_data_loader_workers_repeats_the_run(tok: Path, tmp_path: Path) -> None:
    """Two DataLoader workers: a run stopped after 4 steps and resumed ends with the weights of one run."""
    workers = ["--set", "data.num_workers=2"]
    whole = tmp_path / "whole"
    _run(_pretrain(tok, whole, "--no-eval", "--quiet", *workers, "--set", "train.steps=6"))
    part = tmp_path / "part"
    _run(_pretrain(tok, part, "--no-eval", "--quiet", *workers, "--set", "train.steps=6",
                   "--set", "train.checkpoint_every=4"))  # a checkpoint at 4 (and at 6)
    shutil.rmtree(part / "checkpoints" / "step-00000006")  # as if killed after step 4's checkpoint
    _run(_pretrain(tok, part, "--no-eval", "--quiet", *workers, "--set", "train.steps=6", "--set",
                   "train.checkpoint_every=4", "--resume"))
    _assert_same_weights(whole, part)


def test_run_directory_outputs(full_run: tuple[Path, str]) -> None:
    out, stderr = full_run
    cfg = load_config(out / "config.yaml")
    assert cfg.train.steps == STEPS
    rows = read_history(out / "metrics.jsonl")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    with (out / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == STEPS and float(table[-1]["loss"]) == pytest.approx(rows[-1]["loss"])
    evaluation = json.loads((out / "eval.json").read_text())
    for key in ("retrieval/i2t_r1", "retrieval/t2i_r1", "retrieval/mean_recall", "grounding/acc@0.5"):
        assert 0.0 <= evaluation[key] <= 1.0, key
    for png in ("curves.png", "grounding.png"):
        with Image.open(out / png) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100
    assert (out / "checkpoints" / f"step-{STEPS:08d}").is_dir()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    accumulator = EventAccumulator(str(out / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/contrastive", "train/lr", "eval/retrieval/mean_recall"} <= tags
    losses = accumulator.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, STEPS + 1))
    assert losses[-1].value == pytest.approx(rows[-1]["loss"], rel=1e-6)
    assert accumulator.Scalars("eval/retrieval/mean_recall")[0].value == pytest.approx(
        evaluation["retrieval/mean_recall"], rel=1e-6)

    # progress lines: the losses, then pairs/s and ETA, nothing else
    progress = [line for line in stderr.splitlines() if line.startswith("step ")]
    assert len(progress) == STEPS
    fields = progress[-1].split(" | ")
    assert fields[0] == f"step {STEPS}/{STEPS}" and fields[2].endswith("pairs/s") and fields[3].startswith("ETA")
    names = fields[1].split()[::2]
    assert names == ["loss", "contrastive", "matching", "mlm", "bbox"]
    assert "bad records skipped per data source" in stderr and "synthetic-image-train: 0 skipped" in stderr


def test_history_drops_torn_lines_and_abandoned_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "loss": 2.0}\n'
                    '{"step": 2, "loss": 9.0}\n{"step": 4, "lo')
    assert [(r["step"], r["loss"]) for r in read_history(path)] == [(1, 3.0), (2, 9.0), (3, 2.0)]
    truncate_history(path, 2)
    assert path.read_text() == '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 2, "loss": 9.0}\n'
    truncate_history(path, 0)
    assert path.read_text() == "" and read_history(path) == []


def test_progress_line_shows_losses_throughput_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress(total=10, start=0, enabled=True)
    bar.update(5, {"loss": 1.23456, "mlm": 0.5}, 123.4)
    line = capsys.readouterr().err.strip()
    assert line.startswith("step 5/10 | loss 1.235 mlm 0.500 | 123 pairs/s | ETA 0:")


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_reduced_precision_training_runs_through_fabric(tok: Path, tmp_path: Path, precision: str) -> None:
    """Fabric's precision plugins convert the Batch inputs (bf16-true casts images to bf16): two steps
    train, the losses are finite, and the checkpoint holds float weights."""
    args = _overrides(tok, tmp_path / "run", steps=2) + ["--set", f"train.precision={precision}"]
    cfg = load_config(TINY, args[1::2])
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        pretrain(cfg, progress=False, evaluate=False)
    rows = read_history(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["loss"] > 0 for r in rows)
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [2]


@pytest.mark.slow
def test_compiled_runs_train_like_eager_ones(tok: Path, tmp_path: Path) -> None:
    """train.compile: encoders wraps vision, text and fusion in torch.compile, step the whole step with its
    losses: the same losses (to float tolerance) and checkpoints that load like an eager run's; the compiled
    artifacts are kept for the next run. (About 3 minutes on 2 CPU cores: compilation.)"""
    histories = {}
    for mode in ("off", "encoders", "step"):
        args = _overrides(tok, tmp_path / mode, steps=2) + ["--set", f"train.compile={mode}"]
        cfg = load_config(TINY, args[1::2])
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            pretrain(cfg, progress=False, evaluate=False)
        histories[mode] = read_history(tmp_path / mode / "metrics.jsonl")
    eager = load_model(tmp_path / "off").model.state_dict()
    for mode in ("encoders", "step"):
        for before, after in zip(histories["off"], histories[mode], strict=True):
            assert after["loss"] == pytest.approx(before["loss"], rel=1e-3, abs=1e-4), mode
            assert after["mlm"] == pytest.approx(before["mlm"], rel=1e-3, abs=1e-4), mode
        # The compiled run's checkpoint rebuilds an eager model strictly (no "_orig_mod." key prefixes).
        assert load_model(tmp_path / mode).model.state_dict().keys() == eager.keys()

    # The encoders run kept its compiled artifacts; a rerun on an empty inductor cache (a new machine) loads
    # them, and --overwrite keeps the file (a cache, not an output of the run).
    cache = tmp_path / "encoders" / "compile-cache.bin"
    assert cache.stat().st_size > 0 and (tmp_path / "step" / "compile-cache.bin").stat().st_size > 0
    cmd = [sys.executable, "-m", "x2vlm_core.cli", "pretrain", "--config", str(TINY), "--overwrite", "--no-eval",
           "--quiet", *_overrides(tok, tmp_path / "encoders", steps=2), "--set", "train.compile=true"]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "fresh-inductor")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = re.search(r"compile cache: (\d+) artifacts from (\S+)", done.stderr)
    assert loaded is not None and int(loaded[1]) > 0 and loaded[2] == str(cache), done.stderr[-3000:]
    rerun = read_history(tmp_path / "encoders" / "metrics.jsonl")
    assert [h["loss"] for h in rerun] == pytest.approx([h["loss"] for h in histories["encoders"]], rel=1e-5)
