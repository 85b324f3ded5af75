"""Write Samples as webdataset tar shards: `<key>.png` (image) or `<key>.mp4` (clip) plus `<key>.json`.

The json part holds `key`, `source`, `captions`, `language` and `concepts` [{box: [cx, cy, w, h],
text, kind, attributes?}] with kind one of "image", "object", "region", "video" (attributes only when
the concept has some). Each shard is written under a
temporary name and renamed when complete, so a reader never sees half a shard. Members carry fixed
metadata (mtime 0, mode 0644), so the same samples give byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from x2vlm_core.contracts import Concept, Sample

__all__ = ["SHARD_PATTERN", "encode_png", "encode_video", "record_json", "write_shards"]

SHARD_PATTERN = "shard-%06d.tar"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")  # webdataset splits member names at the first dot


def encode_png(image: Tensor) -> bytes:
    """uint8 [3, H, W] → PNG bytes (lossless)."""
    from PIL import Image

    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"encode_png: expected uint8 [3, H, W], got {image.dtype} {tuple(image.shape)}")
    array = np.ascontiguousarray(image.numpy().transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_video(frames: Tensor, fps: int = 1, crf: int = 12) -> bytes:
    """uint8 [F, 3, H, W] (H, W even) → H.264 mp4 bytes at `fps` frames per second (lossy)."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a declared dependency
        raise ImportError("writing video shards needs PyAV: pip install av") from error
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"encode_video: expected uint8 [F, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    height, width = int(frames.shape[2]), int(frames.shape[3])
    if height % 2 or width % 2:
        raise ValueError(f"encode_video: H.264 needs even frame sizes, got {height}x{width}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for array in np.ascontiguousarray(frames.numpy().transpose(0, 2, 3, 1)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def record_json(sample: Sample) -> dict[str, Any]:
    """The json part of a record."""
    return {
        "key": sample.key,
        "source": sample.source,
        "captions": list(sample.captions),
        "language": sample.language,
        "concepts": [_concept_json(c) for c in sample.concepts],
    }


def _concept_json(concept: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {"box": [float(v) for v in concept.box], "text": concept.text,
                           "kind": concept.kind.name.lower()}
    if concept.attributes:
        out["attributes"] = list(concept.attributes)
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _open_shard(out: Path, index: int) -> tuple[tarfile.TarFile, Path, Path]:
    final = out / (SHARD_PATTERN % index)
    temp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    return tarfile.open(temp, "w"), temp, final


def write_shards(samples: Iterable[Sample], out_dir: str | Path, shard_size: int) -> list[Path]:
    """Write samples into `out_dir/shard-%06d.tar`, `shard_size` records each; returns the shard paths.

    Keys become member names with characters other than letters, digits, '_', '-', '/' replaced by
    '_' (the original key stays in the json); a key repeated inside one shard is an error.
    """
    if shard_size < 1:
        raise ValueError(f"write_shards: shard_size must be ≥ 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tar: tarfile.TarFile | None = None
    temp = final = Path()
    keys: set[str] = set()
    try:
        for count, sample in enumerate(samples):
            if count % shard_size == 0:
                if tar is not None:
                    tar.close()
                    os.replace(temp, final)
                    paths.append(final)
                tar, temp, final = _open_shard(out, len(paths))
                keys = set()
            assert tar is not None
            key = _KEY_UNSAFE.sub("_", sample.key).strip("/") or f"record{count:09d}"
            if key in keys:
                raise ValueError(f"write_shards: key {sample.key!r} occurs twice in {final.name}")
            keys.add(key)
            if sample.image is not None:
                _add(tar, f"{key}.png", encode_png(sample.image))
            elif sample.frames is not None:
                _add(tar, f"{key}.mp4", encode_video(sample.frames))
            else:
                raise ValueError(f"write_shards: sample {sample.key!r} has neither image nor frames")
            _add(tar, f"{key}.json", json.dumps(record_json(sample), ensure_ascii=False).encode("utf-8"))
        if tar is not None:
            tar.close()
            tar = None
            os.replace(temp, final)
            paths.append(final)
    finally:
        if tar is not None:  # an error mid-shard: drop the partial file, keep the finished shards
            tar.close()
            temp.unlink(missing_ok=True)
    return paths
