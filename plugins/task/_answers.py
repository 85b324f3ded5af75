"""Shared parts of the question-answering tasks (vqa, video_qa): the candidate answer list, QA batches and
the answer classifier.

The candidate list is either a file (a JSON list of strings, e.g. VQA v2's official `answer_list.json`
with 3,129 answers) or, when the task's config names none, the `answer_list_size` most frequent
normalised answers of the first `answers_scan` records of the `answers_from` data source, counted when
the task is built. Either way `export_config` writes the list into the checkpoint, so a fine-tuned task
rebuilds with the same candidates and no training data.

Shapes: B questions, A answers (a question has several in training), C candidates, L tokens, D fusion
width, F frames.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from x2vlm_core.plugin_api import (
    ConfigError,
    Preprocess,
    QASample,
    Record,
    TokenizedText,
    frame_indices,
    normalise,
    normalize_answer,
    resize,
    seq2seq_texts,
)

__all__ = [
    "ANSWER_READERS",
    "AnswerClassifier",
    "AnswerList",
    "AnswerListConfig",
    "QABatch",
    "answer_counts",
    "build_answer_list",
    "qa_batches",
    "qa_records",
    "qa_visuals",
    "read_answer_list",
]

# Data plugins `answers_from` may name: a task may import sibling plugin modules, not the registry.
ANSWER_READERS = ("synthetic", "vqa_json", "video_qa_json")
ANSWER_FILE = "answer_list.json"


class AnswerListConfig(BaseModel):
    """Where a QA task's candidate answers come from (exactly one of `answer_list`, `answers_from`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    answer_list: str | None = Field(
        None, description="JSON file holding a list of candidate answers (VQA v2: the official answer_list.json); "
        "unset = the answer_list_size most frequent answers of answers_from",
    )
    answers_from: dict[str, Any] | None = Field(
        None, description=f"a data source section ({{plugin: {' | '.join(ANSWER_READERS)}, ...fields}}) whose "
        "answers are counted when the task is built; the list is saved in the checkpoint",
    )
    answer_list_size: int = Field(3129, gt=0, description="candidates kept from answers_from (most frequent first)")
    answers_scan: int = Field(20000, gt=0, description="records of answers_from read to count answers")

    @field_validator("answers_from")
    @classmethod
    def _known_reader(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("plugin") not in ANSWER_READERS:
            raise ValueError(f"answers_from needs a `plugin` key, one of {', '.join(ANSWER_READERS)} "
                             f"(got {value.get('plugin')!r}); or give an answer_list file instead")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> AnswerListConfig:
        if (self.answer_list is None) == (self.answers_from is None):
            raise ValueError("set exactly one of answer_list (a JSON list of candidate answers) and answers_from "
                             "(a data source whose most frequent answers become the candidates)")
        return self


class AnswerList:
    """Candidate answers [C]; a human answer matches the candidate with the same normalised form."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = tuple(texts)
        self._index: dict[str, int] = {}
        for i, text in enumerate(self.texts):
            self._index.setdefault(normalize_answer(text), i)  # a later duplicate never wins

    def __len__(self) -> int:
        return len(self.texts)

    def find(self, answer: str) -> int | None:
        """The candidate index of a (raw) answer, or None when it is outside the list."""
        return self._index.get(normalize_answer(answer))

    def shares(self, answers: Sequence[str]) -> dict[int, float]:
        """Candidate index → share of the human answers naming it (in-list answers only; may sum below 1)."""
        counts = Counter(i for a in answers if (i := self.find(a)) is not None)
        return {i: n / len(answers) for i, n in counts.items()}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(list(self.texts), ensure_ascii=False, indent=0), encoding="utf-8")


def read_answer_list(path: str | Path, who: str) -> AnswerList:
    """A JSON list of answer strings; a ConfigError naming the file when it is missing, not JSON, or empty."""
    where = f"task {who} (field answer_list)"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("task.answer_list", f"{where}: the answer list file {str(path)!r} does not exist", str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError("task.answer_list", f"{where}: cannot read {str(path)!r} as JSON ({error})", str(path)) from None
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise ConfigError("task.answer_list", f"{where}: {str(path)!r} must hold a JSON list of answer strings",
                          str(path))
    texts = [a for a in data if normalize_answer(a)]
    if not texts:
        raise ConfigError("task.answer_list", f"{where}: {str(path)!r} holds no answers; give a non-empty list "
                          "(VQA v2: answer_list.json, 3,129 answers) or set answers_from instead", str(path))
    return AnswerList(texts)


def _reader(section: Mapping[str, Any]) -> Any:
    """The data source of an `answers_from` section, built directly from its sibling plugin module."""
    fields_ = {k: v for k, v in section.items() if k not in ("plugin", "weight")}
    plugin = section["plugin"]
    if plugin == "synthetic":
        from plugins.data.synthetic import Synthetic, SyntheticConfig

        return Synthetic(SyntheticConfig.model_validate(fields_))
    if plugin == "vqa_json":
        from plugins.data.vqa_json import VqaJsonConfig, VqaJsonSource

        return VqaJsonSource(VqaJsonConfig.model_validate(fields_))
    from plugins.data.video_qa_json import VideoQaJsonConfig, VideoQaJsonSource

    return VideoQaJsonSource(VideoQaJsonConfig.model_validate(fields_))


def _answer_tuples(source: Any, limit: int) -> Iterator[Sequence[str]]:
    """The human answers of the first `limit` records, without decoding images where the source allows."""
    if hasattr(source, "answer_texts"):  # the JSON readers: straight from the annotation file
        return itertools.islice(source.answer_texts(), limit)
    if hasattr(source, "plan"):  # synthetic: the plans behind the records, without rendering
        return ((source.plan(i).answer,) for i in range(limit))
    return (r.answers for r in itertools.islice(iter(source), limit) if isinstance(r, QASample))


def answer_counts(section: Mapping[str, Any], limit: int, who: str) -> Counter[str]:
    """Normalised answer → count (repeats counted) over the first `limit` records of a data source section."""
    counts: Counter[str] = Counter()
    try:
        for answers in _answer_tuples(_reader(section), limit):
            counts.update(n for a in answers if (n := normalize_answer(a)))
    except (ValueError, OSError) as error:  # a bad section, a missing file, a kind without answers
        raise ConfigError("task.answers_from", f"task {who}: cannot read the answers_from source "
                          f"({type(error).__name__}: {error})", section.get("plugin")) from None
    if not counts:
        raise ConfigError("task.answers_from", f"task {who}: the answers_from source yielded no answers "
                          "(check its paths and split)", section.get("plugin"))
    return counts


def build_answer_list(config: AnswerListConfig, who: str) -> AnswerList:
    """The task's candidates: the answer_list file, or the most frequent answers of answers_from."""
    if config.answer_list is not None:
        return read_answer_list(config.answer_list, who)
    assert config.answers_from is not None  # the config's validator asks for one of the two
    counts = answer_counts(config.answers_from, config.answers_scan, who)
    return AnswerList([a for a, _ in counts.most_common(config.answer_list_size)])


def export_answer_list(answers: AnswerList, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
    """The config with the candidate list written into the checkpoint (answers_from dropped)."""
    path = asset_dir / ANSWER_FILE
    answers.save(path)
    return {**config, "answer_list": str(path), "answers_from": None}


# ------------------------------------------------------------------ batches
@dataclass
class QABatch:
    """Questions about visuals: visuals [B, 3, H, W] or [B, F, 3, H, W] (normalised), question [B, Lq];
    decoder targets answer [A, La] with owner [A] (question index) and weight [A] (generate mode: answer is
    "[CLS] prompt answer [SEP]" and prompt_lengths [A] its prompt tokens); classifier targets target [B, C]
    (answer shares); outside [] (questions of the draw none of whose answers is a candidate).
    Not frozen: Fabric's precision plugins set fields one by one."""

    visuals: Tensor
    question: TokenizedText
    answer: TokenizedText
    owner: Tensor
    weight: Tensor
    target: Tensor
    outside: Tensor
    prompt_lengths: Tensor

    @property
    def size(self) -> int:
        return int(self.visuals.shape[0])

    @property
    def video(self) -> bool:
        return self.visuals.dim() == 5

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QABatch:
        return QABatch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})


