"""Data contracts: what data plugins yield (Sample) and what the model trains on (Batch).

Shapes: M visual-concept/text pairs, Bi images, Bv videos, F frames, L tokens.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from x2vlm_core.contracts.text import TokenizedText

__all__ = [
    "Batch",
    "CompositionSample",
    "Concept",
    "ConceptKind",
    "DataSource",
    "PairSample",
    "QASample",
    "Record",
    "Sample",
]


class ConceptKind(enum.IntEnum):
    """What visual concept a pair's text describes."""

    IMAGE = 0
    OBJECT = 1
    REGION = 2
    VIDEO = 3


@dataclass(frozen=True)
class Concept:
    """A box-text pair inside an image: box (cx, cy, w, h) normalised to [0, 1]. `attributes`: what a
    source knows about an object beyond its text (e.g. colour and size words), for attribute recognition."""

    box: tuple[float, float, float, float]
    text: str
    kind: ConceptKind = ConceptKind.OBJECT
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One record of a data source. Exactly one of `image` [3, H, W] uint8 or `frames` [F, 3, H, W]
    uint8 is set. `captions` may be empty (object/region-only records); `concepts` may be empty."""

    key: str
    source: str
    image: Tensor | None
    frames: Tensor | None
    captions: tuple[str, ...]
    concepts: tuple[Concept, ...] = ()
    language: str = "en"


@dataclass(frozen=True)
class QASample:
    """A question about one image [3, H, W] uint8 or clip [F, 3, H, W] uint8 (exactly one is set), for VQA
    and video QA. `answers`: the human answers, repeats kept (VQA v2 has 10 per question; the soft accuracy
    counts them); `question_type`: for per-type accuracy (e.g. colour, count, yes/no)."""

    key: str
    source: str
    image: Tensor | None
    frames: Tensor | None
    question: str
    answers: tuple[str, ...]
    question_type: str = ""
    language: str = "en"


@dataclass(frozen=True)
class PairSample:
    """A statement about two images [3, H, W] uint8 (NLVR2: left, right) and whether it is true."""

    key: str
    source: str
    images: tuple[Tensor, Tensor]
    text: str
    label: bool
    language: str = "en"


@dataclass(frozen=True)
class CompositionSample:
    """Two images and two captions with the same words in another order (Winoground): caption i describes
    image i. [3, H, W] uint8 each; `tag` names what differs (e.g. attribute, relation, count)."""

    key: str
    source: str
    images: tuple[Tensor, Tensor]
    captions: tuple[str, str]
    tag: str = ""
    language: str = "en"


# What a data source yields: pretraining / retrieval / grounding / captioning records, or task records.
Record = Sample | QASample | PairSample | CompositionSample


@runtime_checkable
class DataSource(Protocol):
    """An iterable of Records; bad records are skipped and counted in `skipped` (reason → count)."""

    name: str
    skipped: dict[str, int]

    def __iter__(self) -> Iterator[Record]: ...


@dataclass
class Batch:
    """One mixed pretraining batch. Every row of `text` is paired with one visual concept.

    images [Bi, 3, H, W] float (normalised); videos [Bv, F, 3, H, W] float (Bv may be 0);
    text [M, L]; source [M] long, index into cat(images, videos) (videos after images);
    boxes [M, 4] (cx, cy, w, h) in [0, 1] (whole image / video = (0.5, 0.5, 1, 1));
    kind [M] long (ConceptKind); visual_id [M] long and text_id [M] long: pairs sharing either are
    positives of each other in the contrastive and matching losses.

    Rows are ordered by group so losses slice without host-device syncs: whole-image pairs
    [0, n_image), then object/region box pairs [n_image, n_image + n_box), then video pairs
    (n_video). The counts are host ints.
    """

    images: Tensor
    videos: Tensor
    text: TokenizedText
    source: Tensor
    boxes: Tensor
    kind: Tensor
    visual_id: Tensor
    text_id: Tensor
    n_image: int
    n_box: int
    n_video: int

    def __post_init__(self) -> None:
        if self.n_image + self.n_box + self.n_video != self.source.shape[0]:
            raise ValueError(
                f"Batch: n_image + n_box + n_video = {self.n_image + self.n_box + self.n_video} "
                f"but there are {self.source.shape[0]} pairs"
            )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, (Tensor, TokenizedText)) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    @property
    def size(self) -> int:
        """Number of pairs M."""
        return int(self.source.shape[0])

    @property
    def box_rows(self) -> slice:
        """Rows of object/region pairs (whose boxes the bbox loss predicts)."""
        return slice(self.n_image, self.n_image + self.n_box)


