"""A small real task for the tests, implementing every prediction protocol (answer, verify, caption).

Heads: a classifier over a fixed answer list on the fused [CLS] of (image, question) — trained by the
cross-entropy of the synthetic world's VQA records — and a verdict head on the two fused [CLS]s of an image
pair (untrained). Captions pick the candidate caption closest to the image (contrastive similarity).
The pipeline must reach all three through `model.task` exactly as it would a real VQA/NLVR2/captioning task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from x2vlm_core.plugin_api import (
    LossOutput,
    PluginSpec,
    Prediction,
    Preprocess,
    QASample,
    Record,
    TaskModule,
    VisualMemory,
    VLModel,
    hookimpl,
    normalise,
    resize,
)

ANSWERS = ("red", "blue", "green", "yellow", "orange", "purple", "circle", "square", "triangle", "star",
           "cross", "yes", "no", "0", "1", "2", "3", "left", "right", "top", "bottom", "small", "large")
CAPTIONS = ("a red circle", "a blue square", "a green triangle", "two shapes", "three shapes")


class QATaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    answers: tuple[str, ...] = ANSWERS


@dataclass
class QABatch:
    images: Tensor
    ids: Tensor
    mask: Tensor
    labels: Tensor

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QABatch:
        return QABatch(*(t.to(device, non_blocking=non_blocking) for t in (self.images, self.ids, self.mask,
                                                                          self.labels)))


def _cls(model: VLModel, visuals: Tensor, texts: Sequence[str], video: bool = False) -> Tensor:
    tok = model.tokenizer(list(texts), model.max_text_len)
    ids, mask = tok.ids.to(model.device), tok.mask.to(model.device)
    tokens = model.encode_videos(visuals) if video else model.encode_images(visuals)
    text = model.encode_text(ids, mask)
    rows = torch.arange(len(texts), device=model.device)
    return model.fuse(text.tokens, mask, VisualMemory.whole(tokens), rows, positions=rows[:, None] * 0)[:, 0]


class QATask(TaskModule):
    name = "test_qa"
    record_types = (QASample,)
    metric = "accuracy"

    def __init__(self, config: QATaskConfig, model: VLModel) -> None:
        super().__init__()
        self.answers = config.answers
        width = model.heads.sizes.fusion_width
        self.classifier = nn.Linear(width, len(config.answers))
        self.verdict = nn.Linear(2 * width, 2)

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[QABatch]:
        index = {a: i for i, a in enumerate(self.answers)}
        while True:
            chunk = []
            while len(chunk) < batch_size:
                record = next(records)
                if isinstance(record, QASample) and record.image is not None:
                    chunk.append(record)
            images = torch.stack([normalise(resize(r.image, prep.image_size), prep.mean, prep.std)
                                  for r in chunk if r.image is not None])
            tok = prep.tokenizer([r.question for r in chunk], prep.max_text_len)
            labels = torch.tensor([index.get(r.answers[0], -100) for r in chunk])
            yield QABatch(images, tok.ids, tok.mask, labels)

    def loss(self, model: VLModel, batch: QABatch) -> LossOutput:  # type: ignore[override]
        tokens = model.encode_images(batch.images)
        text = model.encode_text(batch.ids, batch.mask)
        rows = torch.arange(batch.size, device=batch.images.device)
        cls = model.fuse(text.tokens, batch.mask, VisualMemory.whole(tokens), rows, positions=rows[:, None] * 0)[:, 0]
        loss = F.cross_entropy(self.classifier(cls).float(), batch.labels, ignore_index=-100)
        return LossOutput(loss=loss, logs={})

    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        return {"accuracy": 0.0, "n": float(len(records))}

    # ------------------------------------------------------------------ the prediction protocols
    def answer(self, model: VLModel, visuals: Tensor, questions: Sequence[str], video: bool = False) -> list[Prediction]:
        probs = self.classifier(_cls(model, visuals, questions, video)).float().softmax(-1)
        best = probs.argmax(-1)
        return [Prediction(self.answers[int(i)], float(probs[j, i])) for j, i in enumerate(best)]

    def verify(self, model: VLModel, left: Tensor, right: Tensor, statements: Sequence[str]) -> list[Prediction]:
        both = torch.cat([_cls(model, left, statements), _cls(model, right, statements)], dim=-1)
        p_true = self.verdict(both).float().softmax(-1)[:, 1]
        return [Prediction("true" if float(p) >= 0.5 else "false", float(p)) for p in p_true]

    def caption(self, model: VLModel, visuals: Tensor, video: bool = False) -> list[Prediction]:
        tokens = model.encode_videos(visuals) if video else model.encode_images(visuals)
        tok = model.tokenizer(list(CAPTIONS), model.max_text_len)
        text = model.encode_text(tok.ids.to(model.device), tok.mask.to(model.device)).features
        sim = model.heads.image_features(tokens) @ text.float().T
        best = sim.argmax(-1)
        return [Prediction(CAPTIONS[int(i)], float(sim[j, i])) for j, i in enumerate(best)]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="test_qa", config=QATaskConfig, factory=QATask)]
