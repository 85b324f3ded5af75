"""NLVR2: is a statement true of an image pair? The sentence fused with each image, two [CLS] → MLP → 2.

X²-VLM's recipe (docs/recipes.md): the statement is fused with the left image and, separately, with the
right one; the two fused [CLS] tokens are concatenated ([B, 2D]) and an MLP (2D → 2D → LayerNorm → GELU →
2) classifies false / true. Cross-entropy; accuracy. Each image is encoded once; the statement is
encoded once and fused twice. Shapes: B pairs, L tokens, D fusion width.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from x2vlm_core.plugin_api import (
    LossOutput,
    PairSample,
    PluginSpec,
    Prediction,
    Preprocess,
    Record,
    TaskModule,
    TokenizedText,
    VisualMemory,
    VLModel,
    hookimpl,
    normalise,
    resize,
)

__all__ = ["Nlvr2Batch", "Nlvr2Config", "Nlvr2Task"]


class Nlvr2Config(BaseModel):
    """NLVR2 has no recipe fields beyond the data and training sections."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Nlvr2Batch:
    """left / right normalised images [B, 3, H, W], statements [B, L], labels [B] long (1 = true).
    Not frozen: Fabric's precision plugins set fields one by one."""

    left: Tensor
    right: Tensor
    text: TokenizedText
    label: Tensor

    @property
    def size(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Nlvr2Batch:
        return Nlvr2Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})


def pair_batch(records: Sequence[PairSample], prep: Preprocess) -> Nlvr2Batch:
    """PairSamples → an Nlvr2Batch (images resized to the model's side and normalised)."""

    def side(i: int) -> Tensor:
        pixels = torch.stack([resize(r.images[i], prep.image_size) for r in records])
        return normalise(pixels, prep.mean, prep.std)

    return Nlvr2Batch(left=side(0), right=side(1), text=prep.tokenizer([r.text for r in records], prep.max_text_len),
                      label=torch.tensor([int(r.label) for r in records], dtype=torch.long))


class Nlvr2Task(TaskModule):
    """NLVR2: the statement fused with each image; the two fused [CLS] → MLP → false/true; accuracy."""

    name = "nlvr2"
    record_types = (PairSample,)
    metric = "accuracy"

    def __init__(self, config: Nlvr2Config, model: VLModel) -> None:
        super().__init__()
        self.config = config
        width = model.heads.sizes.fusion_width
        self.head = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(),
                                  nn.Linear(2 * width, 2))
        for module in self.head:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[Nlvr2Batch]:
        while True:
            chunk: list[PairSample] = []
            while len(chunk) < batch_size:
                record = next(records)
                if isinstance(record, PairSample):
                    chunk.append(record)
            yield pair_batch(chunk, prep)

    def logits(self, model: VLModel, left: Tensor, right: Tensor, text: TokenizedText) -> Tensor:
        """Images left/right [B, 3, H, W] and statements [B, L] → logits [B, 2] (index 1 = true)."""
        b = left.shape[0]
        bank = model.encode_images(torch.cat((left, right)))  # [2B, 1+N, Dv]: lefts, then rights
        encoded = model.encode_text(text.ids, text.mask)
        tokens, mask = encoded.tokens.repeat(2, 1, 1), text.mask.repeat(2, 1)  # row i and i + B: pair i
        rows = torch.arange(2 * b, device=left.device)
        first = torch.zeros(2 * b, 1, dtype=torch.long, device=left.device)
        cls = model.fuse(tokens, mask, VisualMemory.whole(bank), rows, positions=first)[:, 0]  # [2B, D]
        out: Tensor = self.head(torch.cat((cls[:b], cls[b:]), dim=-1))
        return out

    def loss(self, model: VLModel, batch: Nlvr2Batch) -> LossOutput:  # type: ignore[override]
        logits = self.logits(model, batch.left, batch.right, batch.text)
        loss = F.cross_entropy(logits.float(), batch.label)
        accuracy = (logits.argmax(-1) == batch.label).float().mean()
        return LossOutput(loss=loss, logs={"train_accuracy": accuracy.detach()})

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        pairs = [r for r in records if isinstance(r, PairSample)]
        if len(pairs) != len(records) or not pairs:
            other = next((type(r).__name__ for r in records if not isinstance(r, PairSample)), "no")
            raise ValueError(f"task {self.name}: the evaluation source yields {other} records; NLVR2 reads "
                             "PairSample records (a data source of kind nlvr2, or nlvr2_json)")
        prep = model.preprocess()
        correct, true = 0, 0
        for i in range(0, len(pairs), batch_size):
            batch = pair_batch(pairs[i : i + batch_size], prep).to(model.device)
            predicted = self.logits(model, batch.left, batch.right, batch.text).argmax(-1)
            correct += int((predicted == batch.label).sum())
            true += int(batch.label.sum())
        n = len(pairs)
        return {"accuracy": correct / n, "n": float(n), "majority": max(true, n - true) / n}

    @torch.no_grad()
    def verify(self, model: VLModel, left: Tensor, right: Tensor, statements: Sequence[str]) -> list[Prediction]:
        """Whether each statement is true of its pair (normalised images [B, 3, H, W]); score = p(true)."""
        if left.shape != right.shape or left.dim() != 4 or left.shape[0] != len(statements):
            raise ValueError(f"task {self.name}: verify() got left {tuple(left.shape)}, right {tuple(right.shape)} "
                             f"for {len(statements)} statements; give one [3, H, W] image pair per statement")
        prep = model.preprocess()
        text = prep.tokenizer(list(statements), prep.max_text_len).to(model.device)
        p_true = self.logits(model, left.to(model.device), right.to(model.device), text).float().softmax(-1)[:, 1]
        return [Prediction("true" if p >= 0.5 else "false", float(p)) for p in p_true.tolist()]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="nlvr2", config=Nlvr2Config, factory=Nlvr2Task)]
