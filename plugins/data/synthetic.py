"""Synthetic multi-grained world: coloured shapes with captions, boxes, moving-shape clips and task records.

The embedded data of `x2vlm pretrain --config configs/demo.yaml` (X²-VLM's (I, T, {(V_i, T_i)}) samples
in miniature): images of 1–3 shapes (5 shapes × 6 colours × 2 sizes, 9 grid locations, 4 relations,
6 backgrounds) with one caption in one of en/de/fr/cs/zh/ja, one object concept per shape (attributes:
colour and size words) and region concepts over one or two shapes (`concepts` keeps only some kinds, for
the data ablations); or clips of 1–2 shapes moving in
one of 4 directions. Task kinds draw from the same world:

    vqa          QASample [3,H,W]: colour / shape / size / count / position / exists questions, one answer
    video_qa     QASample [F,3,H,W]: direction / shape / colour of a mover
    nlvr2        PairSample (left, right [3,H,W]): a statement about both, label computed from the scenes
    refexp       Sample: caption + REGION referring expressions ("the red circle" next to a blue circle)
    composition  CompositionSample: two images, two captions with the same words reordered

`style` picks the renderer: 'default' (plain), 'varied' (training variety: pastel, textured and noisy
backgrounds, wider sizes, colour jitter) or 'foreign' (a held-out anti-aliased renderer with turned,
outlined, shaded shapes on light backgrounds); boxes are tight in every style.

Record i of a split is drawn from its own seeded generator, so the stream is deterministic, any
(rank, worker) can produce its records i ≡ consumer (mod consumers) without the others, and
`split` streams are disjoint: every scene hashes to a bucket (train 0–7, val 8, test 9) and a split
only keeps scenes of its buckets. `holdout` colour-shape combos never appear in train/val/test and
appear in every record of the `compositional` split.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plugins.data._synth_compose import CompositionPlan, plan_composition
from plugins.data._synth_lang import COLOURS, GRAMMARS, LANGUAGES, SHAPES, Grammar
from plugins.data._synth_nlvr import PairPlan, plan_nlvr2
from plugins.data._synth_qa import QAPlan, plan_video_qa, plan_vqa
from plugins.data._synth_refexp import RefPlan, plan_refexp
from plugins.data._synth_scene import Clip, Scene, Shape, relation, union_box
from plugins.data._synth_style import STYLE_SIDES, render_frames, render_image
from plugins.data._synth_wordbook import WORDS
from plugins.data._synth_words import Words
from plugins.data._synth_world import World
from x2vlm_core.plugin_api import (
    CompositionSample,
    Concept,
    ConceptKind,
    PairSample,
    PluginSpec,
    QASample,
    Record,
    Sample,
    hookimpl,
    record_shard,
)

__all__ = ["RECORD_KINDS", "Plan", "Synthetic", "SyntheticConfig", "describe_clip", "describe_scene", "plan_texts"]

RECORD_KINDS = ("image", "video", "vqa", "video_qa", "nlvr2", "refexp", "composition")  # the values of `kind`
Plan = QAPlan | PairPlan | RefPlan | CompositionPlan
_CONCEPT_KINDS = {"object": ConceptKind.OBJECT, "region": ConceptKind.REGION}  # values of `concepts`
_ANSWERS = 10  # VQA v2 keeps 10 human answers; 10 equal ones make soft accuracy exact accuracy
_PLANNERS: dict[str, Callable[[random.Random, World, Words], Plan]] = {
    "vqa": plan_vqa, "video_qa": plan_video_qa, "nlvr2": plan_nlvr2,
    "refexp": plan_refexp, "composition": plan_composition,
}


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the whole world; same seed → same records")
    split: Literal["train", "val", "test", "compositional"] = Field(
        "train", description="disjoint scene streams; 'compositional' = scenes with a holdout combo"
    )
    samples: int | None = Field(None, ge=1, description="number of records; None = infinite stream")
    image_size: int = Field(64, ge=64, le=384, description="H = W in pixels")
    min_objects: int = Field(1, ge=1, le=3, description="fewest shapes per image (random scenes of every kind)")
    max_objects: int = Field(3, ge=1, le=3, description="most shapes per image (clips use at most 2)")
    kind: Literal["image", "video", "vqa", "video_qa", "nlvr2", "refexp", "composition"] = Field(
        "image",
        description="image: captions + object/region boxes; video: moving-shape clips; vqa / video_qa: one "
        "question + answer (QASample); nlvr2: statement about two images (PairSample); refexp: referring "
        "expressions with distractors (REGION concepts); composition: reordered-caption pairs (CompositionSample)",
    )
    style: Literal["default", "varied", "foreign"] = Field(
        "default",
        description="renderer: default (plain); varied (training variety: pastel/textured/noisy backgrounds, "
        "wider sizes, colour jitter); foreign (held-out: anti-aliased, turned, outlined, shaded shapes on light "
        "backgrounds, much smaller and larger sizes)",
    )
    frames: int = Field(3, ge=2, le=16, description="frames F per clip (kinds video, video_qa)")
    languages: tuple[str, ...] = Field(
        ("en",), description=f"text languages, one per record in turn; supported: {', '.join(LANGUAGES)}"
    )
    holdout: tuple[str, ...] = Field(
        (), description="'colour shape' combos kept out of train/val/test, used by split 'compositional'"
    )
    concepts: tuple[Literal["object", "region"], ...] = Field(
        ("object", "region"),
        description="concept kinds that kind 'image' records carry (the data ablations: ['region'] = without "
        "object data, ['object'] = without region data, [] = captions only); the scenes stay the same",
    )

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"give at least one language (supported: {', '.join(LANGUAGES)})")
        unknown = [v for v in value if v not in GRAMMARS]
        if unknown:
            raise ValueError(f"unsupported language(s) {unknown}; supported: {', '.join(LANGUAGES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"languages repeat: {list(value)}")
        return value

    @field_validator("holdout")
    @classmethod
    def _known_combos(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for item in value:
            words = item.lower().split()
            if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
                raise ValueError(
                    f"holdout entry {item!r} is not 'colour shape' with colour in {', '.join(COLOURS)} "
                    f"and shape in {', '.join(SHAPES)}"
                )
            out.append(" ".join(words))
        if len(set(out)) >= len(COLOURS) * len(SHAPES):
            raise ValueError("holdout may not hold out every colour-shape combo")
        return tuple(dict.fromkeys(out))

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects {self.min_objects} > max_objects {self.max_objects}")
        if self.split == "compositional" and not self.holdout:
            raise ValueError("split 'compositional' needs holdout combos, e.g. holdout: ['red circle']")
        if self.kind in ("video", "video_qa") and self.image_size % 2:
            raise ValueError(f"kind {self.kind!r} needs an even image_size (mp4 frames), got {self.image_size}")
        return self


def describe_scene(scene: Scene, grammar: Grammar, image_size: int) -> tuple[str, tuple[Concept, ...]]:
    """(caption, concepts): one object concept per shape (attributes: colour, size words), region concepts
    over one shape (n = 1) or each pair."""
    shapes, words = scene.shapes, WORDS[grammar.code]
    things = [s.thing for s in shapes]
    rel = relation(shapes[0], shapes[1]) if len(shapes) > 1 else None
    caption = grammar.caption(things, rel, [s.location(image_size) for s in shapes])
    concepts = [
        Concept(s.box(image_size), grammar.object_text(s.thing), ConceptKind.OBJECT, _attributes(s, words))
        for s in shapes
    ]
    if len(shapes) == 1:
        s = shapes[0]
        text = grammar.region_located(s.thing, s.location(image_size))
        concepts.append(Concept(s.box(image_size), text, ConceptKind.REGION))
    for a, b in itertools.combinations(shapes, 2):
        text = grammar.region_related(a.thing, relation(a, b), b.thing)
        concepts.append(Concept(union_box([a, b], image_size), text, ConceptKind.REGION))
    return caption, tuple(concepts)


def _attributes(s: Shape, words: Words) -> tuple[str, str]:
    """(colour, size) words of an object in the language, as VQA answers name them."""
    return words.colour(s.colour), words.size(s.size)


def describe_clip(clip: Clip, grammar: Grammar) -> str:
    """The clip's caption: each shape and where it moves."""
    return grammar.moving([(m.start.thing, m.direction) for m in clip.movers])


