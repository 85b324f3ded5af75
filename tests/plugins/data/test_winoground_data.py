"""winoground: the published JSONL + image-folder layout → CompositionSample; names without extensions, tags,
bad lines and missing images skipped and counted, sharding, a second pass not counted twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import collect, image_bytes, write_jsonl, write_truncated
from pydantic import ValidationError

from plugins.data.winoground import WinogroundConfig, WinogroundSource
from x2vlm_core.contracts import CompositionSample
from x2vlm_core.data.records import DataError


def _png(path: Path, width: int, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(width, 8, "PNG", colour))


def _example(i: int, **fields: object) -> dict[str, object]:
    line: dict[str, object] = {"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1",
                               "caption_0": f"a dog chases a cat {i}", "caption_1": f"a cat chases a dog {i}",
                               "tag": "Noun", "secondary_tag": "", "collapsed_tag": "Object", "num_main_preds": 1}
    line.update(fields)
    return line


def release(tmp_path: Path) -> tuple[Path, Path]:
    """examples.jsonl and images/ as Winoground publishes them (names without extension), plus bad cases."""
    images = tmp_path / "images"
    for i in range(3):
        _png(images / f"ex_{i}_img_0.png", 10 + i, (200, 0, 0))
        _png(images / f"ex_{i}_img_1.png", 20 + i, (0, 0, 200))
    (images / "ex_1_img_1.png").rename(images / "ex_1_img_1.jpg")  # another extension, still found
    _png(images / "named.png", 7, (0, 200, 0))
    write_truncated(images / "ex_9_img_0.png", fmt="PNG")
    path = write_jsonl(tmp_path / "examples.jsonl", [
        _example(0),
        _example(1, collapsed_tag="", tag="Relation"),  # empty collapsed_tag: the next tag key
        b"{not json",  # bad_json
        _example(2, collapsed_tag=None, tag=None),  # no tag at all
        _example(3),  # images not there: missing_file
        _example(4, image_0="named.png", image_1="ex_0_img_1.png", caption_1="   "),  # empty_caption
        _example(5, image_0="named.png", image_1="ex_0_img_1", caption_0=["a list"]),  # bad_json_type
        _example(6, image_0=7),  # bad_json_type
        _example(9, image_1="named.png"),  # ex_9_img_0.png is truncated: unreadable_image
        [1, 2],  # bad_json_type
        _example(10, image_0="named.png", image_1="named"),  # names with and without the extension
    ])
    return path, images


def test_config_needs_paths_and_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        WinogroundConfig(paths=())
    with pytest.raises(ValidationError):
        WinogroundConfig(paths=("x.jsonl",), image_dir="images")  # type: ignore[call-arg]
    with pytest.raises(DataError, match="no files match"):
        WinogroundSource(WinogroundConfig(paths=("/nonexistent/*.jsonl",)))


def test_reads_the_published_layout_and_counts_bad_lines(tmp_path: Path) -> None:
    path, images = release(tmp_path)
    source = WinogroundSource(WinogroundConfig(paths=(str(path),), image_root=str(images)))
    records = collect(source)
    assert all(isinstance(r, CompositionSample) for r in records)
    assert [(r.key, r.tag) for r in records] == [  # type: ignore[union-attr]
        ("winoground:0", "Object"), ("winoground:1", "Relation"), ("winoground:2", ""), ("winoground:10", "Object"),
    ]
    first = records[0]
    assert first.captions == ("a dog chases a cat 0", "a cat chases a dog 0")  # type: ignore[union-attr]
    left, right = first.images  # type: ignore[union-attr]
    assert left.shape == (3, 8, 10) and right.shape == (3, 8, 20) and left.dtype == torch.uint8
    assert int(left[0, 0, 0]) == 200 and int(right[2, 0, 0]) == 200  # caption i goes with image i
    assert records[1].images[1].shape == (3, 8, 21)  # type: ignore[union-attr]  # found as .jpg
    assert records[3].images[0].shape == records[3].images[1].shape == (3, 8, 7)  # type: ignore[union-attr]
    assert source.skipped == {"bad_json": 1, "missing_file": 1, "empty_caption": 1, "bad_json_type": 3,
                              "unreadable_image": 1}
    assert all(r.language == "en" and r.source == "winoground" for r in records)

    again = collect(source)  # the next epoch: the same records, nothing counted twice
    assert [r.key for r in again] == [r.key for r in records]  # type: ignore[union-attr]
    assert sum(source.skipped.values()) == 7


def test_tag_keys_choose_the_tag_and_records_shard_over_ranks(tmp_path: Path) -> None:
    path, images = release(tmp_path)
    fine = WinogroundSource(WinogroundConfig(paths=(str(path),), image_root=str(images), tag_keys=("tag",)))
    assert [r.tag for r in collect(fine)] == ["Noun", "Relation", "", "Noun"]  # type: ignore[union-attr]
    config = WinogroundConfig(paths=(str(tmp_path / "*.jsonl"),), image_root=str(images))
    shards = [[r.key for r in collect(WinogroundSource(config, rank, 2))] for rank in (0, 1)]  # type: ignore[union-attr]
    assert sorted(shards[0] + shards[1]) == sorted(["winoground:0", "winoground:1", "winoground:2", "winoground:10"])
    assert not set(shards[0]) & set(shards[1])


def test_too_many_bad_lines_stop_the_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [_example(i) for i in range(5)])  # no images anywhere
    config = WinogroundConfig(paths=(str(path),), image_root=str(tmp_path), max_bad_fraction=0.5, min_records=3)
    with pytest.raises(DataError, match="missing_file"):
        collect(WinogroundSource(config))
