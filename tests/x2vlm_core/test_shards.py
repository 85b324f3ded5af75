"""Shard writer: layout, json fields, lossless png, deterministic bytes, atomic writes, video encoding."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from x2vlm_core.contracts import Concept, ConceptKind, Sample
from x2vlm_core.data.shards import encode_png, encode_video, record_json, write_shards
from x2vlm_core.data.video import decode_video


def image_sample(i: int, key: str | None = None) -> Sample:
    g = torch.Generator().manual_seed(i)
    image = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8, generator=g)
    concepts = (Concept((0.5, 0.25, 0.5, 0.5), f"thing {i}", ConceptKind.OBJECT),
                Concept((0.4, 0.5, 0.8, 1.0), f"région {i}", ConceptKind.REGION))
    return Sample(key or f"rec-{i:03d}", "test", image, None, (f"caption {i}", "другой"), concepts, "fr")


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_layout_counts_and_no_temp_files(tmp_path: Path) -> None:
    paths = write_shards((image_sample(i) for i in range(7)), tmp_path / "out", shard_size=3)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]
    sizes = [len(members(p)) for p in paths]
    assert sizes == [6, 6, 2]  # png + json per record
    names = list(members(paths[0]))
    assert names == ["rec-000.png", "rec-000.json", "rec-001.png", "rec-001.json", "rec-002.png", "rec-002.json"]


def test_json_fields_and_lossless_png(tmp_path: Path) -> None:
    sample = image_sample(4)
    (path,) = write_shards([sample], tmp_path, shard_size=10)
    parts = members(path)
    meta = json.loads(parts["rec-004.json"].decode("utf-8"))
    assert meta == {
        "key": "rec-004", "source": "test", "captions": ["caption 4", "другой"], "language": "fr",
        "concepts": [{"box": [0.5, 0.25, 0.5, 0.5], "text": "thing 4", "kind": "object"},
                     {"box": [0.4, 0.5, 0.8, 1.0], "text": "région 4", "kind": "region"}],
    }
    assert meta == record_json(sample)
    decoded = np.asarray(Image.open(io.BytesIO(parts["rec-004.png"])).convert("RGB"))
    assert torch.equal(torch.from_numpy(decoded.copy()).permute(2, 0, 1), sample.image)


def test_same_samples_give_identical_bytes(tmp_path: Path) -> None:
    a = write_shards((image_sample(i) for i in range(5)), tmp_path / "a", shard_size=2)
    b = write_shards((image_sample(i) for i in range(5)), tmp_path / "b", shard_size=2)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_keys_are_made_safe_and_kept_in_json(tmp_path: Path) -> None:
    (path,) = write_shards([image_sample(1, key="coco/img.0001.jpg")], tmp_path, shard_size=4)
    parts = members(path)
    assert sorted(parts) == ["coco/img_0001_jpg.json", "coco/img_0001_jpg.png"]
    assert json.loads(parts["coco/img_0001_jpg.json"])["key"] == "coco/img.0001.jpg"


def test_error_mid_stream_keeps_finished_shards_only(tmp_path: Path) -> None:
    def samples() -> Iterator[Sample]:
        for i in range(5):
            yield image_sample(i)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_shards(samples(), tmp_path, shard_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert len(members(tmp_path / "shard-000001.tar")) == 4


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        write_shards([], tmp_path, shard_size=0)
    assert write_shards([], tmp_path / "empty", shard_size=3) == []
    empty = Sample("k", "s", None, None, ("c",))
    with pytest.raises(ValueError, match="neither image nor frames"):
        write_shards([empty], tmp_path, shard_size=3)
    with pytest.raises(ValueError, match="occurs twice"):
        write_shards([image_sample(1, "same"), image_sample(2, "same")], tmp_path / "dup", shard_size=3)
    assert not list((tmp_path / "dup").iterdir())  # the partial shard was removed
    with pytest.raises(ValueError, match="uint8"):
        encode_png(torch.zeros(3, 4, 4))


def test_video_encoding_round_trip(tmp_path: Path) -> None:
    frames = torch.zeros(4, 3, 32, 48, dtype=torch.uint8)
    for f in range(4):  # a bright block moving right on grey
        frames[f] = 100
        frames[f, :, 8:20, 4 + 8 * f:16 + 8 * f] = torch.tensor([220, 40, 40], dtype=torch.uint8)[:, None, None]
    data = encode_video(frames)
    decoded = decode_video(data, frames=4)
    assert decoded.shape == (4, 3, 32, 48) and decoded.dtype == torch.uint8
    assert (decoded.float() - frames.float()).abs().mean() < 4.0
    sample = Sample("clip", "test", None, frames, ("a red block moves to the right",))
    (path,) = write_shards([sample], tmp_path, shard_size=1)
    assert sorted(members(path)) == ["clip.json", "clip.mp4"]
    with pytest.raises(ValueError, match="even"):
        encode_video(torch.zeros(2, 3, 31, 32, dtype=torch.uint8))
