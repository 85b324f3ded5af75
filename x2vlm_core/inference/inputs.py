"""User inputs → uint8 pixels the model's preprocessing takes: images [3, H, W], clips [F, 3, H, W].

Images: a path (str / Path) or the encoded bytes of an image file, a PIL image, or a numpy array / torch
tensor [H, W], [H, W, C] or [C, H, W] (C = 1, 3 or 4; alpha is dropped), uint8 in 0..255 or floating point
in [0, 1]. An array whose layout is ambiguous ([3, H, 3]) is read as numpy's / PIL's [H, W, C] for numpy and
as torch's [C, H, W] for tensors.
Clips: a path or the bytes of a video file, an array [F, H, W, C] / tensor [F, C, H, W], or a sequence of
images (one per frame).

Decoding goes through the data path's capped decoders (x2vlm_core/data/images.py, video.py): a huge image
is reduced while it is decoded, or refused, never held at full size. With `InputLimits.strict` (the
server) an image whose header declares more than `max_pixels`, or a file over `max_bytes`, is refused
before anything is decoded. Every failure is an InputError naming the input (`images[2]`) and what to do.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import Tensor

from x2vlm_core.data.errors import BadRecord
from x2vlm_core.data.images import DEFAULT_MAX_PIXELS, load_image
from x2vlm_core.data.video import decode_video

if TYPE_CHECKING:  # PIL is imported when an image is read, not with this module
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageInput",
    "InputError",
    "InputLimits",
    "VideoInput",
    "check_texts",
    "to_image",
    "to_video",
]

ImageInput = Union[str, Path, bytes, "Image.Image", np.ndarray, Tensor]
VideoInput = Union[str, Path, bytes, np.ndarray, Tensor, Sequence[ImageInput]]  # noqa: UP007 - `|` fails on a str

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"})
_FORMATS = "PNG, JPEG, WebP, BMP, GIF or TIFF"


class InputError(ValueError):
    """An input the pipeline cannot use; the message names the input and what to do about it.

    `field` is the input's name (`images[2]`, `texts[0]`), `status` the HTTP status the server answers with
    (413 for inputs over a size limit, 422 otherwise)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        self.field, self.status = field, status
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class InputLimits:
    """What one input may be: `max_pixels` decoded pixels per image or frame, `max_bytes` per encoded file
    (None = no limit) and `strict` (refuse an image over `max_pixels` instead of reducing it while decoding)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int | None = None
    strict: bool = False


def check_texts(texts: Sequence[str] | str, field: str = "texts") -> list[str]:
    """Texts as a list; a lone string, a non-string or a blank text is an InputError naming it."""
    if isinstance(texts, str):
        raise InputError(field, "give a list of texts, not one string (wrap it: [text])")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{field}[{i}]", f"a text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InputError(f"{field}[{i}]", "empty text; give at least one word")
        out.append(text)
    if not out:
        raise InputError(field, "no texts given; give at least one")
    return out


# ------------------------------------------------------------------ images
def to_image(value: ImageInput, field: str, limits: InputLimits = InputLimits()) -> Tensor:
    """One image input → uint8 [3, H, W] RGB (see the module docstring for what is accepted)."""
    if isinstance(value, (str, Path)):
        return _decode_image(_read_file(Path(value), field, limits, video=False), field, limits)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _check_bytes(len(data), field, limits)
        return _decode_image(data, field, limits)
    if isinstance(value, np.ndarray):
        return _from_array(torch.from_numpy(np.ascontiguousarray(value)), field, limits, channels_last=True)
    if isinstance(value, Tensor):
        return _from_array(value.detach().cpu(), field, limits, channels_last=False)
    if _is_pil(value):
        return _from_pil(value, field, limits)
    raise InputError(field, f"cannot read an image from a {type(value).__name__}; give a file path, encoded "
                     "bytes, a PIL image, or a numpy array / torch tensor")


def _is_pil(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "convert") and hasattr(value, "size")


def _check_bytes(size: int, field: str, limits: InputLimits) -> None:
    if size == 0:
        raise InputError(field, "empty file (0 bytes); send an image file")
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise InputError(field, f"{size:,} bytes is more than the {limits.max_bytes:,} accepted per file; "
                         "send a smaller (re-encoded or resized) file", status=413)


def _read_file(path: Path, field: str, limits: InputLimits, video: bool) -> bytes:
    if not path.is_file():
        raise InputError(field, f"no file {path}" + (" (it is a directory)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if not video and suffix in VIDEO_EXTENSIONS:
        raise InputError(field, f"{path} is a video; embed it with embed_videos (or `--videos`)")
    _check_bytes(path.stat().st_size, field, limits)
    return path.read_bytes()


def _header_size(data: bytes, field: str) -> tuple[int, int]:
    """(width, height) from the file's header, decoding nothing; unreadable or bomb-sized files refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
    except UnidentifiedImageError:
        known = _signature(data)
        if known:
            raise InputError(field, f"a corrupt or truncated {known} file; send it again or re-encode it") from None
        raise InputError(field, f"not an image file this pipeline can read; send {_FORMATS}") from None
    except Image.DecompressionBombError as error:
        raise InputError(field, f"the image is far too large to decode ({error}); resize it first",
                         status=413) from None
    except Exception as error:  # any parser failure on untrusted bytes is this input's fault
        raise InputError(field, f"unreadable image ({type(error).__name__}: {error}); send {_FORMATS}") from None


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature(data: bytes) -> str | None:
    """The format a file claims by its first bytes (so a broken PNG is not called 'not an image')."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def _decode_image(data: bytes, field: str, limits: InputLimits) -> Tensor:
    width, height = _header_size(data, field)
    if limits.strict and width * height > limits.max_pixels:
        raise InputError(field, f"{width}x{height} is {width * height / 1e6:.1f} megapixels, more than the "
                         f"{limits.max_pixels / 1e6:.1f} accepted; resize it first", status=413)
    try:
        return load_image(data, max_pixels=limits.max_pixels)
    except BadRecord as error:
        if error.reason == "image_too_large":
            raise InputError(field, f"{width}x{height} is too large to decode here ({error.detail}); resize it "
                             "first", status=413) from None
        raise InputError(field, f"unreadable image ({error.detail}); send {_FORMATS}") from None


def _from_pil(im: Any, field: str, limits: InputLimits) -> Tensor:
    width, height = im.size
    if width * height > limits.max_pixels:
        raise InputError(field, f"a {width}x{height} PIL image is more than the {limits.max_pixels:,} pixels "
                         "accepted; resize it first (Image.thumbnail)", status=413)
    if width == 0 or height == 0:
        raise InputError(field, f"empty {width}x{height} image")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # convert() would clip 16-bit values at 255
        array = np.asarray(im).astype(np.float64) / 65535.0
        return _from_array(torch.from_numpy(array.clip(0.0, 1.0)), field, limits, channels_last=True)
    rgb = im.convert("RGB")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _from_array(array: Tensor, field: str, limits: InputLimits, channels_last: bool) -> Tensor:
    """[H, W] / [H, W, C] / [C, H, W] numbers → uint8 [3, H, W]."""
    if array.dim() == 2:
        array = array[None]
    elif array.dim() == 3:
        hwc, chw = array.shape[-1] in (1, 3, 4), array.shape[0] in (1, 3, 4)
        if hwc and (channels_last or not chw):
            array = array.permute(2, 0, 1)
        elif not chw:
            raise InputError(field, f"an image array must be [H, W], [H, W, C] or [C, H, W] with C in 1, 3, 4; "
                             f"got shape {tuple(array.shape)}")
    else:
        raise InputError(field, f"an image array must have 2 or 3 dimensions, got shape {tuple(array.shape)} "
                         "(a batch? pass a list of images)")
    channels, height, width = array.shape
    if height == 0 or width == 0:
        raise InputError(field, f"empty image of shape {tuple(array.shape)}")
    if height * width > limits.max_pixels:
        raise InputError(field, f"{width}x{height} is more than the {limits.max_pixels:,} pixels accepted; "
                         "resize it first", status=413)
    array = array[:3] if channels == 4 else array.expand(3, -1, -1) if channels == 1 else array
    return _to_uint8(array, field).contiguous()


def _to_uint8(array: Tensor, field: str) -> Tensor:
    if array.dtype == torch.uint8:
        return array
    if array.dtype == torch.bool or array.is_complex():
        raise InputError(field, f"unsupported array dtype {array.dtype}; use uint8 (0..255) or float (0..1)")
    if array.is_floating_point():
        if not bool(torch.isfinite(array).all()):
            raise InputError(field, "the image array holds NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(field, f"a float image must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                             "divide by 255 or pass uint8")
        return (array.double() * 255.0).round().clamp(0, 255).to(torch.uint8)
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi > 255:
        raise InputError(field, f"an integer image must lie in 0..255, got values in [{lo}, {hi}]")
    return array.to(torch.uint8)


# ------------------------------------------------------------------ clips
def to_video(value: VideoInput, field: str, frames: int, limits: InputLimits = InputLimits()) -> Tensor:
    """One clip input → uint8 [F', 3, H, W] (a file decoded at `frames` frames over its length; arrays and
    image lists as given, F' ≥ 1: the pipeline samples `frames` of them)."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise InputError(field, f"{path} is an image; embed it with embed_images (or give a list of frames)")
        return _decode_clip(_read_file(path, field, limits, video=True), field, frames, limits)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _check_bytes(len(data), field, limits)
        return _decode_clip(data, field, frames, limits)
    if isinstance(value, (np.ndarray, Tensor)):
        array = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value.detach().cpu()
        if array.dim() != 4:
            raise InputError(field, f"a clip array must be [F, H, W, C] or [F, C, H, W], got shape "
                             f"{tuple(array.shape)}")
        return _stack([_from_array(f, f"{field}[{i}]", limits, isinstance(value, np.ndarray))
                       for i, f in enumerate(array)], field)
    if isinstance(value, Sequence):
        return _stack([to_image(f, f"{field}[{i}]", limits) for i, f in enumerate(value)], field)
    raise InputError(field, f"cannot read a clip from a {type(value).__name__}; give a video file path, its "
                     "bytes, an array [F, H, W, C] or a list of frames")


def _decode_clip(data: bytes, field: str, frames: int, limits: InputLimits) -> Tensor:
    try:
        return decode_video(data, frames=frames, max_pixels=limits.max_pixels)
    except BadRecord as error:
        raise InputError(field, f"unreadable video ({error.reason}: {error.detail}); send an MP4, WebM, MKV, "
                         "AVI or MOV file") from None


def _stack(frames: list[Tensor], field: str) -> Tensor:
    """Frames of one clip (any sizes) → [F, 3, H, W] at the first frame's size."""
    if not frames:
        raise InputError(field, "a clip needs at least one frame")
    height, width = frames[0].shape[-2:]
    if any(f.shape[-2:] != (height, width) for f in frames):
        from x2vlm_core.data.transforms import resize

        side = max(1, math.isqrt(int(height) * int(width)))  # frames of other sizes: one square size for all
        frames = [resize(f, side) for f in frames]
    return torch.stack(frames)