def qa_records(records: Iterable[Record], who: str, video: bool) -> list[QASample]:
    """The QASamples of an evaluation, checked: images (or clips with `video`) with human answers."""
    out = []
    for r in records:
        if not isinstance(r, QASample):
            raise ValueError(f"task {who}: evaluation record {getattr(r, 'key', '?')!r} is a {type(r).__name__}; "
                             "the task reads QASample records (a data source of kind vqa / video_qa)")
        _check_visual(r, who, video)
        if not r.answers:
            raise ValueError(f"task {who}: evaluation record {r.key!r} has no human answers (a test split?); "
                             "evaluate on a split with answers")
        out.append(r)
    if not out:
        raise ValueError(f"task {who}: no evaluation records")
    return out


def _check_visual(record: QASample, who: str, video: bool) -> None:
    if (record.frames is not None) != video:
        has, wants = ("a clip", "images (use the video_qa task)") if record.frames is not None else (
            "an image", "clips (use the vqa task)")
        raise ValueError(f"task {who}: record {record.key!r} from {record.source!r} holds {has}; this task reads {wants}")


def qa_visuals(records: Sequence[QASample], prep: Preprocess, frames: int) -> Tensor:
    """Normalised visuals of QASamples: images [B, 3, S, S] or clips [B, frames, 3, S, S] (frames sub-sampled)."""
    if records[0].frames is not None:
        clips = [r.frames[frame_indices(r.frames.shape[0], frames)] for r in records]  # type: ignore[index]
        pixels = torch.stack([resize(c, prep.image_size) for c in clips])
    else:
        pixels = torch.stack([resize(r.image, prep.image_size) for r in records])  # type: ignore[arg-type]
    return normalise(pixels, prep.mean, prep.std)


