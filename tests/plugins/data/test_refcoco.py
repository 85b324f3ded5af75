"""refcoco: referring expressions grouped per image into REGION concepts; bad refs dropped, bad images skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_fixtures import collect, write_image, write_json, write_truncated
from pydantic import ValidationError

from plugins.data.refcoco import RefcocoConfig, RefcocoSource
from x2vlm_core.contracts import ConceptKind


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        RefcocoConfig(annotations="r.json", dataset="refcoco+")


def test_refs_become_region_concepts(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.jpg", 200, 100, "JPEG")
    write_image(tmp_path / "img" / "b.png", 50, 50)
    write_truncated(tmp_path / "img" / "cut.jpg")
    refs = [
        {
            "image": "a.jpg",
            "bbox": [20, 10, 40, 30],
            "sentences": ["man on the left", {"sent": "tall man"}],
            "split": "train",
        },
        {
            "image": "a.jpg",
            "bbox": [150, 50, 0, 10],
            "sentences": ["flat"],
            "split": "train",
        },  # box_zero_area
        {"image": "a.jpg", "bbox": [300, 50, 10, 10], "sentences": ["away"], "split": "train"},  # outside
        {"image": "a.jpg", "bbox": [0, 0, 200, 100], "sentences": [""], "split": "train"},  # empty_caption
        {"image": "b.png", "bbox": [0, 0, 25, 50], "sentences": "not a list", "split": "train"},  # bad type
        {"image": "cut.jpg", "bbox": [0, 0, 5, 5], "sentences": ["x"], "split": "train"},  # unreadable_image
        {"image": "gone.jpg", "bbox": [0, 0, 5, 5], "sentences": ["x"], "split": "train"},  # missing_file
        {"image": "a.jpg", "bbox": [0, 0, 5, 5], "sentences": ["val ref"], "split": "val"},
        {"bbox": [0, 0, 5, 5], "sentences": ["no image"], "split": "train"},  # bad_json_type
    ]
    path = write_json(tmp_path / "refs.json", refs)
    source = RefcocoSource(
        RefcocoConfig(annotations=str(path), image_root=str(tmp_path / "img"), splits=("train",))
    )
    (sample,) = collect(source)
    assert sample.captions == () and sample.key == "refcoco:a.jpg"
    assert [c.text for c in sample.concepts] == ["man on the left", "tall man"]
    assert all(c.kind == ConceptKind.REGION for c in sample.concepts)
    assert sample.concepts[0].box == pytest.approx((0.2, 0.25, 0.2, 0.3))
    assert source.skipped == {"bad_json_type": 1, "no_usable_refs": 1, "unreadable_image": 1, "missing_file": 1}
    assert source.dropped == {"box_zero_area": 1, "box_outside_image": 1, "empty_caption": 1, "bad_json_type": 1}
    everything = RefcocoSource(RefcocoConfig(annotations=str(path), image_root=str(tmp_path / "img")))
    assert [len(s.concepts) for s in everything] == [3]  # the val ref joins image a.jpg


def test_boxes_refer_to_the_file_size_when_the_image_is_reduced(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", 200, 100, "JPEG")
    refs = [{"image": "a.jpg", "bbox": [20, 10, 40, 30], "sentences": ["man on the left"]}]
    path = write_json(tmp_path / "refs.json", refs)
    cfg = RefcocoConfig(annotations=str(path), image_root=str(tmp_path), max_pixels=5000)
    (sample,) = collect(RefcocoSource(cfg))
    assert sample.image is not None and sample.image.shape == (3, 50, 100)  # decoded at half size
    assert sample.concepts[0].box == pytest.approx((0.2, 0.25, 0.2, 0.3))
