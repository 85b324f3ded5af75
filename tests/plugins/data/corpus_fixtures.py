"""Small real-format files (images, videos, JSON) for the corpus data-plugin tests, corrupted ones included."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from x2vlm_core.contracts import Sample

__all__ = [
    "collect",
    "image_bytes",
    "write_image",
    "write_json",
    "write_jsonl",
    "write_mp4",
    "write_truncated",
]


def image_bytes(
    width: int, height: int, fmt: str = "PNG", colour: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, width: int, height: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(width, height, fmt))
    return path


def write_truncated(path: Path, width: int = 64, height: int = 48, fmt: str = "JPEG") -> Path:
    """An image cut in half: the header reads, decoding fails."""
    data = image_bytes(width, height, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_json(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def write_jsonl(path: Path, lines: list[object | bytes]) -> Path:
    """Objects are dumped as JSON; bytes are written as they are (bad JSON, non-UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=False).encode())
            handle.write(b"\n")
    return path


def write_mp4(path: Path, seconds: int, fps: int, width: int = 32, height: int = 24) -> Path:
    """Solid-grey frames whose level changes every second (20 + 50 · second)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            array = np.full((height, width, 3), 20 + 50 * (i // fps), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def collect(source: object, caplog: object | None = None) -> list[Sample]:
    """Iterate a source fully (warnings captured when caplog is given)."""
    if caplog is not None:
        caplog.set_level(logging.WARNING, logger="x2vlm.data")  # type: ignore[attr-defined]
    return list(source)  # type: ignore[call-overload]