def qa_batches(
    records: Iterator[Record], prep: Preprocess, batch_size: int, answers: AnswerList, who: str, video: bool,
    frames: int, decoder: bool, max_answer_len: int, prompt: str | None = None,
) -> Iterator[QABatch]:
    """Endless QABatches. Decoder targets: each question's distinct normalised answers, weighted by their share
    of its human answers (all answers, in the list or not: the decoder writes text); with `prompt` (generate
    mode, a template with {question}) each answer continues its question's prompt. Classifier targets:
    the shares of in-list answers; a question with none is skipped (and counted in `outside`)."""
    tokenizer = prep.tokenizer
    while True:
        chunk: list[QASample] = []
        outside = 0
        while len(chunk) < batch_size:
            record = next(records)
            if not isinstance(record, QASample) or not record.answers:
                continue
            _check_visual(record, who, video)
            if not answers.shares(record.answers):
                outside += 1
                if not decoder:
                    continue
            chunk.append(record)
        texts, owner, weight = [], [], []
        for i, r in enumerate(chunk):
            counts = Counter(n for a in r.answers if (n := normalize_answer(a)))
            for text, n in counts.items():
                texts.append(text)
                owner.append(i)
                weight.append(n / len(r.answers))
        target = torch.zeros(len(chunk), 0 if decoder else len(answers))
        if not decoder:
            for i, r in enumerate(chunk):
                shares = answers.shares(r.answers)
                total = sum(shares.values())
                for j, share in shares.items():
                    target[i, j] = share / total  # a distribution over the in-list answers
        prompt_lengths = torch.zeros(0, dtype=torch.long)
        if prompt is not None:
            prompts = [prompt.format(question=chunk[i].question) for i in owner]
            ids, mask, prompt_lengths = seq2seq_texts(tokenizer, prompts, texts, prep.max_text_len)
            answer = TokenizedText(ids, mask, torch.full_like(ids, -1))
        else:
            answer = tokenizer(texts, max_answer_len) if decoder else _no_text()
        yield QABatch(
            visuals=qa_visuals(chunk, prep, frames),
            question=tokenizer([r.question for r in chunk], prep.max_text_len),
            answer=answer,
            owner=torch.tensor(owner if decoder else [], dtype=torch.long),
            weight=torch.tensor(weight if decoder else [], dtype=torch.float32),
            target=target,
            outside=torch.tensor(float(outside)),
            prompt_lengths=prompt_lengths,
        )


def _no_text() -> TokenizedText:
    """No texts [0, 0] (a classifier batch has no decoder targets)."""
    empty = torch.zeros(0, 0, dtype=torch.long)
    return TokenizedText(empty, empty.bool(), empty.clone())


# ------------------------------------------------------------------ classifier
class AnswerClassifier(nn.Module):
    """Fused [CLS] [B, D] → candidate logits [B, C]: Linear(D, 2D) → LayerNorm → GELU → Linear(2D, C)."""

    def __init__(self, width: int, candidates: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.LayerNorm(2 * width), nn.GELU(),
                                 nn.Linear(2 * width, candidates))
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, cls: Tensor) -> Tensor:
        out: Tensor = self.mlp(cls)
        return out
