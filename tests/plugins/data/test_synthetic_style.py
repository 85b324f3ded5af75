"""Synthetic styles (default, varied, foreign): tight boxes by pixels in every style, nameable colours, foreign
clearly different (light backgrounds, turned shapes, anti-aliasing, wider sizes), determinism, clips."""

from __future__ import annotations

import pytest
import torch

from plugins.data._synth_scene import RGB, Clip, Scene, Shape
from plugins.data._synth_style import render_frames, render_image
from plugins.data.synthetic import Synthetic, SyntheticConfig
from x2vlm_core.contracts import QASample, Sample

STYLES = ("default", "varied", "foreign")
PALETTE = torch.tensor(list(RGB.values()), dtype=torch.float32)  # [6, 3]
NAMES = list(RGB)


def make(**fields: object) -> Synthetic:
    return Synthetic(SyntheticConfig(**fields))  # type: ignore[arg-type]


def changed(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """[H, W] bool: pixels the objects changed."""
    return (image != background).any(0)


def bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.where(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def check_tight(image: torch.Tensor, background: torch.Tensor, shapes: tuple[Shape, ...], size: int) -> None:
    """Each object's changed pixels reach its box's four sides within a pixel and never leave box ± 1 px."""
    mask = changed(image, background)
    covered = torch.zeros_like(mask)
    for s in shapes:
        x0, y0, x1, y1 = s.x0, s.y0, s.x1, s.y1
        window = torch.zeros_like(mask)
        window[max(0, y0 - 1) : y1 + 2, max(0, x0 - 1) : x1 + 2] = True
        got = bounds(mask & window)
        assert all(abs(g - e) <= 1 for g, e in zip(got, (x0, y0, x1, y1), strict=True)), (s, got)
        covered |= window
    assert not (mask & ~covered).any(), "pixels changed outside every box ± 1 px"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [64, 160])
def test_boxes_are_tight_in_every_style(style: str, size: int) -> None:
    source = make(style=style, image_size=size, samples=40, seed=size)
    checked = 0
    for index, r in enumerate(source):
        assert isinstance(r, Sample) and r.image is not None and r.image.shape == (3, size, size)
        scene = source.scene(index)
        background = render_image(Scene(scene.background, ()), size, style, source.look_seed(index, 0))
        check_tight(r.image, background, scene.shapes, size)
        objects = [c for c in r.concepts if c.kind == 1]
        assert [c.box for c in objects] == [s.box(size) for s in scene.shapes]
        checked += len(scene.shapes)
    assert checked >= 60


@pytest.mark.parametrize("style", STYLES)
def test_colours_stay_nameable(style: str) -> None:
    source = make(style=style, image_size=96, samples=60, seed=2)
    for index, r in enumerate(source):
        assert isinstance(r, Sample) and r.image is not None
        for s in source.scene(index).shapes:
            centre = r.image[:, (s.y0 + s.y1) // 2, (s.x0 + s.x1) // 2].float()
            nearest = NAMES[int(((PALETTE - centre) ** 2).sum(1).argmin())]
            assert nearest == s.colour, (style, s, centre.tolist())


@pytest.mark.parametrize("kind", ["vqa", "nlvr2", "refexp", "composition"])
@pytest.mark.parametrize("style", ["varied", "foreign"])
def test_task_kinds_are_tight_in_every_style(kind: str, style: str) -> None:
    source = make(kind=kind, style=style, samples=10, seed=3)
    for index, r in enumerate(source):
        plan = source.plan(index)
        if isinstance(r, QASample):
            scenes = [plan.visual]  # type: ignore[union-attr]
        else:
            scenes = [plan.scene] if hasattr(plan, "scene") else list(plan.scenes)  # type: ignore[union-attr]
        images = [r.image] if isinstance(r, (QASample, Sample)) else list(r.images)  # type: ignore[union-attr]
        for part, (scene, image) in enumerate(zip(scenes, images, strict=True)):
            background = render_image(Scene(scene.background, ()), 64, style, source.look_seed(index, part))
            check_tight(image, background, scene.shapes, 64)
    assert source.name == f"synthetic-{kind}-{style}-train"


@pytest.mark.parametrize("style", ["varied", "foreign"])
def test_styled_clips_share_one_look_and_stay_tight(style: str) -> None:
    source = make(kind="video", style=style, frames=4, samples=8, seed=5)
    for index, r in enumerate(source):
        assert isinstance(r, Sample) and r.frames is not None and r.frames.shape == (4, 3, 64, 64)
        clip = source.clip(index)
        empty = render_frames(Clip(clip.background, ()), 64, 4, style, source.look_seed(index, 0))
        assert all(torch.equal(empty[0], f) for f in empty)  # one background for every frame
        for f in range(4):
            check_tight(r.frames[f], empty[f], tuple(m.at(f) for m in clip.movers), 64)


def side_ratios(style: str, n: int = 150) -> list[float]:
    source = make(style=style, samples=n, image_size=128, seed=9)
    return [(s.x1 - s.x0 + 1) / 128 for i in range(n) for s in source.scene(i).shapes]


def blended_shapes(source: Synthetic, style: str) -> int:
    """How many shapes have changed pixels far (> 60 per channel) from their fill: anti-aliased edges, outlines."""
    n = 0
    for index, r in enumerate(source):
        assert isinstance(r, Sample) and r.image is not None
        scene = source.scene(index)
        mask = changed(r.image, render_image(Scene(scene.background, ()), 96, style, source.look_seed(index, 0)))
        for s in scene.shapes:
            region = r.image[:, s.y0 : s.y1 + 1, s.x0 : s.x1 + 1].float()
            fill = torch.tensor(RGB[s.colour], dtype=torch.float32)[:, None, None]
            n += bool((((region - fill).abs().amax(0) > 60) & mask[s.y0 : s.y1 + 1, s.x0 : s.x1 + 1]).any())
    return n


def test_foreign_is_clearly_different() -> None:
    sources = {s: make(style=s, samples=60, seed=1, image_size=96) for s in STYLES}
    assert blended_shapes(sources["default"], "default") == 0 and blended_shapes(sources["varied"], "varied") == 0
    assert blended_shapes(sources["foreign"], "foreign") >= 60
    foreign, corners, turned, squares = sources["foreign"], [], 0, 0
    for index, r in enumerate(foreign):
        assert isinstance(r, Sample) and r.image is not None
        corners.append(r.image[:, :4, :4].float().mean().item())
        scene = foreign.scene(index)
        mask = changed(r.image, render_image(Scene(scene.background, ()), 96, "foreign", foreign.look_seed(index, 0)))
        for s in scene.shapes:
            if s.shape == "square" and s.x1 - s.x0 >= 12:
                squares += 1  # a turned square leaves its box's corners empty
                turned += mask[s.y0 : s.y1 + 1, s.x0 : s.x1 + 1].float().mean().item() < 0.97
    assert min(corners) > 140  # light backgrounds only
    assert squares >= 5 and turned >= 0.5 * squares, (turned, squares)
    # much smaller and much larger shapes than the default's 0.14–0.38 of the image side
    assert min(side_ratios("foreign")) < 0.10 and max(side_ratios("foreign")) > 0.45
    assert min(side_ratios("default")) >= 0.13 and max(side_ratios("default")) <= 0.39
    assert min(side_ratios("varied")) < 0.13 and max(side_ratios("varied")) > 0.40


def test_varied_backgrounds_vary_and_styles_are_deterministic() -> None:
    images = [r.image for r in make(style="varied", samples=60) if isinstance(r, Sample) and r.image is not None]
    corners = {tuple(image[:, 0, 0].tolist()) for image in images}
    assert len(corners) >= 40  # pastels, gradients, noise, stripes: far more than the 6 default backgrounds
    for style in ("varied", "foreign"):
        a = [r.image for r in make(style=style, samples=5, seed=4)]  # type: ignore[union-attr]
        b = [r.image for r in make(style=style, samples=5, seed=4)]  # type: ignore[union-attr]
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    plain = [r.image for r in make(samples=5, seed=4)]  # type: ignore[union-attr]
    assert not any(torch.equal(x, y) for x, y in zip(a, plain, strict=True))
