"""Referring-expression grounding (RefCOCO+): the pretrained box head on the fused [CLS], L1 + GIoU.

X²-VLM grounds with its pretraining box head: the expression fused with the whole image → [CLS] → MLP →
sigmoid (cx, cy, w, h). Fine-tuning trains the box loss on the expressions; the metric is the share of
predictions with IoU ≥ 0.5, per split (val, testA, testB as separate eval sources). No new parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from plugins.loss.bbox import BboxLoss, BboxLossConfig
from x2vlm_core.plugin_api import (
    Batch,
    BatchBuilder,
    ConceptKind,
    LossOutput,
    PluginSpec,
    Preprocess,
    Record,
    Sample,
    TaskModule,
    VLModel,
    encode_visuals,
    eval_set,
    evaluate_grounding,
    hookimpl,
    run_losses,
)

__all__ = ["GroundingConfig", "GroundingTask"]

_KINDS = {"region": ConceptKind.REGION, "object": ConceptKind.OBJECT}


class GroundingConfig(BaseModel):
    """Which boxed texts are the expressions to ground."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    concepts: tuple[Literal["region", "object"], ...] = Field(
        ("region",), description="concept kinds that are expressions (RefCOCO: region; object labels: object)"
    )
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="IoU at which a predicted box counts as right")


class GroundingTask(TaskModule):
    """Grounding referring expressions: box L1 + GIoU fine-tuning; accuracy at IoU ≥ 0.5 and mean IoU."""

    name = "grounding"
    record_types = (Sample,)
    metric = "accuracy"

    def __init__(self, config: GroundingConfig, model: VLModel) -> None:
        super().__init__()
        self.config = config
        self.kinds = tuple(_KINDS[k] for k in config.concepts)
        self._losses = {"bbox": (BboxLoss(BboxLossConfig()), 1.0)}  # stateless: kept out of the module tree

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[Batch]:
        builder = BatchBuilder(
            tokenizer=prep.tokenizer, image_size=prep.image_size, mean=prep.mean, std=prep.std,
            max_text_len=prep.max_text_len, image_pairs=0, box_pairs=batch_size, video_pairs=0, frames=1,
        )
        while True:
            chunk: list[Sample] = []
            boxes = 0
            while boxes < batch_size:
                record = next(records)
                if not isinstance(record, Sample) or record.image is None:
                    continue
                kept = tuple(c for c in record.concepts if c.kind in self.kinds)
                if kept:
                    chunk.append(replace(record, captions=(), concepts=kept))  # box pairs only
                    boxes += len(kept)
            yield builder(chunk, generator)

    def loss(self, model: VLModel, batch: Batch) -> LossOutput:  # type: ignore[override]
        out = run_losses(model, self._losses, batch)  # type: ignore[arg-type]
        return LossOutput(loss=out.loss, logs={k.removeprefix("bbox/"): v for k, v in out.logs.items()
                                              if k.startswith("bbox/")})

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        data = eval_set(records, self.name, model.preprocess(), kinds=self.kinds)
        if not data.concept_texts:
            raise ValueError(f"grounding: the evaluation records hold no {'/'.join(self.config.concepts)} concepts "
                             "(boxed expressions) to ground; check the source or set the task's `concepts`")
        tokens = encode_visuals(model, data.visuals, data.video, batch_size)
        scores, _ = evaluate_grounding(model, tokens, data.concept_index, data.concept_texts, data.concept_boxes,
                                       batch_size)
        return {"accuracy": scores.accuracy, "mean_iou": scores.mean_iou, "n": float(len(data.concept_texts))}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="grounding", config=GroundingConfig, factory=GroundingTask)]
