"""User inputs → uint8 pixels: every accepted form gives the same pixels; every bad one a clear InputError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from x2vlm_core.data.shards import encode_video
from x2vlm_core.inference.inputs import InputError, InputLimits, check_texts, to_image, to_video

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (30, 50, 3), dtype=np.uint8)  # H = 30, W = 50: layouts cannot be confused
EXPECTED = torch.from_numpy(PIXELS).permute(2, 0, 1)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_image_form_gives_the_same_pixels(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png(PIXELS))
    forms = {
        "str path": str(path), "Path": path, "bytes": path.read_bytes(), "PIL": Image.fromarray(PIXELS),
        "numpy HWC": PIXELS, "tensor CHW": EXPECTED.clone(), "numpy float": PIXELS / 255.0,
        "tensor float": EXPECTED.float() / 255.0, "numpy RGBA": np.dstack([PIXELS, np.full((30, 50), 7, np.uint8)]),
    }
    for name, value in forms.items():
        out = to_image(value, "images[0]")
        assert out.dtype == torch.uint8 and out.shape == (3, 30, 50), name
        assert torch.equal(out, EXPECTED), name


def test_greyscale_and_sixteen_bit_images_become_rgb() -> None:
    grey = PIXELS[..., 0]
    out = to_image(grey, "g")
    assert out.shape == (3, 30, 50) and torch.equal(out[0], out[2]) and torch.equal(out[1], torch.from_numpy(grey))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # 255 → 65535: must not clip to white
    assert sixteen.mode.startswith("I;16")
    assert torch.equal(to_image(sixteen, "s")[0], torch.from_numpy(grey))


@pytest.mark.parametrize(("value", "needle"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt or truncated PNG"),  # a corrupt PNG
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image file"),  # unsupported format
    (b"", "empty file"),
])
def test_bad_files_are_input_errors_naming_the_input(value: bytes, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as caught:
        to_image(value, "images[3]")
    assert caught.value.field == "images[3]" and str(caught.value).startswith("images[3]: ")
    assert caught.value.status == 422


def test_truncated_image_is_refused() -> None:
    data = _png(PIXELS)
    with pytest.raises(InputError, match="unreadable image"):
        to_image(data[: len(data) // 2], "images[0]")


def test_a_20000_pixel_square_image_is_refused_before_decoding(huge_png: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="too large") as caught:
        to_image(huge_png, "image")
    assert caught.value.status == 413
    # nothing near 400 MP was held: the peak memory grew by far less than one decoded copy (1.2 GB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300_000  # KiB


def test_strict_limits_refuse_instead_of_reducing(tmp_path: Path) -> None:
    big = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    data = _png(big)
    # not strict: reduced while decoding to fit the pixel budget
    reduced = to_image(data, "i", InputLimits(max_pixels=40_000))
    assert reduced.shape[1] * reduced.shape[2] <= 40_000 and reduced.shape[2] > reduced.shape[1]
    with pytest.raises(InputError, match=r"400x300 is 0\.1 megapixels") as caught:
        to_image(data, "i", InputLimits(max_pixels=40_000, strict=True))
    assert caught.value.status == 413
    with pytest.raises(InputError, match="bytes is more than") as caught:
        to_image(data, "i", InputLimits(max_bytes=100))
    assert caught.value.status == 413


@pytest.mark.parametrize(("value", "needle"), [
    (np.zeros((2, 30, 50, 3), np.uint8), "2 or 3 dimensions"),
    (np.zeros((30, 50, 5), np.uint8), "C in 1, 3, 4"),
    (np.full((30, 50, 3), 2.0), "must lie in \\[0, 1\\]"),
    (np.full((30, 50, 3), np.nan), "NaN"),
    (np.full((30, 50, 3), 300, np.int32), "0..255"),
    (np.zeros((0, 50, 3), np.uint8), "empty image"),
    (12, "cannot read an image from a int"),
])
def test_bad_arrays_are_input_errors(value: object, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        to_image(value, "images[0]")  # type: ignore[arg-type]


def test_missing_file_and_video_given_as_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no file"):
        to_image(tmp_path / "nope.png", "images[0]")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    with pytest.raises(InputError, match="is a video"):
        to_image(clip, "images[0]")


def test_clips_from_files_arrays_and_frame_lists(tmp_path: Path) -> None:
    frames = torch.from_numpy(RNG.integers(0, 256, (4, 3, 32, 48), dtype=np.uint8))
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_video(frames, fps=2))
    decoded = to_video(path, "videos[0]", frames=3)
    assert decoded.shape == (3, 3, 32, 48) and decoded.dtype == torch.uint8
    assert torch.equal(to_video(frames, "v", 3), frames)
    assert torch.equal(to_video(frames.permute(0, 2, 3, 1).numpy(), "v", 3), frames)  # numpy [F, H, W, C]
    assert torch.equal(to_video(list(frames), "v", 3), frames)
    with pytest.raises(InputError, match="unreadable video"):
        to_video(b"not a video", "videos[1]", 3)
    with pytest.raises(InputError, match="is an image"):
        to_video(tmp_path / "x.png", "videos[0]", 3)
    with pytest.raises(InputError, match="at least one frame"):
        to_video([], "videos[0]", 3)


def test_texts_are_checked() -> None:
    assert check_texts(["a", "b c"]) == ["a", "b c"]
    with pytest.raises(InputError, match=r"texts\[1\]: empty text"):
        check_texts(["a", "   "])
    with pytest.raises(InputError, match="not one string"):
        check_texts("a red circle")
    with pytest.raises(InputError, match="no texts"):
        check_texts([])
    with pytest.raises(InputError, match=r"labels\[0\]: a text must be a string"):
        check_texts([3], "labels")  # type: ignore[list-item]
