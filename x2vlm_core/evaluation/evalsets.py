"""Held-out evaluation data: records read from a data source section, and image/caption sets as tensors."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from registry import ConfigError, PluginRegistry
from x2vlm_core.config import DataSourceSection
from x2vlm_core.contracts import ConceptKind, Preprocess, Record, Sample, VLModel
from x2vlm_core.data.collate import frame_indices
from x2vlm_core.data.transforms import normalise, resize

__all__ = ["EvalSet", "encode_visuals", "eval_set", "read_records"]


def read_records(section: DataSourceSection, where: str, samples: int, registry: PluginRegistry) -> list[Record]:
    """The first `samples` records of one source (built for a single process)."""
    source = registry.build("data", section.plugin_section(), where)
    records = list(itertools.islice(iter(source), samples))  # type: ignore[call-overload]
    if not records:
        raise ConfigError(where, "this evaluation source yielded no records (check its paths)", section.plugin)
    return records


@dataclass(frozen=True)
class EvalSet:
    """Held-out records as tensors: raw uint8 visuals [K, 3, H, W] or [K, F, 3, H, W], one caption each
    (`text_to_visual` [T] maps captions to visuals), and boxed phrases (visual index, text, box) for grounding."""

    name: str
    video: bool
    visuals: Tensor
    captions: list[str]
    text_to_visual: Tensor
    concept_index: Tensor
    concept_texts: list[str]
    concept_boxes: Tensor


def eval_set(
    records: Sequence[Record], name: str, prep: Preprocess,
    kinds: tuple[ConceptKind, ...] = (ConceptKind.OBJECT,), all_captions: bool = False,
) -> EvalSet:
    """Visual Samples → an EvalSet: each visual's first caption (or all with `all_captions`), its concepts of
    `kinds`; clips sampled to prep.frames frames. Other record types are an error naming the set."""
    samples = [r for r in records if isinstance(r, Sample)]
    if len(samples) != len(records):
        other = next(type(r).__name__ for r in records if not isinstance(r, Sample))
        raise ConfigError(name, f"this evaluation needs image or video Samples; the source yields {other} records")
    video = samples[0].frames is not None
    if any((s.frames is not None) != video for s in samples):
        raise ConfigError(name, "the source mixes images and videos; evaluate them as two sources")

    def pixels(s: Sample) -> Tensor:
        if video:
            frames = s.frames
            assert frames is not None
            return resize(frames[frame_indices(frames.shape[0], prep.frames)], prep.image_size)
        assert s.image is not None
        return resize(s.image, prep.image_size)

    captions, owner = [], []
    index, texts, boxes = [], [], []
    for i, s in enumerate(samples):
        for caption in s.captions if all_captions else s.captions[:1]:
            captions.append(caption)
            owner.append(i)
        for c in s.concepts:
            if c.kind in kinds:
                index.append(i)
                texts.append(c.text)
                boxes.append(c.box)
    return EvalSet(
        name=name, video=video, visuals=torch.stack([pixels(s) for s in samples]), captions=captions,
        text_to_visual=torch.tensor(owner, dtype=torch.long), concept_index=torch.tensor(index, dtype=torch.long),
        concept_texts=texts, concept_boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    )


@torch.no_grad()
def encode_visuals(model: VLModel, visuals: Tensor, video: bool, batch_size: int) -> Tensor:
    """uint8 visuals [K, (F,) 3, H, W] → model tokens [K, 1+N, Dv], normalised as the vision encoder expects."""
    prep = model.preprocess()
    chunks = []
    for i in range(0, visuals.shape[0], batch_size):
        x = normalise(visuals[i : i + batch_size], prep.mean, prep.std).to(model.device)
        chunks.append(model.encode_videos(x) if video else model.encode_images(x))
    return torch.cat(chunks)
