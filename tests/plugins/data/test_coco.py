"""coco: Karpathy-split dataset_coco.json, split filter, bad records, sharding."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_fixtures import collect, write_image, write_json, write_truncated
from pydantic import ValidationError

from plugins.data.coco import CocoConfig, CocoSource
from x2vlm_core.data.records import DataError


def karpathy(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    write_image(root / "train2014" / "t1.jpg", 30, 20, "JPEG")
    write_image(root / "val2014" / "v1.jpg", 12, 16, "JPEG")
    write_truncated(root / "val2014" / "cut.jpg")

    def entry(cocoid: int, filepath: str, filename: str, split: str, raws: list[object]) -> dict[str, object]:
        return {
            "filepath": filepath,
            "filename": filename,
            "split": split,
            "cocoid": cocoid,
            "sentences": [{"raw": r, "tokens": []} for r in raws],
        }

    return write_json(
        tmp_path / "dataset_coco.json",
        {
            "dataset": "coco",
            "images": [
                entry(1, "train2014", "t1.jpg", "train", ["A dog.", " A  brown dog. "]),
                entry(2, "val2014", "v1.jpg", "restval", ["A cat."]),
                entry(3, "val2014", "v1.jpg", "test", ["held out"]),
                entry(4, "val2014", "gone.jpg", "train", ["x"]),  # missing_file
                entry(5, "val2014", "cut.jpg", "train", ["x"]),  # unreadable_image
                entry(6, "train2014", "t1.jpg", "train", ["", " "]),  # empty_caption
                entry(7, "train2014", "t1.jpg", "train", [3]),  # bad_json_type
                {
                    "filepath": "train2014",
                    "filename": "t1.jpg",
                    "split": "train",
                    "cocoid": 8,
                    "sentences": "not a list",
                },  # bad_json_type
                "garbage",  # bad_json_type
                entry(9, "train2014", "t1.jpg", "train", ["caf\udce9"]),  # bad_utf8 (surrogate as read)
            ],
        },
    )


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        CocoConfig(annotations="x.json", split="train")
    with pytest.raises(ValidationError):
        CocoConfig(annotations="x.json", splits=())


def test_reads_split_and_counts_bad_records(tmp_path: Path) -> None:
    path = karpathy(tmp_path)
    source = CocoSource(CocoConfig(annotations=str(path), image_root=str(tmp_path / "coco")))
    samples = collect(source)
    assert [(s.key, s.captions) for s in samples] == [
        ("coco:1", ("A dog.", "A brown dog.")),
        ("coco:2", ("A cat.",)),
    ]
    assert samples[0].image is not None and samples[0].image.shape == (3, 20, 30)
    assert samples[1].image is not None and samples[1].image.shape == (3, 16, 12)
    assert all(s.concepts == () and s.frames is None and s.source == "coco" for s in samples)
    assert source.skipped == {
        "missing_file": 1,
        "unreadable_image": 1,
        "empty_caption": 1,
        "bad_json_type": 3,
        "bad_utf8": 1,
    }
    test = CocoSource(CocoConfig(annotations=str(path), image_root=str(tmp_path / "coco"), splits=("test",)))
    assert [s.captions for s in test] == [("held out",)]
    capped = CocoSource(CocoConfig(annotations=str(path), image_root=str(tmp_path / "coco"), max_pixels=150))
    assert next(iter(capped)).image.shape == (3, 10, 15)  # type: ignore[union-attr]  # 30 x 20 at half size


def test_non_utf8_bytes_in_the_file_skip_only_that_record(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 4, 4)
    good = (
        b'{"filepath": "", "filename": "a.png", "split": "train", "cocoid": 1, "sentences": [{"raw": "ok"}]}'
    )
    bad = b'{"filepath": "", "filename": "a.png", "split": "train", "cocoid": 2, "sentences": [{"raw": "caf\xe9"}]}'
    path = tmp_path / "d.json"
    path.write_bytes(b'{"images": [' + good + b", " + bad + b"]}")
    source = CocoSource(CocoConfig(annotations=str(path), image_root=str(tmp_path)))
    assert [s.captions for s in source] == [("ok",)] and source.skipped == {"bad_utf8": 1}


def test_sharding_and_bad_files(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 4, 4)
    images = [
        {"filepath": "", "filename": "a.png", "split": "train", "cocoid": i, "sentences": [{"raw": f"c{i}"}]}
        for i in range(7)
    ]
    path = write_json(tmp_path / "d.json", {"images": images})
    parts = [
        [s.key for s in CocoSource(CocoConfig(annotations=str(path), image_root=str(tmp_path)), r, 2)]
        for r in range(2)
    ]
    assert parts == [["coco:0", "coco:2", "coco:4", "coco:6"], ["coco:1", "coco:3", "coco:5"]]
    with pytest.raises(DataError, match="does not exist"):
        CocoSource(CocoConfig(annotations=str(tmp_path / "none.json")))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        CocoSource(CocoConfig(annotations=str(tmp_path / "broken.json")))
    write_json(tmp_path / "list.json", [1])
    with pytest.raises(DataError, match="no 'images' list"):
        CocoSource(CocoConfig(annotations=str(tmp_path / "list.json")))
    with pytest.raises(ValueError, match="rank"):
        CocoSource(CocoConfig(annotations=str(path)), rank=2, world_size=2)
