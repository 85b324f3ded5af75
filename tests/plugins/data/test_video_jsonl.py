"""video_jsonl: JSONL video-caption pairs decoded with PyAV; bad videos and lines counted, not raised."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import collect, write_jsonl, write_mp4
from pydantic import ValidationError

from plugins.data.video_jsonl import VideoJsonlConfig, VideoJsonlSource


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        VideoJsonlConfig(paths=("a",), codec="h264")
    with pytest.raises(ValidationError, match="frames and/or fps"):
        VideoJsonlConfig(paths=("a",), fps=None)


def test_decodes_clips_and_skips_bad_ones(tmp_path: Path) -> None:
    write_mp4(tmp_path / "v" / "a.mp4", seconds=3, fps=8)
    write_mp4(tmp_path / "v" / "b.mp4", seconds=2, fps=8)
    good = (tmp_path / "v" / "a.mp4").read_bytes()
    (tmp_path / "v" / "cut.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "v" / "junk.mp4").write_bytes(b"\x00" * 100)
    path = write_jsonl(
        tmp_path / "clips.jsonl",
        [
            {"video": "a.mp4", "caption": "grey clip"},
            {"video": "b.mp4", "text": ["short", "clip"]},
            {"video": "cut.mp4", "caption": "x"},  # truncated
            {"video": "junk.mp4", "caption": "x"},  # unreadable
            {"video": "gone.mp4", "caption": "x"},  # missing_file
            {"video": "a.mp4", "caption": ""},  # empty_caption
            {"video": "a.mp4"},  # empty_caption (no caption key)
            {"video": 3, "caption": "x"},  # bad_json_type
            b'{"video": "a.mp4", "caption": "caf\xe9"}',  # bad_utf8
            b"[",  # bad_json
        ],
    )
    cfg = VideoJsonlConfig(paths=(str(path),), video_root=str(tmp_path / "v"), fps=1.0, size=16)
    source = VideoJsonlSource(cfg)
    a, b = collect(source)
    assert a.image is None and a.frames is not None and a.frames.shape == (3, 3, 16, 16)
    assert a.frames.dtype == torch.uint8
    levels = [round((m - 20) / 50) for m in a.frames.float().mean(dim=(1, 2, 3)).tolist()]
    assert levels == [0, 1, 2]  # one frame from each second
    assert a.captions == ("grey clip",) and b.captions == ("short", "clip")
    assert b.frames is not None and b.frames.shape[0] == 2
    skipped = source.skipped
    assert skipped.pop("unreadable_video", 0) + skipped.pop("truncated_video", 0) == 2
    assert skipped == {
        "missing_file": 1,
        "empty_caption": 2,
        "bad_json_type": 1,
        "bad_utf8": 1,
        "bad_json": 1,
    }
    fixed = VideoJsonlSource(
        VideoJsonlConfig(paths=(str(path),), video_root=str(tmp_path / "v"), frames=4, fps=None)
    )
    assert next(iter(fixed)).frames.shape == (4, 3, 24, 32)  # type: ignore[union-attr]
    capped = VideoJsonlSource(VideoJsonlConfig(paths=(str(path),), video_root=str(tmp_path / "v"), max_pixels=200))
    assert next(iter(capped)).frames.shape == (3, 3, 12, 16)  # type: ignore[union-attr]
