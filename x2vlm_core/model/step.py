"""One training step as a plan: the losses say what they need, the model encodes once and fuses once.

    batch ─▶ losses.prepare ─▶ extra texts (MLM's masked copies)
          ─▶ ONE text-encoder call (batch texts + extra texts) ─▶ contrastive features, fusion-width tokens
          ─▶ ONE vision pass per image/frame ─▶ visual memory (concept segments + whole images)
          ─▶ losses.pairs ─▶ (text row, segment, positions, head) per loss
          ─▶ ONE fusion call over every requested pair, only the read positions leave the last layer
          ─▶ heads at those positions ─▶ each loss from its tensors ─▶ weighted sum
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from x2vlm_core.contracts import Batch, TokenizedText
from x2vlm_core.contracts.encoders import VisualMemory
from x2vlm_core.contracts.losses import FusionPairs, LossModule, LossPlan, StepInputs
from x2vlm_core.contracts.tasks import TaskBatch
from x2vlm_core.model.x2vlm import X2VLM

__all__ = ["ModelOutput", "TaskStep", "TrainingStep", "run_losses", "stack_texts"]


@dataclass  # not frozen: Lightning Fabric's wrapper walks the output and refuses frozen dataclasses
class ModelOutput:
    """loss: weighted total (scalar); parts: each loss unweighted; logs: detached scalars to report."""

    loss: Tensor
    parts: dict[str, Tensor]
    logs: dict[str, Tensor]


def stack_texts(texts: list[TokenizedText], pad_id: int) -> TokenizedText:
    """Concatenate tokenized texts along rows, right-padding to the longest L (pad_id, mask False, word -1)."""
    if len(texts) == 1:
        return texts[0]
    length = max(t.ids.shape[1] for t in texts)

    def pad(x: Tensor, value: int | bool) -> Tensor:
        return nn.functional.pad(x, (0, length - x.shape[1]), value=value)

    return TokenizedText(
        ids=torch.cat([pad(t.ids, pad_id) for t in texts]),
        mask=torch.cat([pad(t.mask, False) for t in texts]),
        word_ids=torch.cat([pad(t.word_ids, -1) for t in texts]),
    )


def run_losses(model: X2VLM, losses: Mapping[str, tuple[LossModule, float]], batch: Batch) -> ModelOutput:
    """The weighted losses of one step on a Batch: one text-encoder call, one vision pass, one fusion call."""
    heads, tokenizer = model.heads, model.tokenizer
    m = batch.size
    plans: dict[str, LossPlan] = {}
    texts, row = [batch.text], m
    for name, (loss, _) in losses.items():
        plan = loss.prepare(batch, tokenizer)
        if plan.texts is not None:
            plan = replace(plan, first_row=row)
            texts.append(plan.texts)
            row += plan.texts.ids.shape[0]
        plans[name] = plan
    table = stack_texts(texts, tokenizer.pad_id)
    with record_function("x2vlm.encode_text"):
        encoded = model.text(table.ids, table.mask).tokens  # [T, L, Dt], one call for every text
        text_tokens = heads.text_to_fusion(encoded)
        text_feat = heads.text_features(encoded[:m])
    with record_function("x2vlm.encode_visual"):
        bank = model.encode_visual(batch.images, batch.videos)
        memory = model.memory(bank, batch.source, batch.boxes)
        image_feat = heads.image_features(memory.cls[:m])
    inputs = StepInputs(batch, image_feat, text_feat, heads.temperature, tokenizer)
    requests = {name: loss.pairs(inputs, plans[name]) for name, (loss, _) in losses.items()}
    with record_function("x2vlm.fuse"):
        fused = _fuse(model, requests, text_tokens, table.mask, memory)

    parts: dict[str, Tensor] = {}
    logs: dict[str, Tensor] = {}
    total = image_feat.new_zeros(())
    for name, (loss, weight) in losses.items():
        with record_function(f"x2vlm.loss.{name}"):  # named scopes in profiler traces
            out = loss(inputs, plans[name], fused.get(name))
        parts[name] = out.loss
        total = total + weight * out.loss
        logs[name] = out.loss.detach()
        logs.update({f"{name}/{k}": v.detach() for k, v in out.logs.items()})
    logs["temperature"] = inputs.temperature.detach()
    return ModelOutput(loss=total, parts=parts, logs=logs)


def _fuse(
    model: X2VLM, requests: Mapping[str, FusionPairs | None], text: Tensor, text_mask: Tensor, memory: VisualMemory
) -> dict[str, Tensor]:
    """Every request's pairs in one fusion call; each request gets its positions, through its head."""
    asked = {name: r for name, r in requests.items() if r is not None}
    if not asked:
        return {}
    widths = {name: 1 if r.positions is None else int(r.positions.shape[1]) for name, r in asked.items()}
    width = max(widths.values())
    rows = torch.cat([r.text for r in asked.values()])
    segments = torch.cat([r.segment for r in asked.values()])
    # Positions padded to one width R with [CLS] (0); each request keeps its own first columns.
    positions = torch.cat([
        nn.functional.pad(r.positions if r.positions is not None else r.text.new_zeros(r.text.shape[0], 1),
                          (0, width - widths[name]))
        for name, r in asked.items()
    ])
    fused = model.fuse(text.index_select(0, rows), text_mask.index_select(0, rows), memory, segments,
                       positions=positions)
    out: dict[str, Tensor] = {}
    start = 0
    for name, r in asked.items():
        count = int(r.text.shape[0])  # host int: a request's size is its tensor's shape
        piece = fused[start : start + count, : widths[name]]
        out[name] = piece if r.head is None else model.heads.apply_head(r.head, piece)
        start += count
    return out


class TrainingStep(nn.Module):
    """The losses of one pretraining step on a Batch (the model and the losses are children; Fabric wraps it).

    Args:
        model: the X2VLM being trained.
        losses: name → (loss module, weight); the total is the weighted sum.
    """

    def __init__(self, model: X2VLM, losses: Mapping[str, tuple[LossModule, float]]) -> None:
        super().__init__()
        if not losses:
            raise ValueError("a training step needs at least one loss")
        self.model = model
        self.losses = nn.ModuleDict({name: module for name, (module, _) in losses.items()})
        self.loss_weights = {name: float(weight) for name, (_, weight) in losses.items()}

    def forward(self, batch: Batch) -> ModelOutput:
        losses = {name: (module, self.loss_weights[name]) for name, module in self.losses.items()}
        return run_losses(self.model, losses, batch)  # type: ignore[arg-type]


class TaskStep(nn.Module):
    """One fine-tuning step of the model's task: `model.task.loss(model, batch)` (Fabric wraps this module)."""

    def __init__(self, model: X2VLM) -> None:
        super().__init__()
        if model.task is None:
            raise ValueError("a task step needs a model with a task")
        self.model = model
        self.loss_weights = {model.task.name: 1.0}

    def forward(self, batch: TaskBatch) -> ModelOutput:
        task = self.model.task
        assert task is not None
        out = task.loss(self.model, batch)  # type: ignore[arg-type]
        logs = {task.name: out.loss.detach(), **{f"{task.name}/{k}": v.detach() for k, v in out.logs.items()}}
        return ModelOutput(loss=out.loss, parts={task.name: out.loss}, logs=logs)
