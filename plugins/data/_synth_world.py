"""What task generators draw from: random or designed scenes and clips of one split, holdout rules, sizes.

Every scene a World returns lies in its split's hash buckets (train 0–7, val 8, test 9; see
split_bucket), so records of different splits never share a scene. Outside the 'compositional' split
no scene shows a holdout combo; inside it, random scenes show one (generators put one into designed
scenes through `forced`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from plugins.data._synth_scene import Clip, Scene, Sides, place_scene, sample_clip, sample_scene, split_bucket

__all__ = ["BUCKETS", "World"]

BUCKETS = {"train": range(8), "val": range(8, 9), "test": range(9, 10)}
_ATTEMPTS = 10_000  # a split keeps ≥ 10% of scenes: running out means the config cannot be satisfied


@dataclass(frozen=True)
class World:
    """Config-derived sampling of one split: `combos` are the allowed (colour, shape), `held` the holdout ones."""

    split: str
    image_size: int
    min_objects: int
    max_objects: int
    frames: int
    combos: tuple[tuple[str, str], ...]
    held: tuple[tuple[str, str], ...]
    sides: Sides

    @property
    def compositional(self) -> bool:
        return self.split == "compositional"

    def keep(self, scene: Scene | Clip) -> bool:
        """Whether the scene belongs to this split."""
        return self.compositional or split_bucket(scene) in BUCKETS[self.split]

    def forced(self, rng: random.Random) -> tuple[str, str] | None:
        """A holdout combo in the compositional split (drawn from rng), else None."""
        return self.held[rng.randrange(len(self.held))] if self.compositional else None

    def combo(self, rng: random.Random) -> tuple[str, str]:
        return self.combos[rng.randrange(len(self.combos))]

    def scene(self, rng: random.Random) -> Scene:
        """A random scene of this split (1–3 shapes as configured)."""
        for _ in range(_ATTEMPTS):
            n = rng.randint(self.min_objects, self.max_objects)
            scene = sample_scene(rng, self.image_size, n, self.combos, self.forced(rng), self.sides)
            if scene is not None and self.keep(scene):
                return scene
        raise RuntimeError(self._stuck("scenes"))

    def clip(self, rng: random.Random) -> Clip:
        """A random clip of this split (1–2 movers)."""
        for _ in range(_ATTEMPTS):
            n = rng.randint(min(self.min_objects, 2), min(self.max_objects, 2))
            clip = sample_clip(rng, self.image_size, self.frames, n, self.combos, self.forced(rng), self.sides)
            if clip is not None and self.keep(clip):
                return clip
        raise RuntimeError(self._stuck("clips"))

    def designed(self, rng: random.Random, specs: Sequence[tuple[str, str, str | None]]) -> Scene | None:
        """Shapes (colour, shape, size or None) placed at random, in spec order; None if they do not fit
        or the scene belongs to another split (the caller places them again)."""
        scene = place_scene(rng, self.image_size, specs, self.sides)
        return scene if scene is not None and self.keep(scene) else None

    def _stuck(self, what: str) -> str:
        return (
            f"data plugin 'synthetic': no {what} of split {self.split!r} after {_ATTEMPTS} tries "
            f"(image_size {self.image_size}, {self.min_objects}–{self.max_objects} objects); "
            "use a larger image_size or fewer objects"
        )
