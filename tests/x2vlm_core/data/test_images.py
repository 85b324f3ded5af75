"""load_image: 16-bit scaling, decompression bombs, the pixel cap (JPEG draft, reduce), every failure a BadRecord."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from image_files import png_bytes, png_claiming
from PIL import Image, ImageFile

from x2vlm_core.data.images import DEFAULT_MAX_PIXELS, FULL_DECODE_FACTOR, load_image, load_image_sized
from x2vlm_core.data.records import BadRecord


@pytest.fixture
def loaded_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The size of every image PIL decodes (ImageFile.load) during the test."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    yield sizes


def reason(data: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    with pytest.raises(BadRecord) as bad:
        load_image(data, max_pixels)
    return bad.value.reason


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    grey = np.tile(ramp, (8, 1))  # [8, 256], 0 … 65535 left to right
    out = load_image(png_bytes(grey))
    assert Image.open(io.BytesIO(png_bytes(grey))).mode == "I;16"
    assert out.shape == (3, 8, 256) and out.dtype == torch.uint8
    assert out[:, :, 0].eq(0).all() and out[:, :, -1].eq(255).all()
    expected = torch.from_numpy(np.round(ramp / 257.0).astype(np.uint8))
    assert torch.equal(out[0, 3], expected) and torch.equal(out[0], out[2])
    assert abs(out.float().mean().item() - 127.5) < 0.6  # was 254.5: convert("RGB") clips at 255


def test_large_sixteen_bit_image_is_scaled_block_by_block() -> None:
    rows = (np.arange(1100, dtype=np.uint32) * 61) % 65536  # 1100 rows × 2048: converted in 3 blocks of rows
    grey = np.repeat(rows[:, None], 2048, axis=1).astype(np.uint16)
    out = load_image(png_bytes(grey))
    assert out.shape == (3, 1100, 2048)
    assert torch.equal(out[0, :, 7], torch.from_numpy(np.round(rows / 257.0).astype(np.uint8)))


def test_mode_i_images_are_scaled_like_sixteen_bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535, 70000, -5]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "i.tiff")  # 32-bit integer TIFF: mode I
    assert Image.open(tmp_path / "i.tiff").mode == "I"
    assert load_image(tmp_path / "i.tiff")[0, 0].tolist() == [0, 1, 128, 255, 255, 0]  # clipped to 16 bit


def test_48_bit_rgb_png_keeps_its_colours() -> None:
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)
    rgb = np.stack([np.tile(ramp, (4, 1)), np.full((4, 64), 65535, np.uint16), np.zeros((4, 64), np.uint16)], -1)
    out = load_image(png_bytes(rgb))
    assert out.shape == (3, 4, 64)
    assert out[1].eq(255).all() and out[2].eq(0).all()
    assert abs(out[0].float().mean().item() - 127.5) < 1.0


def test_bomb_headers_are_counted_never_raised() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping load_image would now fail the test
        bomb = reason(png_claiming(20_000, 20_000))  # 400 Mpx: PIL's DecompressionBombError at open
        big = reason(png_claiming(10_000, 10_000))  # 100 Mpx: PIL only warns; too large to decode in full
    assert (bomb, big) == ("unreadable_image", "image_too_large")
    with pytest.raises(BadRecord, match="DecompressionBombError"):
        load_image(png_claiming(20_000, 20_000))


def test_huge_jpeg_is_drafted_never_decoded_at_full_size(
    tmp_path: Path, loaded_sizes: list[tuple[int, int]]
) -> None:
    path = tmp_path / "huge.jpg"
    Image.new("L", (10_000, 10_000), 140).save(path, quality=50)
    loaded_sizes.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 100 Mpx is above PIL's warning limit
        out = load_image(path)
    assert set(loaded_sizes) == {(2500, 2500)}  # decoded at 1/4 scale: 6.25 Mpx under the 16.8 Mpx cap
    assert out.shape == (3, 2500, 2500) and abs(out.float().mean().item() - 140) < 2


def test_small_cap_drafts_then_reduces(tmp_path: Path, loaded_sizes: list[tuple[int, int]]) -> None:
    Image.new("RGB", (1000, 800), (10, 200, 30)).save(tmp_path / "a.jpg", quality=90)
    out, width, height = load_image_sized(tmp_path / "a.jpg", max_pixels=5000)
    assert set(loaded_sizes) == {(125, 100)}  # 1/8 is JPEG's limit: still 12500 px, so reduce(2) follows
    assert (width, height) == (1000, 800)  # the file's size, which pixel boxes refer to
    assert out.shape == (3, 50, 63) and out.shape[1] * out.shape[2] <= 5000
    assert (out.float().mean(dim=(1, 2)) - torch.tensor([10.0, 200.0, 30.0])).abs().max() < 4


@pytest.mark.parametrize("mode", ["RGB", "P", "L", "RGBA", "1"])
def test_png_over_the_cap_is_reduced_before_conversion(mode: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (90, 60), (255, 255, 255)).convert(mode).save(buffer, format="PNG")
    out = load_image(buffer.getvalue(), max_pixels=1500)  # 5400 px: reduce(2) → 45 × 30
    assert out.shape == (3, 30, 45) and out.eq(255).all()


def test_palette_with_partial_transparency_loads_without_warnings() -> None:
    im = Image.new("P", (30, 20), 1)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] * 85)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", transparency=bytes([100, 128, 200]))  # tRNS with several alphas: bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such an image is converted straight to RGB
        full = load_image(buffer.getvalue())
        reduced = load_image(buffer.getvalue(), max_pixels=150)
    assert full.shape == (3, 20, 30) and full[:, 0, 0].tolist() == [0, 255, 0]
    assert reduced.shape == (3, 10, 15) and reduced[:, 0, 0].tolist() == [0, 255, 0]


def test_only_images_far_above_the_cap_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 7).save(buffer, format="PNG")  # 1600 px
    assert load_image(buffer.getvalue(), max_pixels=1600 // FULL_DECODE_FACTOR).shape == (3, 20, 20)
    assert reason(buffer.getvalue(), max_pixels=1600 // FULL_DECODE_FACTOR - 1) == "image_too_large"
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(buffer.getvalue(), max_pixels=0)


def test_every_decode_failure_is_unreadable_image(tmp_path: Path) -> None:
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(good, format="JPEG")
    data = good.getvalue()
    cases = {
        "truncated jpeg": data[: len(data) // 2],
        "junk": b"\xff\xd8garbage",
        "empty": b"",
        "png header only": png_claiming(50, 50),
        "text": b"not an image at all",
    }
    for label, blob in cases.items():
        assert reason(blob) == "unreadable_image", label
    assert reason(tmp_path / "absent.png") == "missing_file"


@pytest.mark.parametrize("mode,subsampling", [("RGB", 0), ("RGB", 2), ("L", 0), ("CMYK", 0)])
def test_jpegs_within_the_cap_decode_to_the_pixels_pil_gives(
    mode: str, subsampling: int, loaded_sizes: list[tuple[int, int]]
) -> None:
    """The fast decoder (torchvision's) of a JPEG under the cap gives PIL's own pixels, PIL decoding none."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(noise).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, **({"subsampling": subsampling} if mode == "RGB" else {}))
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    loaded_sizes.clear()
    out, width, height = load_image_sized(data)
    assert loaded_sizes == []  # not through PIL's decoder
    assert (width, height) == (64, 48) and out.dtype == torch.uint8 and out.shape == (3, 48, 64)
    assert torch.equal(out, expected)


def _noise_jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    noise = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_a_jpeg_cut_inside_its_image_data_is_unreadable() -> None:
    """Past the header: PIL opens it and reads its size, the fast decoder meets the cut and PIL, asked next,
    names it."""
    data = _noise_jpeg()
    cut = data[: 2 * len(data) // 3]
    with Image.open(io.BytesIO(cut)) as im:
        assert im.size == (256, 256)
    with pytest.raises(BadRecord, match="truncated") as bad:
        load_image(cut)
    assert bad.value.reason == "unreadable_image"


def test_without_torchvisions_decoder_pil_decodes_the_same_pixels(
    monkeypatch: pytest.MonkeyPatch, loaded_sizes: list[tuple[int, int]]
) -> None:
    import x2vlm_core.data.images as images

    data = _noise_jpeg((64, 48))
    fast = load_image(data)
    assert loaded_sizes == []
    monkeypatch.setattr(images, "_jpeg_decoder", lambda: None)
    assert torch.equal(load_image(data), fast) and set(loaded_sizes) == {(64, 48)}
