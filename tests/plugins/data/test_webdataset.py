"""Webdataset source: shard resolution, round trip, shuffling, rank/worker splits, repeat, bad records."""

from __future__ import annotations

import io
import itertools
import json
import logging
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from plugins.data.synthetic import Synthetic, SyntheticConfig
from plugins.data.webdataset import WebDataset, WebDatasetConfig, resolve_shards
from x2vlm_core.contracts import DataSource, Sample
from x2vlm_core.data.records import DataError
from x2vlm_core.data.shards import encode_png, write_shards
from x2vlm_core.discovery import default_registry


def source(shards: str | list[str], rank: int = 0, world_size: int = 1, **fields: object) -> WebDataset:
    return WebDataset(WebDatasetConfig(shards=shards, **fields), rank=rank, world_size=world_size)  # type: ignore[arg-type]


def fake_worker(monkeypatch: pytest.MonkeyPatch, worker: int | None, workers: int) -> None:
    info = None if worker is None else SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    """40 synthetic records (two languages) in 8 shards of 5."""
    out = tmp_path_factory.mktemp("wds")
    samples = list(Synthetic(SyntheticConfig(samples=40, seed=1, languages=("en", "cs"))))
    paths = write_shards(samples, out, shard_size=5)
    assert len(paths) == 8
    return out, samples


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def good_json(**changes: object) -> bytes:
    meta: dict[str, object] = {"captions": ["a small red circle"], "language": "en",
                               "concepts": [{"box": [0.5, 0.5, 0.25, 0.25], "text": "small red circle", "kind": "object"}]}
    meta.update(changes)
    return json.dumps(meta).encode()


# ------------------------------------------------------------------------------------------ config + shards
def test_config_rejects_unknown_fields_and_accepts_one_pattern() -> None:
    with pytest.raises(ValidationError, match="extra"):
        WebDatasetConfig(shards=("a.tar",), shufle_buffer=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        WebDatasetConfig(shards=())
    assert WebDatasetConfig(shards="x/shard-{0..3}.tar").shards == ("x/shard-{0..3}.tar",)


def test_resolve_braces_directories_and_missing(world: tuple[Path, list[Sample]]) -> None:
    out, _ = world
    all_shards = sorted(out.glob("*.tar"))
    assert resolve_shards((str(out),)) == all_shards
    assert resolve_shards((f"{out}/shard-{{000002..000004}}.tar",)) == all_shards[2:5]
    assert resolve_shards((str(all_shards[1]), str(all_shards[0]), str(all_shards[1]))) == all_shards[1::-1]
    with pytest.raises(DataError, match=r"2 shard\(s\) do not exist: .*shard-000008.tar.*shard-000009.tar"):
        resolve_shards((f"{out}/shard-{{000007..000009}}.tar",))
    with pytest.raises(DataError, match="do not exist"):
        source(str(out / "nope.tar"))


def test_built_through_registry(world: tuple[Path, list[Sample]]) -> None:
    out, samples = world
    built = default_registry().build("data", {"plugin": "webdataset", "shards": [str(out)], "shuffle_buffer": 0})
    assert isinstance(built, WebDataset) and isinstance(built, DataSource)
    assert len(list(built)) == len(samples) and built.skipped == {}


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_is_exact(world: tuple[Path, list[Sample]]) -> None:
    out, samples = world
    got = list(source(f"{out}/shard-{{000000..000007}}.tar", shuffle_buffer=0))
    assert len(got) == len(samples)
    for a, b in zip(samples, got, strict=True):
        assert (b.key, b.source, b.captions, b.language, b.concepts) == (a.key, a.source, a.captions, a.language, a.concepts)
        assert b.image is not None and a.image is not None and b.frames is None
        assert b.image.dtype == torch.uint8 and torch.equal(a.image, b.image)
    assert any(c.attributes for s in got for c in s.concepts)  # concept attributes survive the shards


def test_video_round_trip(tmp_path: Path) -> None:
    config = SyntheticConfig(seed=2, samples=6, kind="video", languages=("en", "fr"))
    paths = write_shards(Synthetic(config), tmp_path, 3)
    assert len(paths) == 2
    reference = list(Synthetic(SyntheticConfig(samples=6, seed=2, kind="video", languages=("en", "fr"))))
    got = list(source(str(tmp_path), shuffle_buffer=0, frames=3))
    assert [g.captions for g in got] == [r.captions for r in reference]
    for g, r in zip(got, reference, strict=True):
        assert g.image is None and g.frames is not None and r.frames is not None
        assert g.frames.shape == (3, 3, 64, 64) and g.frames.dtype == torch.uint8
        assert (g.frames.float() - r.frames.float()).abs().mean() < 6.0  # H.264 is lossy, but close


def test_jpeg_records_decode(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 16), (200, 30, 30)).save(buffer, format="JPEG", quality=95)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add(tar, "a.jpg", buffer.getvalue())
        add(tar, "a.json", good_json())
    (sample,) = list(source(str(tmp_path / "s.tar")))
    assert sample.image is not None and sample.image.shape == (3, 16, 20)
    assert abs(int(sample.image[0].float().mean()) - 200) < 4 and sample.source == "webdataset"


# ------------------------------------------------------------------------------------------ shuffle, split, repeat
def test_shuffle_buffer_permutes_deterministically(world: tuple[Path, list[Sample]]) -> None:
    out, samples = world
    keys = [s.key for s in samples]
    a = [s.key for s in source(str(out), shuffle_buffer=10, seed=3)]
    b = [s.key for s in source(str(out), shuffle_buffer=10, seed=3)]
    c = [s.key for s in source(str(out), shuffle_buffer=10, seed=4)]
    assert a == b and sorted(a) == sorted(keys) and a != keys and a != c


