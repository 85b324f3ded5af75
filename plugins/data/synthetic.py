"""Synthetic multi-grained world: coloured shapes with captions, object/region boxes and moving-shape clips.

The embedded data of `x2vlm pretrain --config configs/demo.yaml` (X²-VLM's (I, T, {(V_i, T_i)}) samples
in miniature): images of 1–3 shapes (5 shapes × 6 colours × 2 sizes, 9 grid locations, 4 relations,
6 backgrounds) with one caption in one of en/de/fr/cs/zh/ja, one object concept per shape and region
concepts over one or two shapes; or clips of 1–2 shapes moving in one of 4 directions.

Record i of a split is drawn from its own seeded generator, so the stream is deterministic, any
(rank, worker) can produce its records i ≡ consumer (mod consumers) without the others, and
`split` streams are disjoint: every scene hashes to a bucket (train 0–7, val 8, test 9) and a split
only keeps scenes of its buckets. `holdout` colour-shape combos never appear in train/val/test and
appear in every record of the `compositional` split.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plugins.data._synth_lang import COLOURS, GRAMMARS, LANGUAGES, SHAPES, Grammar
from plugins.data._synth_scene import (
    Clip,
    Scene,
    relation,
    render_clip,
    render_scene,
    sample_clip,
    sample_scene,
    split_bucket,
    union_box,
)
from x2vlm_core.plugin_api import Concept, ConceptKind, PluginSpec, Sample, hookimpl, record_shard

__all__ = ["Synthetic", "SyntheticConfig", "describe_clip", "describe_scene"]

_BUCKETS = {"train": range(8), "val": range(8, 9), "test": range(9, 10)}


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the whole world; same seed → same records")
    split: Literal["train", "val", "test", "compositional"] = Field(
        "train", description="disjoint scene streams; 'compositional' = scenes with a holdout combo"
    )
    samples: int | None = Field(None, ge=1, description="number of records; None = infinite stream")
    image_size: int = Field(64, ge=64, le=384, description="H = W in pixels")
    min_objects: int = Field(1, ge=1, le=3, description="fewest shapes per image")
    max_objects: int = Field(3, ge=1, le=3, description="most shapes per image (clips use at most 2)")
    kind: Literal["image", "video"] = Field("image", description="images with concepts, or moving-shape clips")
    frames: int = Field(3, ge=2, le=16, description="frames F per clip (kind: video)")
    languages: tuple[str, ...] = Field(
        ("en",), description=f"caption languages, one per record in turn; supported: {', '.join(LANGUAGES)}"
    )
    holdout: tuple[str, ...] = Field(
        (), description="'colour shape' combos kept out of train/val/test, used by split 'compositional'"
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
        if self.kind == "video" and self.image_size % 2:
            raise ValueError(f"kind 'video' needs an even image_size (mp4 frames), got {self.image_size}")
        return self


def describe_scene(scene: Scene, grammar: Grammar, image_size: int) -> tuple[str, tuple[Concept, ...]]:
    """(caption, concepts): one object concept per shape, region concepts over one shape (n = 1) or each pair."""
    shapes = scene.shapes
    things = [s.thing for s in shapes]
    rel = relation(shapes[0], shapes[1]) if len(shapes) > 1 else None
    caption = grammar.caption(things, rel, [s.location(image_size) for s in shapes])
    concepts = [Concept(s.box(image_size), grammar.object_text(s.thing), ConceptKind.OBJECT) for s in shapes]
    if len(shapes) == 1:
        s = shapes[0]
        text = grammar.region_located(s.thing, s.location(image_size))
        concepts.append(Concept(s.box(image_size), text, ConceptKind.REGION))
    for a, b in itertools.combinations(shapes, 2):
        text = grammar.region_related(a.thing, relation(a, b), b.thing)
        concepts.append(Concept(union_box([a, b], image_size), text, ConceptKind.REGION))
    return caption, tuple(concepts)


def describe_clip(clip: Clip, grammar: Grammar) -> str:
    """The clip's caption: each shape and where it moves."""
    return grammar.moving([(m.start.thing, m.direction) for m in clip.movers])


