"""Video question answering (MSRVTT-QA, MSVD-QA): a classifier over the candidate answers on the fused [CLS].

X²-VLM's recipe (docs/recipes.md): the question fused with the clip (F frames through the video plugin:
5 for MSRVTT-QA, 8 for MSVD-QA) → fused [CLS] → MLP → one logit per candidate answer. Trained with the
human answers' shares as the target distribution; a question whose answer is not a candidate is skipped
(and counted). Metric: accuracy (the prediction's normalised form equals the most frequent normalised
human answer), overall and per question type. `head: decoder` runs VQA's answer decoder on clips instead.
Candidates: see plugins/task/_answers.py. Shapes: B questions, F frames, C candidates, D fusion width.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from plugins.task._answers import qa_records
from plugins.task.vqa import VqaConfig, VqaTask
from x2vlm_core.plugin_api import PluginSpec, QASample, Record, VLModel, hookimpl, normalize_answer

__all__ = ["VideoQaConfig", "VideoQaTask", "exact_accuracy"]


class VideoQaConfig(VqaConfig):
    """The video QA recipe: frames per clip and the classifier over the candidates."""

    head: Literal["decoder", "classifier"] = Field(
        "classifier", description="classifier: an MLP on the fused [CLS] over the candidates (the recipe); decoder: "
        "VQA's answer decoder ranking them",
    )
    answer_list_size: int = Field(1500, gt=0, description="candidates kept from answers_from (most frequent first)")
    frames: int = Field(5, gt=0, description="frames sampled per clip, uniformly (MSRVTT-QA 5, MSVD-QA 8)")


def exact_accuracy(predictions: Sequence[str], records: Sequence[QASample]) -> dict[str, float]:
    """Share of predictions whose normalised form is the record's most frequent normalised answer: overall
    (`accuracy`) and per question type (`accuracy/<type>`)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for prediction, record in zip(predictions, records, strict=True):
        truth = Counter(normalize_answer(a) for a in record.answers).most_common(1)[0][0]
        hits[record.question_type].append(normalize_answer(prediction) == truth)
    every = [h for group in hits.values() for h in group]
    out = {"accuracy": sum(every) / len(every)}
    out.update({f"accuracy/{t}": sum(h) / len(h) for t, h in sorted(hits.items()) if t})  # typed records only
    return out


class VideoQaTask(VqaTask):
    """Video QA: a classifier over candidate answers on the fused [CLS] of question and clip; accuracy."""

    name = "video_qa"
    metric = "accuracy"
    video = True

    def __init__(self, config: VideoQaConfig, model: VLModel) -> None:
        model.check_frames(config.frames, f"task {self.name!r} (field frames)")
        super().__init__(config, model)
        self.frames = config.frames

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        qa = qa_records(records, self.name, self.video)
        predictions = self.predict_texts(model, qa, batch_size)
        outside = sum(not self.answers.shares(r.answers) for r in qa)
        return {**exact_accuracy([p.text for p in predictions], qa), "n": float(len(qa)),
                "outside_list": outside / len(qa), "candidates": float(len(self.answers)),
                **self.free_form_stats(predictions)}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="video_qa", config=VideoQaConfig, factory=VideoQaTask)]
