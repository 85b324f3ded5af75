"""check_sources / format_report: every figure of the report, all record types, failing sources."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict

from registry import PluginRegistry, PluginSpec, hookimpl
from x2vlm_core.config import RunConfig
from x2vlm_core.contracts import (
    CompositionSample,
    Concept,
    PairSample,
    QASample,
    Record,
    Sample,
    TokenizedText,
)
from x2vlm_core.contracts.factories import KINDS
from x2vlm_core.data.check import DataReport, Spread, check_sources, format_report, token_lengths


class WordTokenizer:
    """One token per word, plus [CLS] and [SEP]; records the max_len of each call."""

    vocab_size, pad_id, cls_id, sep_id, mask_id, unk_id = 100, 0, 1, 2, 3, 4

    def __init__(self) -> None:
        self.max_lens: list[int] = []

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        self.max_lens.append(max_len)
        ids = torch.zeros(len(texts), max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            n = min(len(text.split()) + 2, max_len)
            ids[row, :n] = 5
        return TokenizedText(ids, ids != 0, torch.full_like(ids, -1))

    def save(self, directory: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def img(h: int, w: int) -> torch.Tensor:
    return torch.zeros(3, h, w, dtype=torch.uint8)


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "tasks"


class TaskRecords:
    """A third-party source (only name and skipped) yielding one record of every type."""

    def __init__(self, config: TaskConfig, rank: int = 0, world_size: int = 1) -> None:
        self.name, self.skipped = config.name, {"bad_answer": 1}

    def __iter__(self) -> Iterator[Record]:
        yield QASample("q", self.name, img(10, 20), None, "what colour is the big ball", ("red",) * 10)
        yield QASample("vq", self.name, None, torch.zeros(4, 3, 6, 8, dtype=torch.uint8), "what moves", ("dot",))
        yield PairSample("p", self.name, (img(30, 40), img(50, 60)), "both images show dogs", True)
        yield CompositionSample("c", self.name, (img(8, 8), img(8, 8)), ("a mug in grass", "grass in a mug"))
        yield Sample("s", self.name, img(12, 12), None, ("a",),
                     (Concept((0.5, 0.5, 0.2, 0.2), "ok box"), Concept((0.95, 0.5, 0.2, 0.2), "sticks out"),
                      Concept((0.5, 0.5, 0.0, 0.1), "flat")))
        yield Sample("v", self.name, None, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ("a clip",))
        yield Sample("n", self.name, None, None, ("no media",))


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec("data", "tasks", TaskConfig, TaskRecords)]


def registry() -> PluginRegistry:
    reg = PluginRegistry(KINDS)  # only what the test uses: loading every plugin would import open_clip & co
    for ep in entry_points(group="x2vlm"):
        if ep.name == "data.x2vlm_json":
            reg.register_module(ep.load(), ep.name)
    reg.register_module(__import__(__name__), "data.tasks")
    return reg


def run_config(sources: list[dict[str, object]], evaluation: list[dict[str, object]]) -> RunConfig:
    return RunConfig.model_validate({
        "model": {"vision": {"plugin": "v"}, "text": {"plugin": "t"}, "fusion": {"plugin": "f"}},
        "losses": [{"plugin": "contrastive"}],
        "data": {"sources": sources},
        "eval": {"data": evaluation},
    })


def corpus(tmp_path: Path) -> Path:
    for name, size in {"a.png": (40, 20), "b.png": (10, 30), "c.png": (16, 16)}.items():
        buffer = io.BytesIO()
        Image.new("RGB", size, (9, 9, 9)).save(buffer, format="PNG")
        (tmp_path / name).write_bytes(buffer.getvalue())
    lines = [
        {"image": "a.png", "caption": "one two three", "elems": [{"caption": "box", "bb": [0, 0, 10, 10]},
                                                                 {"caption": "gone", "bb": [99, 0, 5, 5]}]},
        {"image": "b.png", "caption": ["a b c d e f g h i j", "x"]},  # 12 tokens: longer than 8
        {"image": "missing.png", "caption": "x"},
        {"image": "c.png", "caption": "p q r s"},
        {"image": "c.png", "caption": "read last"},
    ]
    path = tmp_path / "pairs.json"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def test_report_of_a_file_source_and_a_task_source(tmp_path: Path) -> None:
    path = corpus(tmp_path)
    cfg = run_config([{"plugin": "x2vlm_json", "paths": [str(path)], "image_root": str(tmp_path), "name": "web"}],
                     [{"plugin": "tasks"}])
    report = check_sources(cfg, registry(), records=7, max_text_len=8, tokenizer=WordTokenizer())
    assert isinstance(report, DataReport) and report.errors == []
    web, tasks = report.sources
    assert (web.section, web.plugin, web.name, web.samples) == ("data.sources.0", "x2vlm_json", "web", 4)
    assert web.counts.records == 5 and web.counts.skipped == {"missing_file": 1}
    assert web.counts.dropped == {"box_outside_image": 1} and web.boxes_dropped == 1
    assert web.kinds == {"image": 4} and (web.boxes_valid, web.boxes_invalid) == (1, 0)
    assert web.captions.tokens == Spread(5, 3, 5, 12) and web.captions.truncated == 1  # 5, 12, 3, 6, 4 tokens
    assert web.concept_texts.tokens == Spread(1, 3, 3, 3) and web.concept_texts.truncated == 0
    assert web.image_size.width == Spread(4, 10, 16, 40) and web.image_size.height == Spread(4, 16, 18, 30)
    assert web.frames is None and web.seconds > 0

    assert tasks.section == "eval.data.0" and tasks.samples == 7
    assert tasks.kinds == {"qa_image": 1, "qa_video": 1, "image_pair": 1, "composition": 1, "image": 1,
                           "video": 1, "without_media": 1}
    assert tasks.counts.records is None and tasks.counts.skipped == {"bad_answer": 1}
    assert tasks.captions.tokens is not None and tasks.captions.tokens.count == 8  # 2 questions, 1 + 2 + 1 + 1 + 1
    assert (tasks.boxes_valid, tasks.boxes_invalid) == (1, 2)
    assert tasks.image_size.width == Spread(6, 8, 16, 60)  # QA 20, pair 40 + 60, composition 8 + 8, sample 12
    assert tasks.frames == Spread(2, 2, 3, 4) and tasks.frame_size.width == Spread(2, 4, 6, 8)

    text = format_report(report)
    assert text.splitlines()[0] == "data check: first 7 records of 2 source(s)"
    assert "data.sources.0 (x2vlm_json) 'web': 4 samples, 5 records read" in text
    assert "  skipped: 1 (missing_file 1)" in text and "  dropped parts: 1 (box_outside_image 1)" in text
    assert "  captions: 5 texts, tokens min 3, median 5, max 12; 1 longer than max_text_len 8 (truncated)" in text
    assert "  boxes: 1 valid, 0 invalid, 1 dropped by the source" in text
    assert "  image size: width min 10, median 16, max 40; height min 16, median 18, max 30" in text
    assert "eval.data.0 (tasks) 'tasks': 7 samples, records read: not counted by this source" in text
    assert "  frames per clip: min 2, median 3, max 4" in text
    assert text.splitlines()[-1] == "all sources read"


def test_failing_sources_are_reported_and_the_others_still_read(tmp_path: Path) -> None:
    path = corpus(tmp_path)
    bad_fraction = {"plugin": "x2vlm_json", "paths": [str(path)], "name": "strict", "max_bad_fraction": 0.0,
                    "min_records": 1}  # no image_root: every image is missing → DataError on the first record
    cfg = run_config([bad_fraction, {"plugin": "x2vlm_json", "paths": [str(tmp_path / "none*.json")]},
                      {"plugin": "nope"}],
                     [{"plugin": "tasks"}])
    report = check_sources(cfg, registry(), records=2, max_text_len=8, tokenizer=WordTokenizer())
    strict, empty, unknown, tasks = report.sources
    assert strict.error is not None and "max_bad_fraction" in strict.error and strict.samples == 0
    assert strict.counts.skipped == {"missing_file": 1}
    assert empty.error is not None and "no files match" in empty.error
    assert unknown.error is not None and "unknown data plugin 'nope'" in unknown.error
    assert tasks.error is None and tasks.samples == 2
    text = format_report(report)
    assert "  ERROR: DataError: data source 'strict'" in text
    assert text.splitlines()[-1].startswith("3 source(s) failed: data.sources.0: DataError")
    with pytest.raises(ValueError, match="records must be"):
        check_sources(cfg, registry(), records=0, max_text_len=8, tokenizer=WordTokenizer())


def test_token_lengths_are_measured_past_any_max_len() -> None:
    tok = WordTokenizer()
    texts = ["w " * 10, "w " * 100, "w " * 20_000]
    assert token_lengths(tok, texts) == [12, 102, 8192]  # 8192: the longest length measured
    assert tok.max_lens == [64, 256, 1024, 4096, 8192]  # only the texts that filled a call are tokenized again
