"""ovad: the published COCO-style annotation layout → image Samples whose objects carry attributes in the
attributes task's notation (positives, unknowns; negatives implicit), groups, bad parts dropped and bad images
skipped and counted, and the attributes task reading them (unknown labels ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import collect, write_image, write_json, write_truncated
from pydantic import ValidationError

from plugins.data.ovad import OvadConfig, OvadSource
from plugins.task.attributes import attribute_set, parse_attribute
from x2vlm_core.contracts import ConceptKind
from x2vlm_core.data.records import DataError

ATTRIBUTES = [
    {"id": 0, "name": "cleanliness:clean/neat", "type": "cleanliness", "parent_type": "state", "freq_set": "head"},
    {"id": 1, "name": "color:red", "type": "color", "parent_type": "colour", "freq_set": "head"},
    {"id": 2, "name": "material:wooden/wood", "type": "material", "parent_type": "material", "freq_set": "tail"},
    {"id": 3, "name": "", "type": "broken"},  # no usable name: dropped (its att_vec slot is ignored)
]


def annotations(tmp_path: Path) -> Path:
    root = tmp_path / "val2017"
    write_image(root / "a.jpg", 100, 50, "JPEG")
    write_image(root / "b.png", 40, 40)
    write_truncated(root / "cut.jpg")
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50, "set": "val"},
        {"id": 2, "file_name": "b.png", "width": 40, "height": 40, "set": "train"},
        {"id": 3, "file_name": "gone.jpg", "set": "val"},  # missing_file
        {"id": 4, "file_name": "cut.jpg", "set": "val"},  # unreadable_image
        {"id": 5, "file_name": "a.jpg", "set": "val"},  # every annotation bad: no_usable_objects
        {"id": [6], "file_name": "a.jpg"},  # an id that no annotation can name: not a record
        {"id": 7, "file_name": "a.jpg", "set": "val"},  # no annotation: not a record
    ]
    anns = [
        {"id": 10, "image_id": 1, "bbox": [10, 10, 20, 10], "category_id": 1, "att_vec": [1, 0, -1, 1]},
        {"id": 11, "image_id": 1, "bbox": [50, 0, 50, 50], "category_id": 99, "att_vec": [0, 1, 0, 0]},
        {"id": 12, "image_id": 1, "bbox": [0, 0, 0, 5], "category_id": 1, "att_vec": [1, 0, 0, 0]},  # box_zero_area
        {"id": 13, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "att_vec": [1, 0, 2, 0]},  # bad_att_vec
        {"id": 14, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "att_vec": [1, 0]},  # bad_att_vec
        {"id": 20, "image_id": 2, "bbox": [0, 0, 40, 20], "category_id": 2, "attribute_ids": [2, 1]},
        {"id": 21, "image_id": 2, "bbox": [0, 0, 40, 20], "category_id": 2, "attribute_ids": [8]},  # unknown_attribute
        {"id": 22, "image_id": 2, "bbox": [0, 0, 40, 20], "category_id": [2], "att_vec": [-1, -1, -1, 0]},
        {"id": 30, "image_id": 3, "bbox": [0, 0, 5, 5], "category_id": 1, "att_vec": [1, 0, 0, 0]},
        {"id": 40, "image_id": 4, "bbox": [0, 0, 5, 5], "category_id": 1, "att_vec": [1, 0, 0, 0]},
        {"id": 50, "image_id": 5, "bbox": "x", "category_id": 1, "att_vec": [1, 0, 0, 0]},  # bad_box
        {"id": 51, "image_id": 5, "bbox": [1, 1, 5, 5], "category_id": 1},  # no_attributes
        {"id": 60, "image_id": [6], "bbox": [1, 1, 5, 5], "category_id": 1, "att_vec": [1, 0, 0, 0]},
        "garbage",
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "dining table"}]
    return write_json(tmp_path / "ovad2000.json", {"info": {}, "images": images, "annotations": anns,
                                                   "categories": categories, "attributes": ATTRIBUTES})


def test_config_and_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        OvadConfig(annotations="x.json", group_by="colour")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not exist"):
        OvadSource(OvadConfig(annotations=str(tmp_path / "missing.json")))
    bad = write_json(tmp_path / "bad.json", {"images": [], "annotations": []})
    with pytest.raises(DataError, match="'attributes' list"):
        OvadSource(OvadConfig(annotations=str(bad)))
    nameless = write_json(tmp_path / "nameless.json", {"images": [], "annotations": [], "categories": [],
                                                       "attributes": [{"id": 0}]})
    with pytest.raises(DataError, match="no usable attribute"):
        OvadSource(OvadConfig(annotations=str(nameless)))


def test_reads_objects_with_their_attributes_and_counts_bad_parts(tmp_path: Path) -> None:
    path = annotations(tmp_path)
    source = OvadSource(OvadConfig(annotations=str(path), image_root=str(tmp_path / "val2017")))
    samples = collect(source)
    assert [s.key for s in samples] == ["ovad:1", "ovad:2"]
    a, b = samples
    assert a.image is not None and a.image.shape == (3, 50, 100) and a.captions == ()
    assert [c.text for c in a.concepts] == ["person", "object"]  # category 99 is not in the list
    assert all(c.kind == ConceptKind.OBJECT for c in (*a.concepts, *b.concepts))
    # pixels [x, y, w, h] → normalised (cx, cy, w, h)
    assert a.concepts[0].box == pytest.approx((0.2, 0.3, 0.2, 0.2)) and a.concepts[1].box == pytest.approx((0.75, 0.5, 0.5, 1.0))
    # 1 → "group:phrase", −1 → "?group:phrase", 0 → left out; slot 3 (the dropped attribute) ignored
    assert a.concepts[0].attributes == ("cleanliness:clean/neat", "?material:wooden/wood")
    assert a.concepts[1].attributes == ("color:red",)
    assert b.concepts[0].attributes == ("material:wooden/wood", "color:red")  # attribute_ids: positives
    assert b.concepts[1].text == "object" and b.concepts[1].attributes == (
        "?cleanliness:clean/neat", "?color:red", "?material:wooden/wood")
    assert source.skipped == {"missing_file": 1, "unreadable_image": 1, "no_usable_objects": 1}
    assert source.dropped == {"bad_attribute": 1, "box_zero_area": 1, "bad_att_vec": 2, "unknown_attribute": 1,
                              "bad_box": 1, "no_attributes": 1}


@pytest.mark.parametrize(
    ("group_by", "first"),
    [("type", "cleanliness:clean/neat"), ("parent_type", "state:clean/neat"), ("freq_set", "head:clean/neat"),
     ("none", "clean/neat")],
)
def test_group_by_names_the_attribute_groups(tmp_path: Path, group_by: str, first: str) -> None:
    config = OvadConfig(annotations=str(annotations(tmp_path)), image_root=str(tmp_path / "val2017"),
                        group_by=group_by, sets=("val",))  # type: ignore[arg-type]
    samples = collect(OvadSource(config))
    assert [s.key for s in samples] == ["ovad:1"]  # image 2 is in the train set
    assert samples[0].concepts[0].attributes[0] == first


def test_the_attributes_task_reads_positives_unknowns_and_groups(tmp_path: Path) -> None:
    source = OvadSource(OvadConfig(annotations=str(annotations(tmp_path)), image_root=str(tmp_path / "val2017")))
    data = attribute_set(collect(source), {}, size=16)
    assert data.phrases == ["clean/neat", "wooden/wood", "red"]
    assert data.groups == {"cleanliness": [0], "material": [1], "color": [2]}
    assert data.texts == ["person", "object", "dining table", "object"]
    assert data.positive.tolist() == [[True, False, False], [False, False, True], [False, True, True],
                                      [False, False, False]]
    assert data.unknown.tolist() == [[False, True, False], [False, False, False], [False, False, False],
                                     [True, True, True]]
    assert data.image_index.tolist() == [0, 0, 1, 1] and data.images.shape == (2, 3, 16, 16)
    assert parse_attribute("?material:wooden/wood").known is False
    assert torch.equal(data.positive & data.unknown, torch.zeros_like(data.positive))
