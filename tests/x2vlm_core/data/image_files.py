"""PNG files PIL cannot write, for the image tests: 16 bits per channel (grey or RGB), and headers that
claim any size over a few hundred bytes of data."""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["png_bytes", "png_claiming"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 or uint16 pixels [H, W] (grey) or [H, W, 3] (RGB), at 8 or 16 bits per channel."""
    depth = 16 if pixels.dtype == np.uint16 else 8
    colour = 2 if pixels.ndim == 3 else 0
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose PNG header claims width × height 8-bit grey pixels (the data is cut short)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1000)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
