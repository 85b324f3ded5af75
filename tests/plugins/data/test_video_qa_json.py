"""video_qa_json: MSRVTT-QA / MSVD-QA question lists → clip QASamples; ids become file names; bad videos counted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import write_json, write_mp4

from plugins.data.video_qa_json import VideoQaJsonConfig, VideoQaJsonSource, question_type
from x2vlm_core.contracts import QASample
from x2vlm_core.data.errors import DataError


def test_question_types() -> None:
    assert question_type({}, "What is a man doing?") == "what"
    assert question_type({}, "is it raining") == "other"
    assert question_type({"question_type": "count"}, "how many") == "count"


def test_reads_clips_by_path_and_by_id(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    write_mp4(videos / "video7010.mp4", seconds=4, fps=4)
    (videos / "junk.mp4").write_bytes(b"\x00" * 64)
    path = write_json(tmp_path / "train_qa.json", [
        {"id": 0, "video_id": 7010, "question": "what is a man doing?", "answer": "sing"},
        {"id": 1, "video": "video7010", "question": "who sings?", "answer": ["man", "man", "boy"]},
        {"id": 2, "video": "video7010.mp4", "question": "how fast?", "answer": "slow", "type": "how"},
        {"id": 3, "video": "junk.mp4", "question": "what?", "answer": "x"},  # unreadable_video
        {"id": 4, "video": "gone.mp4", "question": "what?", "answer": "x"},  # missing_file
        {"id": 5, "video": "video7010.mp4", "question": "what?"},  # no_answers
        {"id": 6, "video": "video7010.mp4", "question": "", "answer": "x"},  # no_question
        {"id": 7, "video": 1.5, "question": "what?", "answer": "x"},  # bad_json_type
    ])
    cfg = VideoQaJsonConfig(annotations=(str(path),), video_root=str(videos), video_prefix="video", frames=4, size=16)
    source = VideoQaJsonSource(cfg)
    a, b, c = list(source)
    assert isinstance(a, QASample) and a.image is None and a.frames is not None
    assert a.frames.shape == (4, 3, 16, 16) and a.frames.dtype == torch.uint8
    levels = [round((m - 20) / 50) for m in a.frames.float().mean(dim=(1, 2, 3)).tolist()]
    assert levels == [0, 1, 2, 3]  # four frames spread over the four seconds
    assert a.key == "video_qa_json:0" and a.answers == ("sing",) and a.question_type == "what"
    assert b.answers == ("man", "man", "boy") and b.question_type == "who"
    assert c.question_type == "how"
    assert source.skipped in ({"unreadable_video": 1, "missing_file": 1, "no_answers": 1, "no_question": 1,
                               "bad_json_type": 1},
                              {"empty_video": 1, "missing_file": 1, "no_answers": 1, "no_question": 1,
                               "bad_json_type": 1})
    assert [t for t in source.answer_texts()][:3] == [("sing",), ("man", "man", "boy"), ("slow",)]
    # the id → name rule: prefix before numeric ids, extension after names without one, under video_root
    assert source.video_path({"video_id": 12}) == videos / "video12.mp4"
    assert source.video_path({"video": "12"}) == videos / "video12.mp4"
    assert source.video_path({"video": "-4wsuPCjDBc_5_15"}) == videos / "-4wsuPCjDBc_5_15.mp4"
    assert source.video_path({"video": "clips/x.avi"}) == videos / "clips" / "x.avi"


def test_not_a_list_is_an_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / "qa.json", {"video": "a.mp4"})
    with pytest.raises(DataError, match="qa.json.*JSON list"):
        VideoQaJsonSource(VideoQaJsonConfig(annotations=(str(path),)))
