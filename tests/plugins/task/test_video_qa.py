"""video_qa task: frames checked against the video plugin, clips sub-sampled to `frames`, the classifier over
candidates, exact-match accuracy per question type, fine-tuning far above a question prior, reloading."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import pytest
import torch

from plugins.task.video_qa import VideoQaTask, exact_accuracy
from registry import ConfigError
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import PluginSection
from x2vlm_core.contracts import AnswersQuestions, QASample
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_task


def _clip(key: str, answers: Sequence[str], frames: int = 6, qtype: str = "what") -> QASample:
    # frame i is filled with level 10 * i, so the sub-sampled frames can be told apart
    clip = torch.stack([torch.full((3, 32, 32), 10 * i, dtype=torch.uint8) for i in range(frames)])
    return QASample(key, "test", None, clip, "what is moving?", tuple(answers), qtype)


def _task(model: X2VLM, **fields: object) -> VideoQaTask:
    task = build_task(PluginSection.model_validate({"plugin": "video_qa", **fields}), model)
    assert isinstance(task, VideoQaTask)
    return task


def test_frames_are_checked_and_clips_sub_sampled(tiny_model: X2VLM, answer_file: Callable[[list[str]], str]) -> None:
    path = answer_file(["man", "dog"])
    with pytest.raises(ConfigError, match=r"task 'video_qa' \(field frames\): 5 frames per clip.*at most 4"):
        _task(tiny_model, answer_list=path)  # the recipe's 5 frames; the tiny video plugin takes 4
    task = _task(tiny_model, answer_list=path, frames=3)
    assert task.frames == 3 and task.classifier is not None and task.decoder is None
    batch = next(task.batches(iter([_clip("a", ("dog",)), _clip("b", ("cat",)), _clip("c", ("man",))]),
                              tiny_model.preprocess(3), 2, torch.Generator()))
    assert batch.visuals.shape == (2, 3, 3, 64, 64) and float(batch.outside) == 1.0  # "cat" is not a candidate
    assert batch.target.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    prep = tiny_model.preprocess()
    levels = (batch.visuals[0, :, 0, 0, 0] * prep.std[0] + prep.mean[0]) * 255
    assert levels.round().tolist() == [10.0, 30.0, 50.0]  # frames 1, 3, 5 of 6: segment middles
    with pytest.raises(ValueError, match="holds an image; this task reads clips"):
        image = QASample("i", "test", torch.zeros(3, 8, 8, dtype=torch.uint8), None, "q", ("dog",))
        next(task.batches(iter([image]), prep, 1, torch.Generator()))


def test_exact_accuracy_per_type() -> None:
    records = [_clip("a", ("Dog",)), _clip("b", ("man", "man", "boy"), qtype="who"), _clip("c", ("sing",), qtype="")]
    scores = exact_accuracy(["dog.", "boy", "sing"], records)
    assert scores == {"accuracy": pytest.approx(2 / 3), "accuracy/what": 1.0, "accuracy/who": 0.0}


def test_evaluate_and_answer_with_a_known_classifier(tiny_model: X2VLM, answer_file: Callable[[list[str]], str]) -> None:
    task = _task(tiny_model, answer_list=answer_file(["man", "dog"]), frames=3)
    assert task.classifier is not None
    task.classifier.forward = lambda cls: torch.tensor([[0.0, 1.0]]).expand(cls.shape[0], 2)  # type: ignore[method-assign]
    records = [_clip("a", ("dog",)), _clip("b", ("man",), qtype="who"), _clip("c", ("cat",))]
    metrics = task.evaluate(tiny_model, records, 2)
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["accuracy/who"] == 0.0
    assert metrics["outside_list"] == pytest.approx(1 / 3) and metrics["n"] == 3 and metrics["candidates"] == 2
    clips = torch.randn(2, 3, 3, 64, 64)
    assert [p.text for p in task.answer(tiny_model, clips, ["q1", "q2"], video=True)] == ["dog", "dog"]
    assert isinstance(task, AnswersQuestions)
    with pytest.raises(ValueError, match="video=False"):
        task.answer(tiny_model, clips, ["q1", "q2"])


def _type_prior(records: Sequence[QASample]) -> float:
    """Accuracy of the most frequent answer per question type, chosen on the evaluated records themselves."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        by_type[r.question_type][r.answers[0]] += 1
    return sum(c.most_common(1)[0][1] for c in by_type.values()) / len(records)


@pytest.mark.slow
def test_finetuning_learns_the_answer_prior_and_reloads(finetune_tiny: Callable[..., object]) -> None:
    source = {"kind": "video_qa", "frames": 3}
    task = {"plugin": "video_qa", "frames": 3, "answers_scan": 2000, "answers_from": {"plugin": "synthetic", **source}}
    result = finetune_tiny(task, source, steps=150, out="video_qa")
    from plugins.data.synthetic import Synthetic, SyntheticConfig

    test = list(Synthetic(SyntheticConfig(kind="video_qa", frames=3, split="test", samples=200)))
    accuracy = result.evaluation["video_qa/accuracy"]  # type: ignore[attr-defined]
    prior = _type_prior(test)
    chance = 1 / result.evaluation["video_qa/candidates"]  # type: ignore[attr-defined]
    # a tiny model learns each question type's answer prior (far above a random candidate), not more:
    # see test_vqa.py and docs/tasks.md
    assert accuracy > max(2 * chance, prior - 0.1), (accuracy, prior, chance)
    loaded = load_model(result.run_dir).model  # type: ignore[attr-defined]
    assert isinstance(loaded.task, VideoQaTask) and loaded.task.frames == 3
    assert loaded.task.evaluate(loaded, test, 64)["accuracy"] == pytest.approx(accuracy, abs=1e-6)
