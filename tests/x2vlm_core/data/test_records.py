"""SkipCounter (counts, log once, summary, max_bad_fraction), counting each record once, the shared config
and rank check, box conversion, image loading, shard split."""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from registry import PluginError
from x2vlm_core.contracts import Sample
from x2vlm_core.data.counts import SourceCounts
from x2vlm_core.data.records import (
    DEFAULT_MAX_PIXELS,
    BadRecord,
    DataError,
    ReadMark,
    RecordSource,
    RecordSourceConfig,
    SkipCounter,
    check_rank,
    clean_texts,
    load_image,
    pixel_box_to_normalised,
    take_shard,
)


def test_counter_counts_logs_once_and_summarises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="x2vlm.data")
    counter = SkipCounter("coco")
    for i in range(3):
        counter.skip("missing_file", f"rec{i}", "gone.jpg")
    counter.skip("bad_json", "rec9")
    counter.ok()
    counter.drop("box_zero_area", "rec5")
    counter.drop("box_zero_area", "rec6")
    assert counter.skipped == {"missing_file": 3, "bad_json": 1}
    assert counter.dropped == {"box_zero_area": 2}
    assert counter.snapshot() == SourceCounts("coco", 5, 0, {"bad_json": 1, "missing_file": 3}, {"box_zero_area": 2})
    assert (counter.seen, counter.bad) == (5, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # one per reason
    assert (
        "coco" in messages[0]
        and "rec0" in messages[0]
        and "missing_file" in messages[0]
        and "gone.jpg" in messages[0]
    )
    assert counter.summary() == (
        "coco: 5 records, 4 skipped (bad_json: 1, missing_file: 3); dropped parts (box_zero_area: 2)"
    )


def test_max_bad_fraction_waits_for_min_records_then_raises() -> None:
    counter = SkipCounter("web", max_bad_fraction=0.25, min_records=8)
    for _ in range(6):
        counter.ok()
    counter.skip("unreadable_image", "r1")
    counter.ok()  # 1 of 8 bad: fine
    counter.skip("unreadable_image", "r2")  # 2 of 9
    with pytest.raises(DataError) as error:
        counter.skip("empty_caption", "r3")  # 3 of 10 = 30 % > 25 %
    assert isinstance(error.value, PluginError)
    text = str(error.value)
    assert (
        "'web'" in text and "3 of 10" in text and "unreadable_image: 2" in text and "empty_caption: 1" in text
    )
    early = SkipCounter("x", max_bad_fraction=0.0, min_records=5)
    for i in range(4):
        early.skip("bad_json", str(i))  # under min_records: no error yet
    with pytest.raises(DataError):
        early.skip("bad_json", "4")
    with pytest.raises(ValueError, match="max_bad_fraction"):
        SkipCounter("x", max_bad_fraction=1.5)


def test_pixel_box_conversion() -> None:
    assert pixel_box_to_normalised([10, 20, 30, 40], 100, 200) == pytest.approx((0.25, 0.2, 0.3, 0.2))
    assert pixel_box_to_normalised([-10, 0, 30, 200], 100, 100) == pytest.approx(
        (0.1, 0.5, 0.2, 1.0)
    )  # clipped
    for box, reason in [
        ([0, 0, 0, 5], "box_zero_area"),
        ([0, 0, 5, -1], "box_zero_area"),
        ([150, 0, 5, 5], "box_outside_image"),
        ([0, -20, 5, 20], "box_outside_image"),
        ([1, 2, 3], "bad_box"),
        ("1,2,3,4", "bad_box"),
        ([0, 0, True, 1], "bad_box"),
        ([0, 0, float("nan"), 1], "bad_box"),
    ]:
        with pytest.raises(BadRecord) as bad:
            pixel_box_to_normalised(box, 100, 100)
        assert bad.value.reason == reason, box


def test_load_image_formats_and_failures(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("L", (5, 3), 77).save(buffer, format="PNG")  # greyscale → RGB
    out = load_image(buffer.getvalue())
    assert out.shape == (3, 3, 5) and out.dtype == torch.uint8 and bool((out == 77).all())
    (tmp_path / "x.png").write_bytes(buffer.getvalue())
    assert torch.equal(load_image(tmp_path / "x.png"), out)
    for path, reason in [(tmp_path / "none.png", "missing_file")]:
        with pytest.raises(BadRecord, match=reason):
            load_image(path)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(BadRecord, match="unreadable_image"):
        load_image(tmp_path / "junk.jpg")


def test_clean_texts() -> None:
    assert clean_texts(" a  b ", "c") == ("a b",)
    assert clean_texts(["x", " ", "y"], "c") == ("x", "y")
    for value, reason in [
        ("", "empty_caption"),
        ([], "empty_caption"),
        (3, "bad_json_type"),
        (["a", 1], "bad_json_type"),
        ("caf\udce9", "bad_utf8"),
    ]:
        with pytest.raises(BadRecord) as bad:
            clean_texts(value, "c")
        assert bad.value.reason == reason


def test_take_shard_partitions_ranks() -> None:
    parts = [list(take_shard(range(10), r, 3)) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="rank"):
        list(take_shard(range(3), 3, 3))


class Lines(RecordSource):
    """A RecordSource over in-memory lines: "ok" yields a sample, "bad" is skipped, "drop" loses one part."""

    def __init__(self, lines: list[str], rank: int = 0, world_size: int = 1, **fields: object) -> None:
        super().__init__(RecordSourceConfig(name="lines", **fields), rank, world_size)  # type: ignore[arg-type]
        self.lines = lines

    def _records(self) -> Iterator[tuple[str, str]]:
        return ((f"line:{i}", text) for i, text in enumerate(self.lines))

    def _parse(self, record_id: str, record: str) -> list[Sample]:
        if record == "bad":
            raise BadRecord("bad_line", record_id)
        if record == "drop":
            self.counter.drop("bad_box", record_id)
        return [Sample(record_id, self.name, torch.zeros(3, 1, 1, dtype=torch.uint8), None, ("c",))]


NINETEEN = ["ok", "bad", "drop", "ok", "bad"] * 3 + ["ok", "bad", "ok", "drop"]  # 19 lines, 7 bad, 4 drops


def test_each_record_is_counted_once_however_often_it_is_read() -> None:
    source = Lines(NINETEEN)
    for _ in range(4):  # four epochs
        assert len(list(source)) == 12
    assert source.skipped == {"bad_line": 7} and source.dropped == {"bad_box": 4}
    assert source.source_counts() == SourceCounts("lines", 19, 0, {"bad_line": 7}, {"bad_box": 4})
    partial = Lines(NINETEEN)
    assert len(list(itertools.islice(partial, 3))) == 3  # an abandoned pass: lines 0-3 read
    assert partial.source_counts().records == 4
    list(partial), list(partial)  # then whole passes: lines 4-18 are new, 0-3 are not counted again
    assert partial.source_counts() == source.source_counts()


def test_read_mark_and_counter_pause() -> None:
    mark = ReadMark()
    assert [mark.first_time(p) for p in (0, 1, 2, 0, 1, 2, 3)] == [True, True, True, False, False, False, True]
    counter = SkipCounter("x")
    counter.counting = False
    counter.skip("bad_json", "r1")
    counter.drop("bad_box", "r1")
    counter.ok()
    assert counter.snapshot() == SourceCounts("x", 0)


def test_shared_config_fields_and_one_rank_check() -> None:
    config = RecordSourceConfig(name="n")
    assert (config.max_bad_fraction, config.min_records, config.max_pixels) == (None, 100, DEFAULT_MAX_PIXELS)
    for bad in ({"name": ""}, {"name": "n", "max_pixels": 0}, {"name": "n", "max_bad_fraction": 2.0},
                {"name": "n", "colour": 1}):
        with pytest.raises(ValidationError):
            RecordSourceConfig(**bad)  # type: ignore[arg-type]
    check_rank(1, 2, "x")
    for rank, world in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError, match=r"data source 'lines': rank .* is not in \[0, world_size="):
            Lines(["ok"], rank=rank, world_size=world)
    from plugins.data import coco, refcoco, video_jsonl, visual_genome, webdataset, x2vlm_json

    configs = [coco.CocoConfig, refcoco.RefcocoConfig, video_jsonl.VideoJsonlConfig,
               visual_genome.VisualGenomeConfig, webdataset.WebDatasetConfig, x2vlm_json.X2vlmJsonConfig]
    for cls in configs:
        assert issubclass(cls, RecordSourceConfig), cls
        assert {"name", "max_bad_fraction", "min_records", "max_pixels"} <= set(cls.model_fields)
        assert cls.model_fields["name"].default not in (None, "")  # each plugin names its own default


def test_max_bad_fraction_through_the_config() -> None:
    with pytest.raises(DataError, match=r"'lines': 3 of 4 records are bad"):
        list(Lines(["ok", "bad", "bad", "bad"], max_bad_fraction=0.5, min_records=4))
