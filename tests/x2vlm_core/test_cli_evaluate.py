"""`x2vlm evaluate`: a checkpoint rebuilt from its directory, evaluated per task; table on stdout, JSON written."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from x2vlm_core.checkpoint import save_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.cli import main
from x2vlm_core.config import RunConfig, load_config
from x2vlm_core.contracts import ConceptKind
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.runner import evaluate_run
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.pretrain import prepare_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
IMAGES = "{plugin: synthetic, split: test, kind: image, seed: 0}"
VIDEOS = "{plugin: synthetic, split: test, kind: video, seed: 1, frames: 3}"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny.yaml's model (randomly initialised) saved as `<run>/checkpoints/step-00000001`."""
    cwd = tmp_path_factory.mktemp("eval-run")
    old = Path.cwd()
    os.chdir(cwd)
    try:
        cfg = load_config(CONFIGS / "tiny.yaml", ["train.tokenizer.texts=300"])
        prepare_tokenizer(cfg, default_registry())
        torch.manual_seed(0)
        model = build_model(cfg.model)
        save_checkpoint(cfg.train.out_dir, model, 1, cfg, None, keep_last=1, lineage=[], new_parameters=[])
        shutil.rmtree(Path(cfg.model.text.fields()["tokenizer"]))  # the checkpoint must not need it
    finally:
        os.chdir(old)
    return cwd / "runs" / "tiny"


def _recalls(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """recall@1/5/10 both ways and their mean (7 values)."""
    return {k: v for k, v in metrics.items() if re.fullmatch(re.escape(prefix) + r"(i2t_r\d+|t2i_r\d+|mean_recall)", k)}


def test_retrieval_defaults_to_the_run_configs_image_sources(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "retrieval.json"
    code = main(["evaluate", "--checkpoint", str(run_dir), "--task", "retrieval", "--samples", "8",
                 "--set", "task.rerank_k=3", "--set", "task.match_weight=3", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "retrieval/i2t_r1" in printed and "retrieval/mean_recall" in printed and f"wrote {out}" in printed
    assert "evaluating " + str(run_dir / "checkpoints" / "step-00000001") + " (step 1)" in printed  # which one
    report = json.loads(out.read_text())
    assert report["task"]["plugin"] == "retrieval" and report["step"] == 1 and report["task"]["rerank_k"] == 3
    assert report["task"]["match_weight"] == 3
    assert report["checkpoint"] == str(run_dir / "checkpoints" / "step-00000001")
    [source] = report["sources"]  # the run config's video source is not for this task
    assert source["kind"] == "image"
    metrics = report["metrics"]
    recalls = _recalls(metrics, "retrieval/")
    assert len(recalls) == 7 and all(0.0 <= v <= 1.0 for v in recalls.values())
    # 8 candidates: every query has its match in the top 10; chance R@1 is 1/8.
    assert metrics["retrieval/i2t_r10"] == metrics["retrieval/t2i_r10"] == 1.0
    assert metrics["retrieval/n"] == 8 and metrics["retrieval/chance_r1"] == 0.125
    assert metrics["retrieval/i2t_r1"] <= metrics["retrieval/i2t_r5"] <= metrics["retrieval/i2t_r10"]

    # The same numbers as the end-of-training evaluation on the same model and sources.
    loaded = load_model(run_dir)
    e = loaded.manifest.config["eval"]
    images = [s for s in e["data"] if s["kind"] == "image"]
    data = loaded.manifest.config | {"eval": e | {"data": images, "samples": 8, "rerank_k": 3, "match_weight": 3,
                                                             "batch_size": 4}}
    reference = evaluate_run(loaded.model, RunConfig.model_validate(data), default_registry(), None, False)
    assert _recalls(reference, "retrieval/") == recalls


def test_grounding_and_video_retrieval_with_explicit_data(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grounding.json"
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "step-00000001"), "--task", "grounding",
                 "--set", "task.concepts=[object]", "--data", IMAGES, "--samples", "6", "--out", str(out)]) == 0
    assert "grounding/accuracy" in capsys.readouterr().out
    metrics = json.loads(out.read_text())["metrics"]
    assert 0.0 <= metrics["grounding/accuracy"] <= 1.0 and 0.0 <= metrics["grounding/mean_iou"] <= 1.0
    records = itertools.islice(default_registry().build("data", {"plugin": "synthetic", "split": "test"}, "t"), 6)
    objects = sum(c.kind == ConceptKind.OBJECT for r in records for c in r.concepts)
    assert metrics["grounding/n"] == objects > 0

    out = tmp_path / "video.json"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--task", "video_retrieval", "--data", VIDEOS,
                 "--samples", "4", "--set", "task.rerank_k=0", "--set", "task.frames=3", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    recalls = _recalls(metrics, "video_retrieval/")
    assert len(recalls) == 7 and all(0.0 <= v <= 1.0 for v in recalls.values())
    assert metrics["video_retrieval/i2t_r5"] == 1.0  # 4 candidates, all in the top 5


def test_default_output_goes_to_the_run_directory(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(run_dir), "--task", "retrieval", "--samples", "4",
                 "--set", "task.rerank_k=0"]) == 0
    written = run_dir / "eval-retrieval-step-00000001.json"
    assert f"wrote {written}" in capsys.readouterr().out
    assert json.loads(written.read_text())["metrics"]["retrieval/n"] == 4


def test_a_pretraining_checkpoint_re_ranks_as_its_run_did(run_dir: Path, tmp_path: Path) -> None:
    """retrieval and video_retrieval take the run's eval.rerank_k and eval.match_weight; --set still wins;
    grounding has no such fields and gets none."""
    recorded = load_model(run_dir).manifest.config["eval"]
    assert (recorded["rerank_k"], recorded["match_weight"]) == (16, 4.0)  # configs/demo.yaml's, via tiny.yaml
    for task, extra, want in [("retrieval", [], (16, 4.0)), ("video_retrieval", ["--data", VIDEOS, "--set", "task.frames=3"], (16, 4.0)),
                              ("retrieval", ["--set", "task.match_weight=2"], (16, 2.0))]:
        out = tmp_path / f"{task}.json"
        assert main(["evaluate", "--checkpoint", str(run_dir), "--task", task, "--samples", "4", *extra,
                     "--out", str(out)]) == 0
        config = json.loads(out.read_text())["task"]
        assert (config["rerank_k"], config["match_weight"]) == want, (task, extra)
    out = tmp_path / "grounding.json"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--task", "grounding", "--samples", "4",
                 "--out", str(out)]) == 0
    assert "match_weight" not in json.loads(out.read_text())["task"]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())  # the CLI wraps long messages


