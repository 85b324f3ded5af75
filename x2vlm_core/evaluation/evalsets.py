"""Held-out evaluation sets: records of a data source as tensors, encoded once by the model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from registry import PluginRegistry
from x2vlm_core.config import DataSourceSection
from x2vlm_core.contracts import ConceptKind, Sample
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.model import X2VLM

__all__ = ["EvalSet", "encode_eval_set", "load_eval_set"]


@dataclass(frozen=True)
class EvalSet:
    """Held-out records as tensors: raw uint8 visuals [K, 3, H, W] or [K, F, 3, H, W], one caption each,
    and the object concepts (visual index, text, box) for grounding."""

    name: str
    video: bool
    visuals: Tensor
    captions: list[str]
    concept_index: Tensor
    concept_texts: list[str]
    concept_boxes: Tensor


def load_eval_set(section: DataSourceSection, where: str, samples: int, image_size: int,
                  registry: PluginRegistry) -> EvalSet:
    """Read `samples` records of one source (first caption each; object concepts for grounding)."""
    source = registry.build("data", section.plugin_section(), where)
    records: list[Sample] = [s for s in itertools.islice(iter(source), samples) if s.captions]  # type: ignore[call-overload]
    if not records:
        from registry import ConfigError

        raise ConfigError(where, "this evaluation source yielded no captioned records", section.plugin)
    video = records[0].frames is not None
    visuals = torch.stack([resize(s.frames if video else s.image, image_size) for s in records])  # type: ignore[arg-type]
    index, texts, boxes = [], [], []
    for i, s in enumerate(records):
        for c in s.concepts:
            if c.kind == ConceptKind.OBJECT:
                index.append(i)
                texts.append(c.text)
                boxes.append(c.box)
    return EvalSet(
        name=f"{section.plugin}:{where}", video=video, visuals=visuals, captions=[s.captions[0] for s in records],
        concept_index=torch.tensor(index, dtype=torch.long), concept_texts=texts,
        concept_boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    )


@torch.no_grad()
def encode_eval_set(model: X2VLM, data: EvalSet, batch_size: int) -> Tensor:
    """The set's visuals → model tokens [K, 1+N, Dv] (images or videos, normalised as the vision encoder expects)."""
    device = model.device
    v = model.vision
    chunks = []
    for i in range(0, data.visuals.shape[0], batch_size):
        x = normalise(data.visuals[i : i + batch_size], v.mean, v.std).to(device)
        chunks.append(model.encode_videos(x) if data.video else model.encode_images(x))
    return torch.cat(chunks)
