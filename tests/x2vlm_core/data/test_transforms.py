"""Transforms keep boxes on the pixels they describe (checked by re-measuring a drawn rectangle) and texts right."""

from __future__ import annotations

import torch

from x2vlm_core.contracts import Concept, ConceptKind, Sample
from x2vlm_core.data.transforms import (
    SampleAugment,
    crop_boxes,
    flip_texts,
    hflip,
    normalise,
    random_crop_window,
    resize,
    resized_crop,
)


def draw(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A black image with a white filled rectangle [x0, x1) × [y0, y1) and its normalised box [1, 4]."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, y0:y1, x0:x1] = 255
    box = torch.tensor(
        [[(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]]
    )
    return image, box


def measure(image: torch.Tensor) -> torch.Tensor:
    """Normalised (cx, cy, w, h) of the bright pixels (> 127) of [3, H, W]."""
    bright = image[0] > 127
    rows = torch.where(bright.any(1))[0]
    cols = torch.where(bright.any(0))[0]
    h, w = image.shape[-2:]
    x0, x1, y0, y1 = cols.min().item(), cols.max().item() + 1, rows.min().item(), rows.max().item() + 1
    return torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])


def test_resize_keeps_normalised_box() -> None:
    image, box = draw(60, 90, 10, 20, 50, 41)
    out = resize(image, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    torch.testing.assert_close(measure(out), box[0], atol=1.5 / 32, rtol=0)
    assert resize(out, 32) is out  # already the right size: no work


def test_resize_is_antialiased_bilinear_within_one_level() -> None:
    """The CPU's uint8 kernel against antialiased bilinear in float (the other devices' path), on noise
    (where skipping the antialias or another filter is far off), for an image and a video's frames."""
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 75, 100), (2, 3, 50, 40)):
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        flat = image.reshape(-1, *shape[-3:]).float()
        want = torch.nn.functional.interpolate(flat, size=(24, 24), mode="bilinear", antialias=True)
        got = resize(image, 24)
        assert got.shape == (*shape[:-2], 24, 24) and got.dtype == torch.uint8
        assert (got.reshape(want.shape).float() - want).abs().max() <= 1.0


def test_crop_boxes_match_pixels_for_many_windows() -> None:
    gen = torch.Generator().manual_seed(0)
    image, box = draw(64, 80, 20, 16, 52, 40)
    checked = 0
    for _ in range(40):
        window = random_crop_window(64, 80, (0.3, 1.0), (0.75, 1.33), gen)
        new_box, keep = crop_boxes(box, window, 64, 80)
        top, left, h, w = window
        inside = image[:, top : top + h, left : left + w]
        visible = (inside[0] > 127).sum().item() / (32 * 24)
        assert bool(keep[0]) == (visible >= 0.5), (window, visible)
        if keep[0]:
            out = resized_crop(image, window, 48)
            torch.testing.assert_close(measure(out), new_box[0], atol=1.5 / 48 + 1e-6, rtol=0)
            checked += 1
    assert checked >= 10


def test_box_fully_outside_is_dropped_and_half_inside_kept() -> None:
    boxes = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]])
    out, keep = crop_boxes(boxes, (50, 50, 50, 50), 100, 100)  # bottom-right quarter
    assert keep.tolist() == [False, False]  # second box: exactly a quarter inside
    out, keep = crop_boxes(boxes, (40, 50, 60, 50), 100, 100)  # rows 40..100, cols 50..100
    assert keep.tolist() == [False, True]  # second box: half of it inside
    torch.testing.assert_close(out[1], torch.tensor([0.05 / 0.5, 0.1 / 0.6, 0.1 / 0.5, 0.2 / 0.6]))


def test_hflip_box_matches_pixels() -> None:
    image, box = draw(30, 40, 2, 5, 15, 25)
    flipped, fbox = hflip(image, box)
    torch.testing.assert_close(measure(flipped), fbox[0])
    assert abs(fbox[0, 0].item() - (1 - 8.5 / 40)) < 1e-6


def test_flip_texts_languages() -> None:
    assert flip_texts(("The Left dog, right of a LEFT cup", "leftover"), "en") == (
        "The Right dog, left of a RIGHT cup",
        "leftover",
    )
    assert flip_texts(("der Hund links, die rechte Tasse",), "de") == ("der Hund rechts, die linke Tasse",)
    assert flip_texts(("le chat à gauche",), "fr") == ("le chat à droite",)
    assert flip_texts(("tout droit",), "fr") is None  # ambiguous: no flip
    assert flip_texts(("左边的猫",), "zh") == ("右边的猫",)
    assert flip_texts(("a cat",), "xx") is None  # unknown language: never flip


def test_normalise_values() -> None:
    image = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = normalise(image, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([-1.0, 2.0, 0.0]))


def test_sample_augment_keeps_boxes_and_texts_consistent() -> None:
    image, box = draw(64, 64, 4, 20, 28, 44)  # rectangle in the left half
    concept = Concept(tuple(box[0].tolist()), "the left square", ConceptKind.OBJECT)
    sample = Sample("k", "s", image, None, ("a square on the left",), (concept,))
    augment = SampleAugment(size=32, scale=(0.7, 1.0), flip_prob=0.5)
    gen = torch.Generator().manual_seed(3)
    seen_flip = seen_plain = 0
    for _ in range(30):
        out = augment(sample, gen)
        assert out.image is not None and out.image.shape == (3, 32, 32)
        if not out.concepts:
            continue
        (c,) = out.concepts
        torch.testing.assert_close(measure(out.image), torch.tensor(c.box), atol=1.5 / 32 + 1e-6, rtol=0)
        if c.box[0] > 0.5:  # mirrored: the square is now on the right, and the texts say so
            assert out.captions == ("a square on the right",) and c.text == "the right square"
            seen_flip += 1
        else:
            assert out.captions == sample.captions and c.text == "the left square"
            seen_plain += 1
    assert seen_flip > 0 and seen_plain > 0
    # same seed → same result
    a = augment(sample, torch.Generator().manual_seed(7))
    b = augment(sample, torch.Generator().manual_seed(7))
    assert (
        a.image is not None
        and b.image is not None
        and torch.equal(a.image, b.image)
        and a.concepts == b.concepts
    )


def test_sample_augment_unknown_language_never_flips_and_video_frames_share_crop() -> None:
    frames = torch.zeros(3, 3, 40, 40, dtype=torch.uint8)
    frames[:, :, 10:30, 2:12] = 255
    sample = Sample("v", "s", None, frames, ("x",), (), language="xx")
    augment = SampleAugment(size=20, scale=(0.9, 1.0), flip_prob=1.0)
    out = augment(sample, torch.Generator().manual_seed(0))
    assert out.frames is not None and out.frames.shape == (3, 3, 20, 20)
    assert torch.equal(out.frames[0], out.frames[2])
    assert measure(out.frames[0])[0] < 0.5  # not mirrored
