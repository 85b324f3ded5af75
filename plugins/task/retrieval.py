"""Image-text and video-text retrieval: fine-tuned with the contrastive + matching losses, evaluated by recall.

X²-VLM's recipe (docs/recipes.md): contrastive + matching; at test time the contrastive similarity ranks
everything, then the matching head re-ranks each query's top-k (k = 80 COCO, 32 Flickr30K and MSRVTT).
No new parameters: the heads are the pretrained ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from plugins.loss.contrastive import ContrastiveLoss, ContrastiveLossConfig
from plugins.loss.matching import MatchingLoss, MatchingLossConfig
from x2vlm_core.plugin_api import (
    Batch,
    BatchBuilder,
    LossOutput,
    PluginSpec,
    Preprocess,
    Record,
    Sample,
    TaskModule,
    VLModel,
    encode_visuals,
    eval_set,
    evaluate_retrieval,
    hookimpl,
    run_losses,
)

__all__ = ["RetrievalConfig", "RetrievalTask"]


class RetrievalConfig(BaseModel):
    """The retrieval recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rerank_k: int = Field(16, ge=0, description="the matching head re-ranks each query's contrastive top-k (0 = off)")
    match_weight: float = Field(1.0, gt=0, description="re-ranking score: sim / τ + match_weight · log p(match)")
    all_captions: bool = Field(False, description="evaluate every caption of a visual (COCO has 5), not the first")


class RetrievalTask(TaskModule):
    """Image-text retrieval: contrastive + matching fine-tuning, recall@1/5/10 both ways after re-ranking."""

    name = "retrieval"
    record_types = (Sample,)
    metric = "mean_recall"

    def __init__(self, config: RetrievalConfig, model: VLModel) -> None:
        super().__init__()
        self.config = config
        # Stateless losses kept outside the module tree: the task's own state (the checkpoint part) stays empty.
        self._losses = {"contrastive": (ContrastiveLoss(ContrastiveLossConfig()), 1.0),
                        "matching": (MatchingLoss(MatchingLossConfig()), 1.0)}

    video = False  # clips (video_retrieval) instead of images

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[Batch]:
        video = self.video
        builder = BatchBuilder(
            tokenizer=prep.tokenizer, image_size=prep.image_size, mean=prep.mean, std=prep.std,
            max_text_len=prep.max_text_len, image_pairs=0 if video else batch_size, box_pairs=0,
            video_pairs=batch_size if video else 0, frames=self.frames,
        )
        while True:
            chunk: list[Sample] = []
            while len(chunk) < batch_size:
                record = next(records)
                if isinstance(record, Sample) and record.captions and ((record.frames is not None) == video):
                    chunk.append(record)
            yield builder(chunk, generator)  # a random caption of each visual

    def loss(self, model: VLModel, batch: Batch) -> LossOutput:  # type: ignore[override]
        out = run_losses(model, self._losses, batch)  # type: ignore[arg-type]
        return LossOutput(loss=out.loss, logs={k: v for k, v in out.logs.items() if k != "temperature"})

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        prep = model.preprocess(self.frames)
        data = eval_set(records, self.name, prep, all_captions=self.config.all_captions)
        if data.video != self.video:
            raise ValueError(f"it yields {'clips' if data.video else 'images'}; task {self.name} evaluates "
                             f"{'clips' if self.video else 'images'} (use {'video_retrieval' if data.video else 'retrieval'})")
        tokens = encode_visuals(model, data.visuals, data.video, batch_size)
        metrics = evaluate_retrieval(model, tokens, data.captions, data.text_to_visual, self.config.rerank_k,
                                     batch_size, self.config.match_weight)
        return {**metrics.as_dict(), "n": float(tokens.shape[0]), "chance_r1": 1.0 / tokens.shape[0]}


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(kind="task", name="retrieval", config=RetrievalConfig, factory=RetrievalTask),
    ]
