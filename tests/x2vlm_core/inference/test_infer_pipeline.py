"""The Python API on real (tiny) checkpoints: each method against an independent computation from the model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import qa_task
import torch
from infer_helpers import Scenes

from x2vlm_core.config import PluginSection
from x2vlm_core.contracts import VisualMemory
from x2vlm_core.data.shards import encode_video
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.evaluation.evalsets import encode_visuals
from x2vlm_core.evaluation.grounding import predict_boxes
from x2vlm_core.inference import InputError, MissingTaskError, Pipeline, Prediction
from x2vlm_core.model.factory import build_task

PHRASES = ["a red circle", "a large blue square at the top", "two shapes"]


def _reference_features(pipe: Pipeline, scenes: Scenes) -> torch.Tensor:
    """Image embeddings the evaluation way: resize the decoded samples, encode_visuals, the projection."""
    size = pipe.preprocess.image_size
    images = torch.stack([resize(s.image, size) for s in scenes.samples])
    with torch.no_grad():
        return pipe.model.heads.image_features(encode_visuals(pipe.model, images, False, 4))


def _p_match(pipe: Pipeline, image: torch.Tensor, text: str) -> float:
    """p(match) of one (uint8 image, text) pair, fused on its own."""
    model = pipe.model
    with torch.no_grad():
        tokens = model.encode_images(normalise(resize(image, pipe.preprocess.image_size), *_norm(pipe))[None])
        tok = model.tokenizer([text], model.max_text_len)
        text_enc = model.encode_text(tok.ids, tok.mask)
        cls = model.fuse(text_enc.tokens, tok.mask, VisualMemory.whole(tokens), torch.zeros(1, dtype=torch.long))[:, 0]
        return float(model.heads.itm(cls).softmax(-1)[0, 1])


def _norm(pipe: Pipeline) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    return pipe.preprocess.mean, pipe.preprocess.std


def test_preprocessing_comes_from_the_checkpoint(pipe: Pipeline) -> None:
    info = pipe.describe()
    assert info["image_size"] == 64 and info["max_text_len"] == 40 and info["frames"] == 3
    assert info["embed_dim"] == 32 and info["task"] is None and info["step"] == 4
    assert info["capabilities"]["ground"] and not info["capabilities"]["answer"]


def test_image_embeddings_match_the_evaluation_path_for_every_input_form(pipe: Pipeline, scenes: Scenes) -> None:
    reference = _reference_features(pipe, scenes)
    by_path = pipe.embed_images(scenes.paths, batch_size=5)
    assert by_path.shape == (12, 32) and by_path.dtype == torch.float32
    assert torch.allclose(by_path.norm(dim=-1), torch.ones(12), atol=1e-5)
    assert torch.allclose(by_path, reference, atol=1e-5)
    from PIL import Image

    forms = [str(scenes.paths[0]), scenes.paths[0].read_bytes(), Image.open(scenes.paths[0]),
             scenes.samples[0].image.permute(1, 2, 0).numpy(), scenes.samples[0].image]
    assert torch.allclose(pipe.embed_images(forms), reference[:1].expand(5, -1), atol=1e-5)
    assert torch.allclose(pipe.embed_images(scenes.paths[0]), reference[:1], atol=1e-5)  # one image, not a list


def test_batch_size_does_not_change_results(pipe: Pipeline, scenes: Scenes) -> None:
    one = pipe.embed_images(scenes.paths[:5], batch_size=1)
    assert torch.allclose(one, pipe.embed_images(scenes.paths[:5], batch_size=64), atol=1e-5)
    texts = scenes.captions[:7]
    assert torch.allclose(pipe.embed_texts(texts, batch_size=2), pipe.embed_texts(texts), atol=1e-5)


def test_text_embeddings_are_the_models_cls_projection(pipe: Pipeline) -> None:
    model = pipe.model
    tok = model.tokenizer(PHRASES, model.max_text_len)
    with torch.no_grad():
        reference = model.heads.text_features(model.text(tok.ids, tok.mask).tokens)
    assert torch.allclose(pipe.embed_texts(PHRASES), reference, atol=1e-5)


def test_score_and_rerank_pair_each_image_with_each_text(pipe: Pipeline, scenes: Scenes) -> None:
    images, texts = scenes.paths[:3], scenes.captions[:2]
    scores = pipe.score(images, texts, rerank=True)
    sim = pipe.embed_images(images) @ pipe.embed_texts(texts).T
    assert scores.similarity.shape == (3, 2) and torch.allclose(scores.similarity, sim, atol=1e-5)
    assert scores.match is not None
    for i in range(3):
        for j in range(2):
            assert scores.match[i, j] == pytest.approx(_p_match(pipe, scenes.samples[i].image, texts[j]), abs=1e-5)
    logits = sim.double() / pipe.temperature + scores.match.double().log()
    assert torch.allclose(scores.logits.double(), logits, atol=1e-4)
    assert pipe.score(images, texts).match is None


def test_retrieve_ranks_by_similarity_and_reranks_the_top_r(pipe: Pipeline, scenes: Scenes) -> None:
    corpus, queries = scenes.paths, scenes.captions[:3]
    scores = pipe.score(corpus, queries, rerank=True)
    [plain, *_] = pipe.retrieve(queries, corpus, k=5)
    expected = scores.similarity[:, 0].argsort(descending=True)[:5].tolist()
    assert [h.index for h in plain.hits] == expected and plain.query == queries[0]
    assert plain.hits[0].id == str(corpus[expected[0]]) and plain.hits[0].match is None
    assert plain.hits[0].score == pytest.approx(float(scores.similarity[expected[0], 0]) / pipe.temperature, rel=1e-5)

    results = pipe.retrieve(queries, corpus, k=6, rerank=4)
    for q, result in enumerate(results):
        top4 = scores.similarity[:, q].argsort(descending=True)[:4]
        combined = scores.logits[top4, q]
        reranked = top4[combined.argsort(descending=True)].tolist()
        assert [h.index for h in result.hits[:4]] == reranked  # the re-ranked four come first, in their order
        assert all(h.match is not None for h in result.hits[:4]) and all(h.match is None for h in result.hits[4:])
        rest = scores.similarity[:, q].argsort(descending=True)[4:6].tolist()
        assert [h.index for h in result.hits[4:]] == rest


def test_image_to_text_retrieval(pipe: Pipeline, scenes: Scenes) -> None:
    texts = scenes.captions[:6]
    [result] = pipe.retrieve([scenes.paths[2]], texts, k=3, direction="image-to-text")
    sim = pipe.score([scenes.paths[2]], texts).similarity[0]
    assert [h.id for h in result.hits] == [texts[j] for j in sim.argsort(descending=True)[:3].tolist()]
    with pytest.raises(InputError, match="direction: unknown"):
        pipe.retrieve(texts, scenes.paths, direction="sideways")


def test_ground_is_the_box_head_on_the_fused_cls(pipe: Pipeline, scenes: Scenes) -> None:
    image = scenes.samples[1].image
    with torch.no_grad():
        tokens = encode_visuals(pipe.model, resize(image, 64)[None], False, 4)
        reference = predict_boxes(pipe.model, tokens, torch.zeros(3, dtype=torch.long), PHRASES, 4)
    found = pipe.ground(scenes.paths[1], PHRASES)
    assert [g.text for g in found] == PHRASES
    for g, ref in zip(found, reference.tolist(), strict=False):
        assert (g.box.cx, g.box.cy, g.box.w, g.box.h) == pytest.approx(tuple(ref), abs=1e-5)
        assert g.score == pytest.approx(_p_match(pipe, image, g.text), abs=1e-5)
    single = pipe.ground(scenes.paths[1], PHRASES[0])
    assert single.box == found[0].box


def test_ground_reports_pixels_of_the_image_as_given(pipe: Pipeline) -> None:
    image = np.zeros((100, 300, 3), np.uint8)  # not square: the model sees it squashed to 64 × 64
    image[20:60, 200:280] = (230, 30, 30)
    g = pipe.ground(image, "a red square")
    x0, y0, x1, y1 = g.box.xyxy()
    assert (g.width, g.height) == (300, 100)
    assert g.pixels == pytest.approx((x0 * 300, y0 * 100, x1 * 300, y1 * 100))
    assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
    assert g.to_dict()["pixels"] == [round(v, 2) for v in g.pixels]


def test_classify_is_a_softmax_over_label_prompts(pipe: Pipeline, scenes: Scenes) -> None:
    labels = ["circle", "square", "star"]
    results = pipe.classify(scenes.paths[:4], labels, template="a {} shape")
    sim = pipe.score(scenes.paths[:4], [f"a {x} shape" for x in labels]).similarity
    probs = (sim / pipe.temperature).softmax(-1)
    for c, row in zip(results, probs, strict=False):
        assert sum(c.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert c.label == labels[int(row.argmax())] and c.score == pytest.approx(float(row.max()), abs=1e-5)
    with pytest.raises(InputError, match="template: must contain exactly one"):
        pipe.classify(scenes.paths[:1], labels, template="a photo")
    with pytest.raises(InputError, match="labels repeat"):
        pipe.classify(scenes.paths[:1], ["a", "a"])


def test_videos_from_files_and_arrays(pipe: Pipeline, tmp_path: Path) -> None:
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 3, 64, 64), dtype=np.uint8))
    with torch.no_grad():
        clip = resize(frames[torch.tensor([1, 3, 5])], 64)[None]  # 3 of 6 frames at segment middles
        reference = pipe.model.heads.image_features(encode_visuals(pipe.model, clip, True, 2))
    assert torch.allclose(pipe.embed_videos([frames]), reference, atol=1e-5)
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_video(frames, fps=3))
    from_file = pipe.embed_videos(path)
    assert from_file.shape == (1, 32) and float(from_file @ reference.T) > 0.9  # H.264 is lossy


def test_bfloat16_gives_close_embeddings(tiny_run: Path, scenes: Scenes, pipe: Pipeline) -> None:
    from x2vlm_core.inference import load

    half = load(tiny_run, device="cpu", dtype="bf16")
    assert half.dtype == torch.bfloat16 and next(half.model.parameters()).dtype == torch.bfloat16
    a, b = half.embed_images(scenes.paths[:4]), pipe.embed_images(scenes.paths[:4])
    assert a.dtype == torch.float32 and (a * b).sum(-1).min() > 0.98
    assert (half.embed_texts(PHRASES) * pipe.embed_texts(PHRASES)).sum(-1).min() > 0.98
    with pytest.raises(ValueError, match="unknown dtype"):
        load(tiny_run, device="cpu", dtype="int8")


def test_progress_bar_for_large_inputs(pipe: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    pipe.embed_texts(["a red circle"] * 3, batch_size=1, progress=True)
    assert "texts 3/3" in capsys.readouterr().err
    pipe.embed_texts(["a red circle"] * 3)  # small inputs: quiet by default
    assert capsys.readouterr().err == ""


def test_bad_inputs_are_clear_errors(pipe: Pipeline, huge_png: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    with pytest.raises(InputError, match=r"images\[1\]: a corrupt or truncated JPEG"):
        pipe.embed_images([np.zeros((8, 8, 3), np.uint8), corrupt])
    with pytest.raises(InputError, match=r"image: the image is far too large") as caught:
        pipe.ground(huge_png, "a red circle")
    assert caught.value.status == 413
    with pytest.raises(InputError, match=r"texts\[1\]: empty text"):
        pipe.embed_texts(["a red circle", ""])
    with pytest.raises(InputError, match=r"text\[0\]: empty text"):
        pipe.ground(np.zeros((8, 8, 3), np.uint8), " ")


def test_task_methods_name_the_task_to_fine_tune(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    cases = [(lambda: pipe.answer(image, "what colour?"), "answer questions", "--task vqa"),
             (lambda: pipe.answer([np.zeros((3, 8, 8, 3), np.uint8)], ["what moves?"], video=True),
              "answer questions", "--task video_qa"),
             (lambda: pipe.verify(image, image, "two circles"), "verify statements", "--task nlvr2"),
             (lambda: pipe.caption(image), "write captions", "--task captioning")]
    for call, what, flag in cases:
        with pytest.raises(MissingTaskError, match=f"is not fine-tuned for a task, so it cannot {what}") as caught:
            call()
        assert f"x2vlm finetune {flag} --checkpoint {pipe.path}" in str(caught.value)
    grounding = build_task(PluginSection.model_validate({"plugin": "grounding"}), pipe.model)
    monkeypatch.setattr(pipe.model, "task", grounding)
    with pytest.raises(MissingTaskError, match="was fine-tuned for grounding, so it cannot answer questions"):
        pipe.answer(image, "what colour?")


def test_answer_verify_caption_delegate_to_the_checkpoints_task(qa_pipe: Pipeline, scenes: Scenes) -> None:
    assert qa_pipe.task == "test_qa"
    assert {k for k, v in qa_pipe.capabilities().items() if v} >= {"answer", "verify", "caption"}
    task = qa_pipe.model.task
    questions = ["what colour is the shape?", "how many shapes are there?"]
    visuals = normalise(torch.stack([resize(s.image, 64) for s in scenes.samples[:2]]), *_norm(qa_pipe))
    with torch.no_grad():
        direct = task.answer(qa_pipe.model, visuals, questions)
        verdicts = task.verify(qa_pipe.model, visuals[:1], visuals[1:], ["a red circle"])
        captions = task.caption(qa_pipe.model, visuals)
    answers = qa_pipe.answer(scenes.paths[:2], questions)
    assert all(isinstance(a, Prediction) for a in answers)
    assert [a.text for a in answers] == [d.text for d in direct] and all(a.text in qa_task.ANSWERS for a in answers)
    assert [a.score for a in answers] == pytest.approx([d.score for d in direct], abs=1e-5)
    one = qa_pipe.answer(scenes.paths[0], questions[0])
    assert isinstance(one, Prediction) and one.text == answers[0].text
    verdict = qa_pipe.verify(scenes.paths[0], scenes.paths[1], "a red circle")
    assert verdict.text in ("true", "false") and verdict.score == pytest.approx(verdicts[0].score, abs=1e-5)
    assert (verdict.text == "true") == (verdict.score >= 0.5)
    assert [c.text for c in qa_pipe.caption(scenes.paths[:2])] == [c.text for c in captions]
    assert math.isfinite(qa_pipe.caption(scenes.paths[0]).score)
    with pytest.raises(InputError, match="1 given for 2 images"):
        qa_pipe.answer(scenes.paths[:2], questions[:1])
