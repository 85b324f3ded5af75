"""Typed results of the inference pipeline; each has `to_dict()` (plain JSON values) for the CLI and the server.

Boxes are (cx, cy, w, h) in [0, 1] of the image, as the box head predicts them; `Box.pixels` maps one to
(x0, y0, x1, y1) in the pixels of the image as given (boxes survive the square resize unchanged because
they are normalised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from x2vlm_core.contracts.tasks import Prediction

__all__ = ["Box", "Classification", "Grounding", "Hit", "Prediction", "Retrieval", "Scores", "prediction_dict"]


@dataclass(frozen=True)
class Box:
    """A box (cx, cy, w, h) normalised to [0, 1]."""

    cx: float
    cy: float
    w: float
    h: float

    def xyxy(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) normalised, clipped to the image."""
        return (max(0.0, self.cx - self.w / 2), max(0.0, self.cy - self.h / 2),
                min(1.0, self.cx + self.w / 2), min(1.0, self.cy + self.h / 2))

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in the pixels of a width × height image."""
        x0, y0, x1, y1 = self.xyxy()
        return (x0 * width, y0 * height, x1 * width, y1 * height)

    def to_dict(self) -> dict[str, Any]:
        return {"cx": self.cx, "cy": self.cy, "w": self.w, "h": self.h, "xyxy": list(self.xyxy())}


@dataclass(frozen=True)
class Grounding:
    """Where `text` is in an image: its box, `score` = p(match) of (image, text) from the matching head, and
    `pixels` = the box as (x0, y0, x1, y1) in the image's own pixels (width × height as given)."""

    text: str
    box: Box
    score: float
    width: int
    height: int

    @property
    def pixels(self) -> tuple[float, float, float, float]:
        return self.box.pixels(self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": self.box.to_dict(), "score": self.score,
                "pixels": [round(v, 2) for v in self.pixels], "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Scores:
    """Image-text scores [I, T]: `similarity` (cosine of the contrastive embeddings), `temperature` τ, and with
    re-ranking `match` (p(match) from the matching head). `logits` = similarity / τ (+ log p(match))."""

    similarity: Tensor
    temperature: float
    match: Tensor | None = None

    @property
    def logits(self) -> Tensor:
        out = self.similarity.double() / self.temperature
        if self.match is not None:
            out = out + self.match.double().clamp_min(1e-300).log()
        return out.float()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"similarity": self.similarity.tolist(), "temperature": self.temperature,
                               "logits": self.logits.tolist()}
        if self.match is not None:
            out["match"] = self.match.tolist()
        return out


@dataclass(frozen=True)
class Hit:
    """One retrieved item: its row in the corpus (or index), its id, the final `score` (sim / τ, plus
    log p(match) when re-ranked), the cosine `similarity`, `match` = p(match) when re-ranked, and the
    query's box in it when asked for."""

    index: int
    id: str
    score: float
    similarity: float
    match: float | None = None
    box: Box | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "id": self.id, "score": self.score, "similarity": self.similarity}
        if self.match is not None:
            out["match"] = self.match
        if self.box is not None:
            out["box"] = self.box.to_dict()
        if self.meta:
            out["meta"] = self.meta
        return out


@dataclass(frozen=True)
class Retrieval:
    """A query's hits, best first."""

    query: str
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [h.to_dict() for h in self.hits]}


@dataclass(frozen=True)
class Classification:
    """Zero-shot label of an image: the best label, its probability, and every label's probability
    (softmax of similarity / τ over the labels' prompts)."""

    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "scores": self.scores}


def prediction_dict(prediction: Prediction) -> dict[str, Any]:
    """A task's Prediction (answer, verdict, caption) as JSON."""
    return {"text": prediction.text, "score": prediction.score}