def plan_texts(plan: Plan, grammar: Grammar, image_size: int) -> list[str]:
    """The texts of a task plan (questions and answers, statements, expressions, captions)."""
    if isinstance(plan, QAPlan):
        return [plan.question, plan.answer]
    if isinstance(plan, PairPlan):
        return [plan.text]
    if isinstance(plan, RefPlan):
        return [describe_scene(plan.scene, grammar, image_size)[0], *(e for _, e in plan.expressions)]
    return list(plan.captions)


class Synthetic(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Synthetic shapes world: images [3,H,W] (captions, boxes), clips [F,3,H,W], or VQA / NLVR2 / refexp / Winoground records.

    By `kind`: Samples with captions and object + region concepts (image), Samples with clip captions
    (video), QASample (vqa, video_qa), PairSample (nlvr2), Samples with REGION referring expressions
    (refexp) or CompositionSample (composition); `plan(index)` gives the scenes and texts behind a task record.
    """

    def __init__(self, config: SyntheticConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"data plugin 'synthetic': rank {rank} is not in [0, world_size={world_size})")
        self.config = config
        self.rank, self.world_size = rank, world_size
        style = "" if config.style == "default" else f"{config.style}-"
        self.name = f"synthetic-{config.kind}-{style}{config.split}"
        self.skipped: dict[str, int] = {}  # generated records are never bad
        held = set(config.holdout)
        self.world = World(
            config.split, config.image_size, config.min_objects, config.max_objects, config.frames,
            tuple((c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" not in held),
            tuple((h.split()[0], h.split()[1]) for h in config.holdout),
            STYLE_SIDES[config.style],
        )

    # ------------------------------------------------------------------ records
    def _rng(self, index: int, tag: str) -> random.Random:
        c = self.config
        # a string seed goes through SHA-512: stable across processes and Python versions
        return random.Random(f"x2vlm-synthetic|{c.seed}|{c.split}|{tag}|{index}")

    def look_seed(self, index: int, part: int) -> str:
        """Seed of the look (background, jitter, pens) of image `part` of record `index`; unused by style default."""
        c = self.config
        return f"x2vlm-synthetic-look|{c.seed}|{c.split}|{c.kind}|{c.style}|{index}|{part}"

    def scene(self, index: int) -> Scene:
        """The scene of record `index` of kind 'image' (also for kind 'video', where it feeds `corpus`)."""
        return self.world.scene(self._rng(index, "image"))

    def clip(self, index: int) -> Clip:
        """The clip of record `index` of kind 'video'."""
        return self.world.clip(self._rng(index, "video"))

    def plan(self, index: int, language: str | None = None) -> Plan:
        """The task plan (scenes, texts, answer or label) of record `index` of a task kind."""
        kind = self.config.kind
        if kind not in _PLANNERS:
            raise ValueError(f"data plugin 'synthetic': kind {kind!r} has no task plans (task kinds: {', '.join(_PLANNERS)})")
        language = language or self.language(index)
        if language not in WORDS:
            raise ValueError(f"data plugin 'synthetic': unsupported language {language!r}; supported: {', '.join(WORDS)}")
        words = WORDS[language]
        return _PLANNERS[kind](self._rng(index, kind), self.world, words)

    def language(self, index: int) -> str:
        """Languages take turns over record indices."""
        langs = self.config.languages
        return langs[index % len(langs)]

    def _image(self, scene: Scene, index: int, part: int = 0) -> torch.Tensor:
        return render_image(scene, self.config.image_size, self.config.style, self.look_seed(index, part))

    def record(self, index: int) -> Record:
        """Record `index` of this split's stream."""
        c = self.config
        lang = self.language(index)
        key = f"{self.name}-{index:09d}"
        if c.kind == "image":
            scene = self.scene(index)
            caption, concepts = describe_scene(scene, GRAMMARS[lang], c.image_size)
            return Sample(key, self.name, self._image(scene, index), None, (caption,), self._kept(concepts), lang)
        if c.kind == "video":
            clip = self.clip(index)
            frames = render_frames(clip, c.image_size, c.frames, c.style, self.look_seed(index, 0))
            return Sample(key, self.name, None, frames, (describe_clip(clip, GRAMMARS[lang]),), (), lang)
        return self._task_record(self.plan(index, lang), key, index, lang)

    def _kept(self, concepts: tuple[Concept, ...]) -> tuple[Concept, ...]:
        """The concepts of the kinds `concepts` asks for (all of them by default)."""
        kinds = {_CONCEPT_KINDS[k] for k in self.config.concepts}
        return tuple(c for c in concepts if c.kind in kinds)

    def _task_record(self, plan: Plan, key: str, index: int, lang: str) -> Record:
        c = self.config
        if isinstance(plan, QAPlan):
            answers = (plan.answer,) * _ANSWERS
            if isinstance(plan.visual, Clip):
                frames = render_frames(plan.visual, c.image_size, c.frames, c.style, self.look_seed(index, 0))
                return QASample(key, self.name, None, frames, plan.question, answers, plan.question_type, lang)
            image = self._image(plan.visual, index)
            return QASample(key, self.name, image, None, plan.question, answers, plan.question_type, lang)
        if isinstance(plan, PairPlan):
            images = (self._image(plan.scenes[0], index, 0), self._image(plan.scenes[1], index, 1))
            return PairSample(key, self.name, images, plan.text, plan.label, lang)
        if isinstance(plan, RefPlan):
            caption = describe_scene(plan.scene, GRAMMARS[lang], c.image_size)[0]
            concepts = tuple(Concept(s.box(c.image_size), e, ConceptKind.REGION) for s, e in plan.expressions)
            return Sample(key, self.name, self._image(plan.scene, index), None, (caption,), concepts, lang)
        images = (self._image(plan.scenes[0], index, 0), self._image(plan.scenes[1], index, 1))
        return CompositionSample(key, self.name, images, plan.captions, plan.tag, lang)

    def __iter__(self) -> Iterator[Record]:
        consumer, consumers = record_shard(self.rank, self.world_size)
        limit = self.config.samples
        indices = itertools.count(consumer, consumers) if limit is None else range(consumer, limit, consumers)
        for index in indices:
            yield self.record(index)

    def corpus(self, n: int) -> list[str]:
        """n texts (captions, object and region texts, clip captions and, for task kinds, the task texts, in
        every configured language), for tokenizers."""
        if n < 0:
            raise ValueError(f"corpus size must be ≥ 0, got {n}")
        texts: list[str] = []
        task = self.config.kind in _PLANNERS
        for index in itertools.count():
            if len(texts) >= n:
                break
            scene, clip = self.scene(index), self.clip(index)
            for lang in self.config.languages:
                grammar = GRAMMARS[lang]
                caption, concepts = describe_scene(scene, grammar, self.config.image_size)
                texts += [caption, *(k.text for k in self._kept(concepts)), describe_clip(clip, grammar)]
                if task:
                    texts += plan_texts(self.plan(index, lang), grammar, self.config.image_size)
        return texts[:n]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="synthetic", config=SyntheticConfig, factory=Synthetic)]
