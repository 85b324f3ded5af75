"""visual_genome: objects (+ attributes) and regions joined per image, sizes from image_data or the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_fixtures import collect, write_image, write_json, write_truncated
from pydantic import ValidationError

from plugins.data.visual_genome import VisualGenomeConfig, VisualGenomeSource
from x2vlm_core.contracts import ConceptKind


def vg(tmp_path: Path) -> dict[str, str]:
    write_image(tmp_path / "VG_100K" / "1.jpg", 100, 50, "JPEG")
    write_image(tmp_path / "VG_100K_2" / "2.jpg", 40, 40, "JPEG")
    write_truncated(tmp_path / "VG_100K" / "3.jpg")
    write_image(tmp_path / "VG_100K" / "5.jpg", 10, 10, "JPEG")
    objects = [
        {
            "image_id": 1,
            "objects": [
                {"object_id": 11, "x": 10, "y": 5, "w": 20, "h": 10, "names": ["dog"]},
                {"object_id": 12, "x": 0, "y": 0, "w": 0, "h": 10, "names": ["line"]},  # box_zero_area
                {"object_id": 13, "x": 5, "y": 5, "w": 5, "h": 5, "names": [""]},  # empty_caption
            ],
        },
        {"image_id": 2, "objects": [{"object_id": 21, "x": 0, "y": 0, "w": 20, "h": 20, "name": "cat"}]},
        {
            "image_id": 3,
            "objects": [{"object_id": 31, "x": 0, "y": 0, "w": 5, "h": 5, "names": ["x"]}],
        },  # unreadable
        {
            "image_id": 4,
            "objects": [{"object_id": 41, "x": 0, "y": 0, "w": 5, "h": 5, "names": ["x"]}],
        },  # missing
        {
            "image_id": 5,
            "objects": [{"object_id": 51, "x": 50, "y": 50, "w": 5, "h": 5, "names": ["x"]}],
        },  # none left
        {"objects": []},  # bad_json_type (no image id)
    ]
    attributes = [{"image_id": 1, "attributes": [{"object_id": 11, "attributes": ["small", "brown"]}]}]
    regions = [
        {
            "id": 1,
            "regions": [
                {"region_id": 1, "phrase": "a dog on grass", "x": 0, "y": 0, "width": 50, "height": 50},
                {"region_id": 2, "phrase": "sky", "x": "0", "y": 0, "width": 5, "height": 5},
            ],
        },
    ]
    # image 1 annotated at 200x100 (the file is 100x50): boxes use the annotation's pixel space
    image_data = [{"image_id": 1, "width": 200, "height": 100}, {"image_id": 2, "width": 40, "height": 40}]
    return {
        "objects": str(write_json(tmp_path / "objects.json", objects)),
        "attributes": str(write_json(tmp_path / "attributes.json", attributes)),
        "regions": str(write_json(tmp_path / "region_descriptions.json", regions)),
        "image_data": str(write_json(tmp_path / "image_data.json", image_data)),
    }


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        VisualGenomeConfig(image_roots=("x",), objects="o.json", synsets="s.json")
    with pytest.raises(ValidationError, match="objects and/or regions"):
        VisualGenomeConfig(image_roots=("x",))
    with pytest.raises(ValidationError, match="attributes need objects"):
        VisualGenomeConfig(image_roots=("x",), regions="r.json", attributes="a.json")


def test_objects_attributes_regions(tmp_path: Path) -> None:
    files = vg(tmp_path)
    roots = (str(tmp_path / "VG_100K"), str(tmp_path / "VG_100K_2"))
    source = VisualGenomeSource(VisualGenomeConfig(image_roots=roots, **files))
    first, second = collect(source)
    assert first.key == "vg:1" and first.captions == () and first.image is not None
    assert first.image.shape == (3, 50, 100)
    texts = [(c.text, c.kind) for c in first.concepts]
    assert texts == [("small brown dog", ConceptKind.OBJECT), ("a dog on grass", ConceptKind.REGION)]
    assert first.concepts[0].box == pytest.approx((0.1, 0.1, 0.1, 0.1))  # (10+10)/200, (5+5)/100
    assert first.concepts[1].box == pytest.approx((0.125, 0.25, 0.25, 0.5))
    assert second.key == "vg:2" and second.concepts[0].text == "cat"
    assert second.concepts[0].box == pytest.approx((0.25, 0.25, 0.5, 0.5))
    assert source.skipped == {"unreadable_image": 1, "missing_file": 1, "no_usable_boxes": 1, "bad_json_type": 1}
    assert source.dropped == {"box_zero_area": 1, "empty_caption": 1, "bad_box": 1, "box_outside_image": 1}


def test_size_from_file_without_image_data(tmp_path: Path) -> None:
    files = vg(tmp_path)
    source = VisualGenomeSource(
        VisualGenomeConfig(image_roots=(str(tmp_path / "VG_100K"),), objects=files["objects"])
    )
    first = collect(source)[0]
    assert first.concepts[0].text == "dog" and first.concepts[0].box == pytest.approx((0.2, 0.2, 0.2, 0.2))
    assert source.skipped["missing_file"] == 2  # image 2 is only in VG_100K_2


def test_boxes_refer_to_the_file_size_when_the_image_is_reduced(tmp_path: Path) -> None:
    files = vg(tmp_path)
    cfg = VisualGenomeConfig(image_roots=(str(tmp_path / "VG_100K"),), objects=files["objects"], max_pixels=1250)
    first = collect(VisualGenomeSource(cfg))[0]
    assert first.image is not None and first.image.shape == (3, 25, 50)  # 100 x 50 decoded at half size
    assert first.concepts[0].box == pytest.approx((0.2, 0.2, 0.2, 0.2))