def test_user_errors_exit_2_with_a_message(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--checkpoint", str(run_dir), "--samples", "4", "--out", str(tmp_path / "x.json")]
    assert main([*base, "--task", "retrieval", "--data", VIDEOS]) == 2
    assert "it yields clips; task retrieval evaluates images (use video_retrieval)" in _err(capsys)
    assert main([*base]) == 2
    assert "not fine-tuned for a task: name one with --task" in _err(capsys)
    assert main([*base, "--task", "retrieval", "--device", "banana"]) == 2
    assert "--device banana" in _err(capsys)
    assert main([*base, "--task", "retrieval", "--data", "[1, 2]"]) == 2
    assert "must be a mapping with a `plugin` key" in _err(capsys)
    assert main([*base, "--task", "retrieval", "--samples", "0"]) == 2
    assert "--samples must be at least 1" in _err(capsys)

    broken = tmp_path / "step-00000001"
    shutil.copytree(run_dir / "checkpoints" / "step-00000001", broken)
    file = broken / "assets" / "text" / "tokenizer.json"
    data = bytearray(file.read_bytes())
    data[10] ^= 1
    file.write_bytes(bytes(data))
    assert main(["evaluate", "--checkpoint", str(broken), "--task", "retrieval"]) == 2
    err = _err(capsys)
    assert "tokenizer.json" in err and "corrupt" in err
    assert not (tmp_path / "x.json").exists()