class Synthetic(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Synthetic shapes world: images [3,H,W] (captions, object + region boxes) or clips [F,3,H,W] (captions)."""

    def __init__(self, config: SyntheticConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"data plugin 'synthetic': rank {rank} is not in [0, world_size={world_size})")
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.name = f"synthetic-{config.kind}-{config.split}"
        self.skipped: dict[str, int] = {}  # generated records are never bad
        held = set(config.holdout)
        self._combos = [(c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" not in held]
        self._held = [(h.split()[0], h.split()[1]) for h in config.holdout]

    # ------------------------------------------------------------------ records
    def _rng(self, index: int, tag: str) -> random.Random:
        c = self.config
        # a string seed goes through SHA-512: stable across processes and Python versions
        return random.Random(f"x2vlm-synthetic|{c.seed}|{c.split}|{tag}|{index}")

    def _forced(self, rng: random.Random) -> tuple[str, str] | None:
        return self._held[rng.randrange(len(self._held))] if self.config.split == "compositional" else None

    def _keep(self, scene: Scene | Clip) -> bool:
        split = self.config.split
        return split == "compositional" or split_bucket(scene) in _BUCKETS[split]

    def scene(self, index: int) -> Scene:
        """The scene of record `index` (also for kind 'video', where it feeds `corpus`)."""
        c = self.config
        rng = self._rng(index, "image")
        while True:
            n = rng.randint(c.min_objects, c.max_objects)
            scene = sample_scene(rng, c.image_size, n, self._combos, self._forced(rng))
            if scene is not None and self._keep(scene):
                return scene

    def clip(self, index: int) -> Clip:
        """The clip of record `index`."""
        c = self.config
        rng = self._rng(index, "video")
        while True:
            n = rng.randint(min(c.min_objects, 2), min(c.max_objects, 2))
            clip = sample_clip(rng, c.image_size, c.frames, n, self._combos, self._forced(rng))
            if clip is not None and self._keep(clip):
                return clip

    def language(self, index: int) -> str:
        """Languages take turns over record indices."""
        langs = self.config.languages
        return langs[index % len(langs)]

    def record(self, index: int) -> Sample:
        """Record `index` of this split's stream."""
        c = self.config
        lang = self.language(index)
        grammar = GRAMMARS[lang]
        key = f"{self.name}-{index:09d}"
        if c.kind == "video":
            clip = self.clip(index)
            frames = render_clip(clip, c.image_size, c.frames)
            return Sample(key, self.name, None, frames, (describe_clip(clip, grammar),), (), lang)
        scene = self.scene(index)
        caption, concepts = describe_scene(scene, grammar, c.image_size)
        return Sample(key, self.name, render_scene(scene, c.image_size), None, (caption,), concepts, lang)

    def __iter__(self) -> Iterator[Sample]:
        consumer, consumers = record_shard(self.rank, self.world_size)
        limit = self.config.samples
        indices = itertools.count(consumer, consumers) if limit is None else range(consumer, limit, consumers)
        for index in indices:
            yield self.record(index)

    def corpus(self, n: int) -> list[str]:
        """n texts (captions, object and region texts, clip captions in every configured language), for tokenizers."""
        if n < 0:
            raise ValueError(f"corpus size must be ≥ 0, got {n}")
        texts: list[str] = []
        for index in itertools.count():
            if len(texts) >= n:
                break
            scene, clip = self.scene(index), self.clip(index)
            for lang in self.config.languages:
                grammar = GRAMMARS[lang]
                caption, concepts = describe_scene(scene, grammar, self.config.image_size)
                texts += [caption, *(k.text for k in concepts), describe_clip(clip, grammar)]
        return texts[:n]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="synthetic", config=SyntheticConfig, factory=Synthetic)]
