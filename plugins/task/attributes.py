"""Attribute recognition on ground-truth object boxes (OVAD's box-oracle setting), evaluation only.

For every object box the model ranks attribute phrases by how well each one matches the box's concept tokens
(the patches the box covers with their mean as [CLS]: the segments pretraining aligns object texts with):

    matching     log p(match) of (phrase, box concept) from the matching head,
    contrastive  phrase feature · box-concept feature,
    combined     similarity / τ + log p(match), as retrieval re-ranks.

Phrases: the config's `vocabulary` (group → phrases; by default the eleven basic English colour terms and
small / large) and every
attribute the records' object concepts name. Metrics (x2vlm_core's `attribute_scores`): mAP over attributes
and top-1 accuracy, overall and per group, for the chosen scorer; the other scorers' overall numbers too.

How records name attributes (`Concept.attributes`, one string each): "phrase" or "group:phrase"; synonyms
"group:a/b" score as the mean of their phrases' scores; a leading "?" marks an attribute whose presence is
unknown for that object (OVAD's ignore label): it takes no part in that object's AP or top-1. Every other
vocabulary phrase an object does not name is a negative for it. Objects naming no attribute at all are left
out (nothing is known about them).

Shapes: K object boxes, A attributes, S phrase columns (synonyms), U distinct texts, E embedding width.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from plugins.task._evaluation_only import EvaluationOnlyTask
from plugins.task.winoground import SCORERS
from x2vlm_core.plugin_api import (
    Concept,
    ConceptKind,
    ConfigError,
    PluginSpec,
    Record,
    Sample,
    VisualMemory,
    VLModel,
    attribute_scores,
    combine_scores,
    encode_texts,
    encode_visuals,
    hookimpl,
    match_log_probs,
    resize,
)

__all__ = [
    "UNKNOWN",
    "AttributeLabel",
    "AttributeSet",
    "AttributesConfig",
    "AttributesTask",
    "attribute_set",
    "box_phrase_scores",
    "format_attribute",
    "parse_attribute",
]

UNKNOWN = "?"  # prefix of an attribute whose presence is unknown for the object
# the eleven basic colour terms (Berlin & Kay) and two sizes: the default vocabulary
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "brown", "grey", "pink")
SIZES = ("small", "large")


@dataclass(frozen=True)
class AttributeLabel:
    """One entry of Concept.attributes: the phrase (synonyms joined by "/"), its group ("" = none), and
    whether the object is known to have it (False: unknown, ignored)."""

    phrase: str
    group: str = ""
    known: bool = True


def parse_attribute(text: str) -> AttributeLabel:
    """"[?][group:]phrase" → AttributeLabel (see the module docstring)."""
    known = not text.startswith(UNKNOWN)
    body = text if known else text[len(UNKNOWN) :]
    group, sep, phrase = body.partition(":")
    if not sep:
        group, phrase = "", body
    return AttributeLabel(" ".join(phrase.split()), group.strip(), known)


def format_attribute(phrase: str, group: str = "", known: bool = True) -> str:
    """The Concept.attributes string a data source writes for an attribute (inverse of parse_attribute)."""
    return f"{'' if known else UNKNOWN}{f'{group}:' if group else ''}{phrase}"


class AttributesConfig(BaseModel):
    """Which phrases are ranked, how they are written, and which score ranks them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scorer: Literal["contrastive", "matching", "combined"] = Field(
        "matching",
        description="matching (log p(match) of phrase and box), contrastive (feature similarity) or combined "
        "(similarity / τ + log p(match)); the other two are reported too, overall",
    )
    vocabulary: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"colour": COLOURS, "size": SIZES},
        description="group → phrases always ranked (negatives unless an object names them), on top of those the "
        "records name; {} for a source with its own full vocabulary (OVAD)",
    )
    template: str = Field(
        "{attribute}",
        description="the text scored for a phrase: {attribute} = the phrase, {object} = the box's concept text "
        "(OVAD: its category, e.g. '{attribute} {object}'; not for the synthetic world, whose object texts "
        "name their colour and size)",
    )

    @field_validator("template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if "attribute" not in fields or fields - {"attribute", "object"}:
            raise ValueError(f"template {value!r} must contain {{attribute}} and may contain {{object}}, nothing else")
        return value


@dataclass(frozen=True)
class AttributeSet:
    """The evaluation set: K objects (image row [K], box [K, 4] (cx, cy, w, h), concept text), the A
    attribute phrases with their groups (name → columns), positive / unknown [K, A] bool."""

    images: Tensor
    image_index: Tensor
    boxes: Tensor
    texts: list[str]
    phrases: list[str]
    groups: dict[str, list[int]]
    positive: Tensor
    unknown: Tensor


def _vocabulary(config: Mapping[str, Sequence[str]], labels: Sequence[Sequence[AttributeLabel]]) -> tuple[list[str], dict[str, list[int]]]:
    """Phrases in order (the config's, then the records' by first appearance) and group → columns; a phrase
    keeps the first group it is given."""
    column: dict[str, int] = {}
    group_of: dict[str, str] = {}

    def add(phrase: str, group: str) -> None:
        if phrase not in column:
            column[phrase] = len(column)
        if group and not group_of.get(phrase):
            group_of[phrase] = group

    for group, phrases in config.items():
        for phrase in phrases:
            add(" ".join(phrase.split()), group)
    for object_labels in labels:
        for label in object_labels:
            add(label.phrase, label.group)
    groups: dict[str, list[int]] = {}
    for phrase, group in group_of.items():
        groups.setdefault(group, []).append(column[phrase])
    return list(column), {g: sorted(c) for g, c in groups.items()}


def attribute_set(records: Sequence[Record], vocabulary: Mapping[str, Sequence[str]], size: int) -> AttributeSet:
    """Image Samples → the objects whose concepts name attributes, their labels, and images resized to size."""
    images: list[Tensor] = []
    index: list[int] = []
    objects: list[Concept] = []
    for record in records:
        if not isinstance(record, Sample) or record.image is None:
            continue
        named = [c for c in record.concepts if c.kind == ConceptKind.OBJECT and c.attributes]
        if named:
            index += [len(images)] * len(named)
            objects += named
            images.append(resize(record.image, size))
    if not objects:
        raise ConfigError(
            "task attributes", "no object concept in the evaluation records names an attribute; use image records "
            "with object attributes, e.g. --data '{plugin: synthetic, split: test, kind: image}' or an `ovad` section",
            has_value=False,
        )
    labels = [[parse_attribute(a) for a in c.attributes] for c in objects]
    phrases, groups = _vocabulary(vocabulary, labels)
    column = {p: i for i, p in enumerate(phrases)}
    positive = torch.zeros(len(objects), len(phrases), dtype=torch.bool)
    unknown = torch.zeros_like(positive)
    for k, object_labels in enumerate(labels):
        for label in object_labels:
            (positive if label.known else unknown)[k, column[label.phrase]] = True
    if not bool(positive.any()):
        raise ConfigError("task attributes", "the records mark every attribute as unknown ('?'); there is no "
                          "positive to score against", has_value=False)
    return AttributeSet(
        images=torch.stack(images), image_index=torch.tensor(index, dtype=torch.long),
        boxes=torch.tensor([c.box for c in objects], dtype=torch.float32), texts=[c.text for c in objects],
        phrases=phrases, groups=groups, positive=positive, unknown=unknown & ~positive,
    )


def _phrase_texts(data: AttributeSet, template: str) -> tuple[list[str], Tensor, Tensor]:
    """(distinct texts [U], text of each object and phrase column [K, S], attribute of each column [S])."""
    columns = [(a, synonym.strip()) for a, phrase in enumerate(data.phrases) for synonym in phrase.split("/")
               if synonym.strip()]
    owner = torch.tensor([a for a, _ in columns], dtype=torch.long)
    per_object = "{object}" in template
    row: dict[str, int] = {}
    table = []
    for k in range(len(data.texts) if per_object else 1):
        obj = data.texts[k] if per_object else ""
        table.append([row.setdefault(template.format(attribute=s, object=obj), len(row)) for _, s in columns])
    text_index = torch.tensor(table, dtype=torch.long).expand(len(data.texts), -1)
    return list(row), text_index, owner


def _concept_memory(model: VLModel, tokens: Tensor, source: Tensor, boxes: Tensor) -> VisualMemory:
    """Box concept segments [0, K) on image tokens [B, 1+N, Dv] (then every image whole): the model's own."""
    memory = getattr(model, "memory", None)
    if memory is None:
        raise TypeError("attributes: the model has no memory(bank, source, boxes) to build box concepts from; "
                        "evaluate an x2vlm_core X2VLM model")
    built: VisualMemory = memory(tokens, source, boxes)
    return built


@torch.no_grad()
def box_phrase_scores(model: VLModel, data: AttributeSet, template: str, batch_size: int) -> dict[str, Tensor]:
    """Scores [K, A] of every scorer (SCORERS) for every object box and attribute, float32 on the CPU.

    Texts are encoded once; images in chunks of batch_size, each chunk's boxes becoming concept segments.
    An attribute with synonyms gets the mean of its phrases' scores.
    """
    texts, text_index, owner = _phrase_texts(data, template)
    text, text_mask, text_feat = encode_texts(model, texts, batch_size)
    device = text.device
    sims, logps = [], []
    for start in range(0, data.images.shape[0], batch_size):
        pick = ((data.image_index >= start) & (data.image_index < start + batch_size)).nonzero().squeeze(1)
        if pick.numel() == 0:
            continue
        tokens = encode_visuals(model, data.images[start : start + batch_size], False, batch_size)
        source = (data.image_index[pick] - start).to(device)
        memory = _concept_memory(model, tokens, source, data.boxes[pick].to(device))
        box_feat = model.heads.image_features(memory.cls[: pick.numel()])  # [Kc, E]
        rows = text_index[pick].to(device)  # [Kc, S]
        sims.append(torch.einsum("ke,kse->ks", box_feat, text_feat[rows]).float().cpu())
        segment = torch.arange(rows.shape[0], device=device)[:, None].expand_as(rows)  # box k's texts
        pairs = torch.stack((rows.reshape(-1), segment.reshape(-1)), -1)
        logps.append(match_log_probs(model, text, text_mask, memory, pairs, batch_size).view_as(rows).cpu())
    sim, logp = torch.cat(sims), torch.cat(logps)  # objects in order: attribute_set sorts them by image
    per_column = {"contrastive": sim, "matching": logp,
                  "combined": combine_scores(sim, logp, float(model.heads.temperature))}
    mean = torch.zeros(owner.shape[0], len(data.phrases)).index_put_((torch.arange(owner.shape[0]), owner),
                                                                     torch.tensor(1.0))
    mean = mean / mean.sum(0, keepdim=True).clamp_min(1.0)  # [S, A]: synonym columns → attribute means
    return {name: scores @ mean for name, scores in per_column.items()}


def _chance(positive: Tensor, known: Tensor, groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """What random scores get on average, overall and per group: AP ≈ the share of positives among an
    attribute's known objects (mean over attributes with a positive); top-1 = an object's positives over its
    known candidates (mean over objects with a positive)."""

    def expected(cols: Tensor) -> tuple[float, float]:
        pos, ok = positive[:, cols], known[:, cols]
        count = pos.sum(0).double()
        prevalence = (count / ok.sum(0).double().clamp_min(1.0))[count > 0]
        labelled = pos.any(1)
        top1 = (pos.sum(1).double() / ok.sum(1).double().clamp_min(1.0))[labelled]
        return (float(prevalence.mean()) if prevalence.numel() else math.nan,
                float(top1.mean()) if top1.numel() else math.nan)

    out: dict[str, float] = {}
    for name, cols in {"": list(range(positive.shape[1])), **groups}.items():
        mean_ap, top1 = expected(torch.tensor(list(cols), dtype=torch.long))
        suffix = f"/{name}" if name else ""
        out.update({f"chance/attr_map{suffix}": mean_ap, f"chance/attr_top1{suffix}": top1})
    return out


def _ignoring_unknown(scores: Tensor, unknown: Tensor) -> Tensor:
    """Unknown entries scored below every real score: they rank after every positive, so they change no
    AP, and never win an object's top-1."""
    return scores.masked_fill(unknown, float(scores.min()) - 1.0)


class AttributesTask(EvaluationOnlyTask):
    """Box-oracle attribute recognition: mAP and top-1 over attribute phrases per object box (no training)."""

    name = "attributes"
    record_types = (Sample,)
    metric = "attr_map"

    config: AttributesConfig

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        data = attribute_set(records, self.config.vocabulary, model.preprocess().image_size)
        scores = box_phrase_scores(model, data, self.config.template, batch_size)
        groups = {g: c for g, c in data.groups.items() if bool(data.positive[:, c].any())}
        out: dict[str, float] = {}
        for name in (self.config.scorer, *(s for s in SCORERS if s != self.config.scorer)):
            result = attribute_scores(_ignoring_unknown(scores[name], data.unknown), data.positive, groups)
            if name == self.config.scorer:
                out.update(result.as_dict())
            else:
                out.update({f"{name}/attr_map": result.mean_ap, f"{name}/attr_top1": result.top1})
        out.update(_chance(data.positive, ~data.unknown, groups))
        out.update({"n": float(len(data.texts)), "n_attributes": float(int(data.positive.any(0).sum()))})
        return out


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="attributes", config=AttributesConfig, factory=AttributesTask)]
