"""nlvr2_json: NLVR2 records (JSON lines or a list; `images` or the official identifier names) → PairSamples;
a record with a bad image is skipped whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import image_bytes, write_json, write_jsonl, write_truncated

from plugins.data.nlvr2_json import Nlvr2JsonConfig, Nlvr2JsonSource, pair_paths
from x2vlm_core.contracts import PairSample
from x2vlm_core.data.errors import BadRecord, DataError


def _image(path: Path, colour: tuple[int, int, int], width: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(width, 16, colour=colour))


def test_identifier_names_follow_the_official_layout() -> None:
    left, right = pair_paths({"identifier": "train-10171-0-0", "directory": 7}, "/nlvr/train", ".png")
    assert (left, right) == (Path("/nlvr/train/7/train-10171-0-img0.png"), Path("/nlvr/train/7/train-10171-0-img1.png"))
    left, _ = pair_paths({"identifier": "dev-850-0-3"}, "/nlvr/dev", ".png")  # dev/test: no directory
    assert left == Path("/nlvr/dev/dev-850-0-img0.png")
    listed = pair_paths({"images": ["a.jpg", "b.jpg"], "identifier": "dev-1-0-0"}, "/r", ".png")
    assert listed == (Path("/r/a.jpg"), Path("/r/b.jpg"))  # `images` wins
    with pytest.raises(BadRecord, match="two paths"):
        pair_paths({"images": ["a.jpg"]}, "", ".png")
    with pytest.raises(BadRecord, match="identifier"):
        pair_paths({"identifier": "nodashes"}, "", ".png")


def test_official_json_lines(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _image(root / "3" / "train-1-0-img0.png", (250, 0, 0))
    _image(root / "3" / "train-1-0-img1.png", (0, 0, 250), width=32)
    _image(root / "3" / "train-2-0-img0.png", (0, 250, 0))  # its right image is missing
    _image(root / "train-4-1-img0.png", (9, 9, 9))
    write_truncated(root / "train-4-1-img1.png")  # right image unreadable
    path = write_jsonl(tmp_path / "train.json", [
        {"identifier": "train-1-0-0", "directory": 3, "sentence": "One red image.", "label": "True"},
        {"identifier": "train-1-0-1", "directory": 3, "sentence": "Two dogs.", "label": "False"},
        {"identifier": "train-2-0-0", "directory": 3, "sentence": "x", "label": "True"},  # missing_file
        {"identifier": "train-4-1-0", "sentence": "x", "label": "True"},  # unreadable_image
        {"identifier": "train-1-0-2", "directory": 3, "sentence": "x", "label": "maybe"},  # bad_label
        {"identifier": "train-1-0-3", "directory": 3, "sentence": "", "label": "True"},  # no_sentence
        {"identifier": "x", "sentence": "x", "label": "True"},  # bad_images
        b"{",  # bad_json
    ])
    source = Nlvr2JsonSource(Nlvr2JsonConfig(annotations=(str(path),), image_root=str(root)))
    first, second = list(source)
    assert isinstance(first, PairSample) and first.key == "nlvr2_json:train-1-0-0"
    assert first.text == "One red image." and first.label is True and second.label is False
    left, right = first.images
    assert tuple(left.shape) == (3, 16, 24) and tuple(right.shape) == (3, 16, 32)
    assert left[0].float().mean() > 200 and right[2].float().mean() > 200  # left is img0 (red), right img1 (blue)
    assert source.skipped == {"missing_file": 1, "unreadable_image": 1, "bad_label": 1, "no_sentence": 1,
                              "bad_images": 1, "bad_json": 1}


def test_json_list_with_image_paths_and_numeric_labels(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "l.png", (250, 0, 0))
    _image(tmp_path / "img" / "r.png", (0, 250, 0))
    path = write_json(tmp_path / "nlvr_dev.json", [
        {"images": ["l.png", "r.png"], "sentence": "a", "label": 1},
        {"images": ["r.png", "l.png"], "sentence": "b", "label": 0},
        {"images": ["l.png", "gone.png"], "sentence": "c", "label": 1},  # missing right image
        {"images": ["l.png", "r.png"], "sentence": "d", "label": True},
    ])
    source = Nlvr2JsonSource(Nlvr2JsonConfig(annotations=(str(path),), image_root=str(tmp_path / "img")))
    records = list(source)
    assert [(r.text, r.label) for r in records] == [("a", True), ("b", False), ("d", True)]
    assert torch.equal(records[0].images[0], records[1].images[1])  # the listed order is kept
    assert source.skipped == {"missing_file": 1}
    assert records[0].key == "nlvr_dev.json:0"  # no identifier: file and position


def test_missing_annotation_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no files match"):
        Nlvr2JsonSource(Nlvr2JsonConfig(annotations=(str(tmp_path / "none.json"),)))
    path = write_json(tmp_path / "obj.json", {"a": 1})
    (tmp_path / "obj.json").write_text('[{"a": 1}')  # a list that never closes
    source = Nlvr2JsonSource(Nlvr2JsonConfig(annotations=(str(path),)))
    with pytest.raises(DataError, match="obj.json.*not valid JSON"):
        list(source)
