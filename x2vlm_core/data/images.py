"""Image decoding for the data sources: any file PIL reads → uint8 [3, H, W] RGB with H × W ≤ max_pixels.

Every way decoding can fail is a `BadRecord`, never an exception that stops training:
"missing_file", "unreadable_image" (corrupt, truncated, not an image, a decompression bomb PIL refuses
at open: a header claiming more than 2 × PIL's MAX_IMAGE_PIXELS) or "image_too_large" (more pixels than
we are willing to decode).

A JPEG within the cap is decoded by torchvision where it can (the same pixels, straight into a tensor:
the loader's JPEG path reads ~1.7× as many images a second as through PIL).
Huge images are reduced while decoding: a JPEG is decoded at 1/2, 1/4 or 1/8 scale (PIL's `draft`),
so a 10000 × 10000 photo is never held at full size; other formats are decoded in full and then
reduced by an integer factor (`Image.reduce`) before the colour conversion. Formats without reduced
decoding are decoded in full only up to `FULL_DECODE_FACTOR × max_pixels`; larger ones are refused.
PIL's DecompressionBombWarning is silenced here because these limits, checked from the header before
anything is decoded, replace it.

16-bit images (modes I;16*, and I as PIL opens 16-bit greyscale) are scaled to 8 bit (v · 255 / 65535);
48-bit RGB PNGs already arrive as 8-bit RGB from PIL.

Boxes in pixel coordinates refer to the file's own size, not to the reduced image: sources that
normalise such boxes use `load_image_sized`, which also returns the size stored in the file.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from x2vlm_core.data.errors import BadRecord

if TYPE_CHECKING:  # PIL is imported when an image is read, not with this module
    from PIL import Image

__all__ = ["DEFAULT_MAX_PIXELS", "FULL_DECODE_FACTOR", "LoadedImage", "load_image", "load_image_sized"]

DEFAULT_MAX_PIXELS = 4096 * 4096
FULL_DECODE_FACTOR = 4  # how far above max_pixels an image without reduced decoding may be decoded
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class LoadedImage(NamedTuple):
    """A decoded image: pixels uint8 [3, H, W] (maybe reduced) and the width × height stored in the file."""

    pixels: Tensor
    width: int
    height: int


def load_image(path: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Read an image file (or encoded bytes) → uint8 [3, H, W] RGB with H·W ≤ max_pixels.

    Raises BadRecord "missing_file", "unreadable_image" or "image_too_large" (see the module docstring).
    """
    return load_image_sized(path, max_pixels).pixels


def load_image_sized(path: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """load_image, plus the file's own width and height (the pixel space of boxes annotated on it)."""
    from PIL import Image

    if max_pixels < 1:
        raise ValueError(f"load_image: max_pixels must be ≥ 1 (got {max_pixels})")
    name = "<bytes>" if isinstance(path, bytes) else str(path)
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise BadRecord("missing_file", name)
    decode_jpeg = _jpeg_decoder()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # torchvision 0.29 marks its decoders deprecated (on every call); without them, PIL decodes
            warnings.simplefilter("ignore", DeprecationWarning)
            with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
                width, height = im.size  # before draft() shrinks it
                if decode_jpeg is not None and im.format == "JPEG" and width * height <= max_pixels:
                    data = path if isinstance(path, bytes) else Path(path).read_bytes()
                    try:
                        return LoadedImage(decode_jpeg(data), width, height)
                    except RuntimeError:  # a JPEG it cannot read: PIL decides, and names the reason
                        pass
                rgb = _decode(im, max_pixels, name)
    except BadRecord:
        raise
    except Exception as error:  # any decoder failure on untrusted bytes is one bad record, not a crash
        raise BadRecord("unreadable_image", f"{name}: {type(error).__name__}: {error}") from error
    array = np.array(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadRecord("unreadable_image", f"{name}: empty image {array.shape}")
    return LoadedImage(torch.from_numpy(array).permute(2, 0, 1).contiguous(), width, height)


@functools.cache
def _jpeg_decoder() -> Callable[[bytes], Tensor] | None:
    """JPEG bytes → uint8 [3, H, W] RGB (channel-last in memory) by torchvision's libjpeg-turbo decoder: the
    pixels PIL gives (tested), straight into a tensor, no PIL image, array and transposing copy in between;
    truncated or corrupt data raises RuntimeError. None where this torchvision has no CPU JPEG decoder."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError):  # not installed, or its image extension did not load
        return None

    def decode(data: bytes) -> Tensor:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)

    return decode


def _decode(im: Image.Image, max_pixels: int, name: str) -> Image.Image:
    """Open image → decoded RGB image under the cap (drafted, loaded, made 8-bit, reduced, converted)."""
    width, height = im.size
    if width * height > max_pixels:
        scale = next((s for s in (2, 4, 8) if math.ceil(width / s) * math.ceil(height / s) <= max_pixels), 8)
        # a no-op for formats that cannot decode at a reduced size (everything but JPEG)
        im.draft(im.mode, (max(1, width // scale), max(1, height // scale)))
    width, height = im.size
    if width * height > FULL_DECODE_FACTOR * max_pixels:
        raise BadRecord(
            "image_too_large",
            f"{name}: {width}x{height} would be decoded in full, more than {FULL_DECODE_FACTOR} x max_pixels "
            f"({max_pixels}); raise max_pixels to read it",
        )
    im.load()  # decode now: truncated files fail here, not later in a worker
    image = _eight_bit(im)
    factor = _reduce_factor(width, height, max_pixels)
    if factor > 1:
        try:
            image = image.reduce(factor)
        except ValueError:  # a mode reduce() does not support: convert first, then reduce
            image = image.convert("RGB").reduce(factor)
    return image.convert("RGB")


def _eight_bit(im: Image.Image) -> Image.Image:
    """16-bit modes (convert("RGB") clips them) → L; palettes → RGB or RGBA; other modes as they are."""
    from PIL import Image

    if im.mode in _SIXTEEN_BIT:
        # convert() would clip 16-bit values at 255 (an almost white image); scale the range instead
        return Image.fromarray(_sixteen_to_eight(np.asarray(im)))
    if im.mode in ("P", "PA"):
        # straight to RGB, PIL warns about palettes whose transparency is given per entry
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    return im


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """[H, W] integers in 0..65535 (clipped) → uint8 round(v · 255 / 65535), a block of rows at a time so the
    wide temporaries stay small for a large image."""
    out = np.empty(values.shape, dtype=np.uint8)
    rows = max(1, (1 << 20) // max(1, values.shape[1]))
    for start in range(0, values.shape[0], rows):
        block = np.clip(values[start : start + rows], 0, 65535).astype(np.uint32)
        out[start : start + rows] = (block * 255 + 32767) // 65535
    return out


def _reduce_factor(width: int, height: int, max_pixels: int) -> int:
    """The smallest integer f with ceil(W/f) · ceil(H/f) ≤ max_pixels (what Image.reduce(f) returns)."""
    factor = max(1, math.isqrt(width * height // max_pixels))
    while math.ceil(width / factor) * math.ceil(height / factor) > max_pixels:
        factor += 1
    return factor
