"""Video question answering in the MSRVTT-QA / MSVD-QA layout (Xu et al., ACM MM 2017) → clip QASamples.

Layout: one or more JSON files, each a list of `{"video": "video7010.mp4", "question": "what is a man
doing?", "answer": "sing"}`. `video` (or `video_id`, read when `video` is absent) is a path relative to
`video_root` or an id: a numeric id gets `video_prefix` before it (MSRVTT-QA's `"video_id": 7010` with
video_prefix "video" → video7010), and a name without a file extension gets `video_ext` after it
(ClipBERT's "video7010" → video7010.mp4; MSVD-QA's "-4wsuPCjDBc_5_15" with video_ext ".avi").
`answer` is one string (or a list: every human answer). The question type is the record's
`question_type` / `type` when given, else the question's first word when it is one of what / who / how
/ when / where (the types MSRVTT-QA results are reported by), else "other". Clips are decoded with
PyAV to `frames` uniformly spaced frames; a missing or undecodable video skips the record (counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from plugins.data.vqa_json import question_of, well_formed_answers
from x2vlm_core.plugin_api import (
    BadRecord,
    PluginSpec,
    QASample,
    RecordSource,
    RecordSourceConfig,
    SourceName,
    clean_texts,
    decode_video,
    entry_records,
    hookimpl,
    read_json_list,
)

__all__ = ["VideoQaJsonConfig", "VideoQaJsonSource", "question_type"]

_WH = ("what", "who", "how", "when", "where")


class VideoQaJsonConfig(RecordSourceConfig):
    name: SourceName = "video_qa_json"
    annotations: tuple[str, ...] = Field(..., min_length=1, description="JSON files, each a list of questions")
    video_root: str = Field("", description="directory that video paths are relative to")
    video_prefix: str = Field("", description="put before a numeric video id (MSRVTT-QA: 'video')")
    video_ext: str = Field(".mp4", description="put after a video name without extension (MSVD: '.avi')")
    frames: int = Field(5, gt=0, description="frames decoded per clip, uniformly spaced (MSRVTT-QA 5, MSVD-QA 8)")
    size: int | None = Field(None, gt=0, description="resize frames to size × size while decoding")
    seek_after_s: float = Field(10.0, ge=0.0, description="clips longer than this are read by seeking")
    language: str = Field("en", description="language of the questions")


def question_type(record: dict[str, object], question: str) -> str:
    """The record's own type, else its wh-word (what / who / how / when / where), else 'other'."""
    given = record.get("question_type", record.get("type"))
    if isinstance(given, str) and given:
        return given
    first = question.split()[0].lower() if question.split() else ""
    return first if first in _WH else "other"


def _answers(record: dict[str, object]) -> tuple[str, ...]:
    value = record.get("answer", record.get("answers"))
    if value is None:
        raise BadRecord("no_answers", "no `answer`")
    return clean_texts(value, "answer")


class VideoQaJsonSource(RecordSource):
    """MSRVTT-QA / MSVD-QA question lists → QASamples with clips uint8 [F, 3, H, W]."""

    def __init__(self, config: VideoQaJsonConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        layout = "{video, question, answer} records"
        self.entries = [e for path in config.annotations for e in read_json_list(path, config.name, layout)]

    def _records(self) -> Iterator[tuple[str, object]]:
        return entry_records(self.name, self.entries, ("id", "question_id"))

    def video_path(self, record: dict[str, object]) -> Path:
        """Where a record's clip is: its `video` path, or the file named after its video id."""
        video = record.get("video", record.get("video_id"))
        c = self.config
        if isinstance(video, bool) or not isinstance(video, (str, int)) or video == "":
            raise BadRecord("bad_json_type", "`video` (or `video_id`) must be a path string or an id")
        name = str(video)
        if isinstance(video, int) or name.isdigit():  # a numeric id: MSRVTT-QA's 7010 → video7010
            name = f"{c.video_prefix}{name}"
        if not Path(name).suffix:
            name += c.video_ext
        return Path(c.video_root) / name

    def _parse(self, record_id: str, record: object) -> Iterable[QASample]:
        record, question = question_of(record)
        answers = _answers(record)
        c = self.config
        frames = decode_video(self.video_path(record), c.frames, None, c.size, c.seek_after_s, c.max_pixels)
        return [QASample(record_id, self.name, None, frames, question, answers, question_type(record, question),
                         c.language)]

    def answer_texts(self) -> Iterator[tuple[str, ...]]:
        """The answers of every well-formed record (see plugins.data.vqa_json.well_formed_answers)."""
        return well_formed_answers(self.entries, _answers)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="video_qa_json", config=VideoQaJsonConfig, factory=VideoQaJsonSource)]
