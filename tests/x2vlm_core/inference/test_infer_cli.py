"""`x2vlm predict ...` and `x2vlm serve` arguments: results as text and --json, the grounding PNG, exit 2 with one
paragraph for a user's mistake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from infer_helpers import Scenes
from PIL import Image

import x2vlm_core.discovery
from registry import PluginRegistry
from x2vlm_core.cli import main
from x2vlm_core.inference import Pipeline


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_embed_writes_the_vectors(tiny_run: Path, pipe: Pipeline, scenes: Scenes, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.npy"
    images = [str(p) for p in scenes.paths[:3]]
    assert main(["predict", "embed", "--checkpoint", str(tiny_run), "--images", *images, "--out", str(out)]) == 0
    assert "3 images → [3, 32] float32, written to" in capsys.readouterr().out
    assert np.allclose(np.load(out), pipe.embed_images(scenes.paths[:3]).numpy(), atol=1e-5)
    assert main(["predict", "embed", "--checkpoint", str(tiny_run), "--texts", "a red circle", "--json"]) == 0
    data = _json(capsys)
    assert isinstance(data, dict) and data["kind"] == "texts"
    assert torch.allclose(torch.tensor(data["embeddings"]), pipe.embed_texts(["a red circle"]), atol=1e-5)


def test_ground_draws_the_box_into_a_png(tiny_run: Path, pipe: Pipeline, scenes: Scenes, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "g.png"
    phrase = scenes.objects[0][0]
    assert main(["predict", "ground", "--checkpoint", str(tiny_run), "--image", str(scenes.paths[0]), "--text",
                 phrase, "--out", str(png), "--json"]) == 0
    [result] = _json(capsys)  # type: ignore[misc]
    expected = pipe.ground(scenes.paths[0], phrase)
    assert result["box"]["xyxy"] == pytest.approx(list(expected.box.xyxy()), abs=1e-5) and result["png"] == str(png)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[1] == 512  # the longer side, enlarged to be legible
    x0, y0, x1, _ = (round(v) for v in expected.box.pixels(512, 512))
    edge = pixels[min(max(y0 + 1, 0), 511), max(x0, 0) : min(x1, 511)]
    red = (edge[:, 0] > 180) & (edge[:, 1] < 80) & (edge[:, 2] < 80)
    assert red.mean() > 0.8  # the top edge of the box is drawn in red
    assert main(["predict", "ground", "--checkpoint", str(tiny_run), "--image", str(scenes.paths[0]), "--text",
                 phrase, "--out", str(png)]) == 0
    assert f"{phrase!r}: box (" in capsys.readouterr().out


def test_score_and_classify(tiny_run: Path, pipe: Pipeline, scenes: Scenes, capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(p) for p in scenes.paths[:2]]
    assert main(["predict", "score", "--checkpoint", str(tiny_run), "--images", *images, "--texts", "a", "b c",
                 "--rerank", "--json"]) == 0
    data = _json(capsys)
    assert isinstance(data, dict)
    assert torch.allclose(torch.tensor(data["similarity"]), pipe.score(images, ["a", "b c"]).similarity, atol=1e-5)
    assert len(data["match"]) == 2
    assert main(["predict", "classify", "--checkpoint", str(tiny_run), "--images", *images, "--labels", "circle",
                 "star"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == [c.label for c in pipe.classify(images, ["circle",
                                                                                                    "star"])]


def test_task_actions(qa_run: Path, tiny_run: Path, qa_pipe: Pipeline, scenes: Scenes, registry: PluginRegistry,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(scenes.paths[0])
    assert main(["predict", "answer", "--checkpoint", str(tiny_run), "--image", image, "--question", "what?"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("x2vlm: error: checkpoint") and "x2vlm finetune --task vqa" in err.replace("\n", " ")
    monkeypatch.setattr(x2vlm_core.discovery, "default_registry", lambda: registry)  # it knows the test task
    assert main(["predict", "answer", "--checkpoint", str(qa_run), "--image", image, "--question", "what?",
                 "--json"]) == 0
    assert _json(capsys) == pytest.approx({"text": qa_pipe.answer(image, "what?").text,
                                           "score": qa_pipe.answer(image, "what?").score})
    assert main(["predict", "verify", "--checkpoint", str(qa_run), "--left", image, "--right",
                 str(scenes.paths[1]), "--statement", "a circle"]) == 0
    assert capsys.readouterr().out.startswith("verdict: ")
    assert main(["predict", "caption", "--checkpoint", str(qa_run), "--image", image]) == 0
    assert capsys.readouterr().out.startswith(f"caption: {qa_pipe.caption(image).text} (")


def test_user_errors_exit_2_with_one_paragraph(tiny_run: Path, tmp_path: Path, huge_png: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    cases = [
        (["predict", "embed", "--checkpoint", str(tiny_run), "--images", str(text_file)], "images[0]: not an image"),
        (["predict", "ground", "--checkpoint", str(tiny_run), "--image", str(huge_png), "--text", "x"], "too large"),
        (["predict", "embed", "--checkpoint", str(tiny_run), "--texts", ""], "texts[0]: empty text"),
        (["predict", "embed", "--checkpoint", str(tmp_path / "nope"), "--texts", "a"], "does not exist"),
        (["predict", "embed", "--checkpoint", str(tiny_run), "--texts", "a", "--dtype", "int3"], "unknown dtype"),
        (["serve", "--checkpoint", str(tiny_run), "--port", "0"], "--port in 1..65535"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("x2vlm: error:") and needle in err.replace("\n", " "), err
        assert "Traceback" not in err
