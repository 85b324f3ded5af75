"""vqa_json: VQA v2 question lists → QASamples; bad questions, answers and images skipped and counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_fixtures import write_image, write_json, write_truncated
from pydantic import ValidationError

from plugins.data.vqa_json import VqaJsonConfig, VqaJsonSource
from x2vlm_core.contracts import QASample
from x2vlm_core.data.errors import DataError
from x2vlm_core.discovery import default_registry

TEN = ["2"] * 6 + ["3"] * 3 + ["two"]


def _files(root: Path) -> Path:
    write_image(root / "coco" / "val2014" / "a.jpg", 40, 30, "JPEG")
    write_image(root / "vg" / "b.png", 20, 20)
    write_truncated(root / "coco" / "cut.jpg")
    return write_json(root / "vqa_val.json", [
        {"question_id": 7, "image": "val2014/a.jpg", "question": "How many dogs?", "answer": TEN,
         "question_type": "how many"},
        {"question_id": 8, "image": "b.png", "question": "What colour?", "answer": "red", "dataset": "vg",
         "answer_type": "other"},
        {"question_id": 9, "image": "val2014/a.jpg", "question": "Is it day?", "answer": []},  # no_answers
        {"question_id": 10, "image": "val2014/a.jpg", "question": " ", "answer": ["yes"]},  # no_question
        {"question_id": 11, "image": "cut.jpg", "question": "Why?", "answer": ["x", "y"]},  # unreadable_image
        {"question_id": 12, "image": "gone.jpg", "question": "Why?", "answer": ["x", "y"]},  # missing_file
        {"question_id": 13, "image": 5, "question": "Why?", "answer": ["x", "y"]},  # bad_json_type
        {"question_id": 14, "image": "val2014/a.jpg", "question": "Why?", "answer": [3]},  # bad_json_type
        "not an object",  # bad_json_type
    ])


def test_reads_questions_and_counts_bad_records(tmp_path: Path) -> None:
    path = _files(tmp_path)
    source = VqaJsonSource(VqaJsonConfig(annotations=(str(path),), image_root=str(tmp_path / "coco"),
                                         vg_root=str(tmp_path / "vg")))
    a, b = list(source)
    assert isinstance(a, QASample) and a.key == "vqa_json:7" and a.frames is None
    assert a.image is not None and tuple(a.image.shape) == (3, 30, 40)
    assert a.question == "How many dogs?" and a.answers == tuple(TEN)  # repeats kept for the soft accuracy
    assert a.question_type == "how many" and a.language == "en"
    assert b.answers == ("red",) and b.question_type == "other"  # answer_type stands in
    assert b.image is not None and tuple(b.image.shape) == (3, 20, 20)  # read from vg_root
    assert source.skipped == {"no_answers": 1, "no_question": 1, "unreadable_image": 1, "missing_file": 1,
                              "bad_json_type": 3}
    # answers for the candidate list come straight from the file (no image read), the question check left to the records
    assert [len(t) for t in source.answer_texts()] == [10, 1, 1, 2, 2, 2]


def test_vg_records_use_image_root_without_vg_root_and_test_files_need_no_answers(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "b.png", 20, 20)
    path = write_json(tmp_path / "test.json", [
        {"question_id": 1, "image": "b.png", "question": "What is it?", "dataset": "vg"},
    ])
    strict = VqaJsonSource(VqaJsonConfig(annotations=(str(path),), image_root=str(tmp_path / "img")))
    assert list(strict) == [] and strict.skipped == {"no_answers": 1}
    lenient = VqaJsonSource(VqaJsonConfig(annotations=(str(path),), image_root=str(tmp_path / "img"),
                                          require_answers=False))
    (record,) = list(lenient)
    assert record.answers == () and record.question == "What is it?"


def test_bad_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="gone.json.*does not exist"):
        VqaJsonSource(VqaJsonConfig(annotations=(str(tmp_path / "gone.json"),)))
    path = write_json(tmp_path / "dict.json", {"questions": []})
    with pytest.raises(DataError, match="dict.json.*JSON list of questions"):
        VqaJsonSource(VqaJsonConfig(annotations=(str(path),)))
    with pytest.raises(ValidationError):
        VqaJsonConfig(annotations=())


def test_registered_and_sharded(tmp_path: Path) -> None:
    path = _files(tmp_path)
    section = {"plugin": "vqa_json", "annotations": [str(path)], "image_root": str(tmp_path / "coco"),
               "vg_root": str(tmp_path / "vg")}
    shards = [list(default_registry().build("data", section, "x", rank=r, world_size=2)) for r in (0, 1)]
    assert [[r.key for r in s] for s in shards] == [["vqa_json:7"], ["vqa_json:8"]]