@pytest.mark.parametrize(("world_size", "workers"), [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("buffer", [0, 7])
def test_ranks_and_workers_get_disjoint_complete_shares(
    world: tuple[Path, list[Sample]], monkeypatch: pytest.MonkeyPatch, world_size: int, workers: int, buffer: int
) -> None:
    out, samples = world
    got: list[str] = []
    shares = []
    for rank in range(world_size):
        for worker in range(workers):
            fake_worker(monkeypatch, worker, workers)
            share = [s.key for s in source(str(out), rank=rank, world_size=world_size, shuffle_buffer=buffer)]
            shares.append(share)
            got += share
    assert sorted(got) == sorted(s.key for s in samples) and len(got) == len(set(got))
    assert all(len(share) % 5 == 0 and share for share in shares)  # whole shards only


def test_real_dataloader_workers(world: tuple[Path, list[Sample]]) -> None:
    out, samples = world
    loader = torch.utils.data.DataLoader(
        source(str(out), shuffle_buffer=4), batch_size=None, num_workers=2, collate_fn=lambda s: s
    )
    keys = [s.key for s in loader]
    assert sorted(keys) == sorted(s.key for s in samples)


def test_too_few_shards(world: tuple[Path, list[Sample]], monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = world
    with pytest.raises(DataError, match="every rank needs"):
        source(f"{out}/shard-{{000000..000001}}.tar", rank=0, world_size=3)
    fake_worker(monkeypatch, 0, 3)
    with pytest.raises(DataError, match="consumers"):
        list(source(f"{out}/shard-{{000000..000001}}.tar", rank=0, world_size=1))


def test_repeat_cycles_with_a_new_order(world: tuple[Path, list[Sample]]) -> None:
    out, samples = world
    stream = source(str(out), repeat=True, shuffle_buffer=6, seed=1)
    keys = [s.key for s in itertools.islice(stream, 100)]
    first, second = keys[:40], keys[40:80]
    assert sorted(first) == sorted(second) == sorted(s.key for s in samples)
    assert first != second
    assert sorted(keys[80:]) == sorted(set(keys[80:]))
    assert stream.source_counts().records == 40  # three epochs read, each record counted once


def test_repeat_over_shards_without_a_good_record_stops(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        add(tar, "a.json", good_json())  # no image: missing_media
    with pytest.raises(DataError, match=r"a whole pass over 1 shard\(s\) yielded no record.*missing_media"):
        next(iter(source(str(tmp_path), repeat=True)))
    with pytest.raises(DataError, match=r"'webdataset': 1 of 1 records are bad"):
        next(iter(source(str(tmp_path), max_bad_fraction=0.0, min_records=1)))


# ------------------------------------------------------------------------------------------ bad records
def test_bad_records_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    png = encode_png(torch.full((3, 8, 8), 90, dtype=torch.uint8))
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        add(tar, "good1.png", png)
        add(tar, "good1.json", good_json())
        add(tar, "corrupt.png", png[: len(png) // 2])
        add(tar, "corrupt.json", good_json())
        add(tar, "badjson.png", png)
        add(tar, "badjson.json", b"{not json")
        add(tar, "outside.png", png)
        add(tar, "outside.json", good_json(concepts=[{"box": [0.9, 0.5, 0.4, 0.2], "text": "x", "kind": "object"}]))
        add(tar, "flat.png", png)
        add(tar, "flat.json", good_json(concepts=[{"box": [0.5, 0.5, 0.0, 0.2], "text": "x"}]))
        add(tar, "emptycap.png", png)
        add(tar, "emptycap.json", good_json(captions=["  "]))
        add(tar, "nojson.png", png)
        add(tar, "noimage.json", good_json())
        add(tar, "badkind.png", png)
        add(tar, "badkind.json", good_json(concepts=[{"box": [0.5, 0.5, 0.2, 0.2], "text": "x", "kind": "blob"}]))
        add(tar, "good2.png", png)
        add(tar, "good2.json", good_json(captions=[], language="de"))
    # a second shard cut off in the middle of a record's image
    with tarfile.open(tmp_path / "whole.tar", "w") as tar:
        add(tar, "good3.png", png)
        add(tar, "good3.json", good_json())
        add(tar, "lost.png", bytes(range(256)) * 40)
        add(tar, "lost.json", good_json())
    whole = (tmp_path / "whole.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(whole[: 512 * 8])
    (tmp_path / "whole.tar").unlink()

    caplog.set_level(logging.WARNING)
    ds = source(str(tmp_path), shuffle_buffer=0)
    got = list(ds)
    assert [s.key for s in got] == ["good1", "good2", "good3"]
    assert got[1].captions == () and got[1].language == "de" and len(got[1].concepts) == 1
    expected = {
        "unreadable_image": 1, "bad_json": 1, "box_outside_image": 1, "box_zero_area": 1, "empty_caption": 1,
        "missing_json": 1, "missing_media": 1, "bad_concept_kind": 1, "bad_shard": 1,
    }
    assert ds.skipped == expected and ds.dropped == {}
    assert ds.source_counts().records == 12  # 3 good, 8 bad records, 1 lost with the cut shard
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("shard-000000.tar:corrupt" in w and "unreadable_image" in w for w in warnings)
    assert any("shard-000001.tar" in w and "bad_shard" in w for w in warnings)
    # a second pass re-reads the same records: nothing is counted or logged again
    before = len(warnings)
    assert [s.key for s in ds] == ["good1", "good2", "good3"]
    assert ds.skipped == expected and ds.source_counts().records == 12
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == before
