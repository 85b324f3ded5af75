"""VQA v2 questions in the layout of the reference code's annotation files (Goyal et al., CVPR 2017).

Layout: one or more JSON files, each a list of `{"question_id": 262148000, "image": "val2014/COCO_val2014_
000000262148.jpg", "question": "Where is he looking?", "answer": ["down", "down", ...],
"question_type": "where is"}` (`answer` may be one string; `question_type` is optional, and `answer_type`
is used when it is missing); an image lives at `image_root/image` (`vg_root/image` for records with
`"dataset": "vg"` when vg_root is set). A record whose question or answers are
missing or malformed, or whose image cannot be read, is skipped and counted. Test files carry no
answers: set `require_answers: false` to read their questions (answers come out empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pydantic import Field

from x2vlm_core.plugin_api import (
    BadRecord,
    PluginSpec,
    QASample,
    RecordSource,
    RecordSourceConfig,
    SourceName,
    clean_texts,
    entry_records,
    hookimpl,
    load_image,
    read_json_list,
)

__all__ = ["VqaJsonConfig", "VqaJsonSource"]


class VqaJsonConfig(RecordSourceConfig):
    name: SourceName = "vqa_json"
    annotations: tuple[str, ...] = Field(..., min_length=1, description="JSON files, each a list of questions")
    image_root: str = Field("", description="directory that `image` paths are relative to")
    vg_root: str | None = Field(None, description="directory of records with dataset: vg (Visual Genome QA, as in "
                                "the reference code's vg_qa.json); unset = image_root")
    require_answers: bool = Field(True, description="skip questions without answers (false: test files)")
    language: str = Field("en", description="language of the questions")


def _answers(record: dict[str, object], required: bool) -> tuple[str, ...]:
    value = record.get("answer", record.get("answers"))
    if value is None or value == []:
        if required:
            raise BadRecord("no_answers", "no `answer` list")
        return ()
    if isinstance(value, list):  # the official JSON holds {"answer": ...} dicts in some exports
        value = [a.get("answer") if isinstance(a, dict) else a for a in value]
    return clean_texts(value, "answer")


def question_of(record: object) -> tuple[dict[str, object], str]:
    """A question record as a dict and its question text (undecodable bytes refused)."""
    if not isinstance(record, dict):
        raise BadRecord("bad_json_type", "a question must be a JSON object")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRecord("no_question", "`question` must be a non-empty string")
    return record, clean_texts(question, "question")[0]


def well_formed_answers(entries: Iterable[object],
                        answers: Callable[[dict[str, object]], tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    """The answers of every entry that has some, in file order, reading no image or video (for building a
    task's candidate list)."""
    for entry in entries:
        if isinstance(entry, dict):
            try:
                yield answers(entry)
            except BadRecord:
                continue


class VqaJsonSource(RecordSource):
    """VQA v2 annotation lists → QASamples (image [3, H, W] uint8, question, human answers with repeats)."""

    def __init__(self, config: VqaJsonConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        layout = "questions ({question_id, image, question, answer: [...]})"
        self.entries = [e for path in config.annotations for e in read_json_list(path, config.name, layout)]

    def _records(self) -> Iterator[tuple[str, object]]:
        return entry_records(self.name, self.entries, ("question_id",))

    def _parse(self, record_id: str, record: object) -> Iterable[QASample]:
        record, question = question_of(record)
        answers = _answers(record, self.config.require_answers)
        image = record.get("image")
        if not isinstance(image, str) or not image:
            raise BadRecord("bad_json_type", "`image` must be a non-empty path string")
        qtype = record.get("question_type", record.get("answer_type", ""))
        root = self.config.vg_root if record.get("dataset") == "vg" and self.config.vg_root is not None else \
            self.config.image_root
        pixels = load_image(Path(root) / image, self.max_pixels)  # last: the costly part
        return [QASample(record_id, self.name, pixels, None, question, answers,
                         qtype if isinstance(qtype, str) else "", self.config.language)]

    def answer_texts(self) -> Iterator[tuple[str, ...]]:
        """The human answers of every well-formed question (see well_formed_answers)."""
        return well_formed_answers(self.entries, lambda entry: _answers(entry, required=True))


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="vqa_json", config=VqaJsonConfig, factory=VqaJsonSource)]
