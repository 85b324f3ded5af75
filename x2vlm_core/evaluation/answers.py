"""VQA v2 answer normalisation and soft accuracy, overall and per question type (pure Python, no torch).

Normalisation follows the steps the VQA evaluation page publishes, applied to predictions and human
answers alike:
  1. lower case; newlines and tabs become spaces;
  2. periods are removed except in decimals (a period followed by a digit stays: "2.5", ".5");
  3. a comma between digits is removed ("100,978" → "100978");
  4. the official punctuation set  ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !  becomes spaces
     (apostrophes and colons stay: "girl's", "2:50");
  5. per word: number words zero..ten (and "none", as the official script maps it) become digits,
     the articles a, an, the are dropped, contractions missing their apostrophe get it back
     ("dont" → "don't", "couldntve" → "couldn't've"); words are joined by single spaces.
The official script removes (instead of spacing) a mark that also touches a space elsewhere in the same
answer; this module spaces it as the published description says. The two differ only for answers like
"x-y z- w", which word splitting then treats differently.

Soft accuracy of a prediction against n ≥ 2 human answers: for each annotator i,
acc_i = min(#{other annotators j ≠ i who gave the prediction} / 3, 1), and the score is the mean of acc_i
over the n leave-one-out subsets (VQA v2: 10 choose 9). It differs from min(#matches / 3, 1) when 1–3
annotators match: 0.3, 0.6 and 0.9 instead of 1/3, 2/3 and 1.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import NamedTuple

__all__ = ["AnswerItem", "VqaScores", "answer_accuracy", "normalize_answer", "vqa_scores"]

_PUNCTUATION = frozenset(';/[]"{}()=+\\_-><@`,?!')
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})

# Contractions written correctly; every spelling with some apostrophes dropped maps back to them.
_CONTRACTIONS = (
    "ain't aren't can't couldn't didn't doesn't don't hadn't hasn't haven't isn't mightn't mustn't "
    "needn't shan't shouldn't wasn't weren't won't wouldn't "
    "couldn't've hadn't've mightn't've mustn't've shouldn't've wouldn't've "
    "could've might've must've should've would've i've you've we've they've who've "
    "i'll you'll he'll she'll it'll we'll they'll that'll there'll who'll what'll "
    "you're we're they're who're what're "
    "he's she's it's that's there's here's what's where's who's how's let's "
    "somebody's someone's something's "
    "i'd you'd he'd she'd it'd we'd they'd who'd there'd what'd where'd how'd why'd "
    "i'd've you'd've he'd've she'd've it'd've we'd've they'd've who'd've "
    "i'm y'all ma'am o'clock"
).split()
# Dropping the apostrophe from these gives an ordinary English word; leave those words alone.
_REAL_WORDS = frozenset({"hell", "id", "ill", "its", "lets", "shed", "shell", "wed", "well", "were", "whore"})

_COMMA_IN_NUMBER = re.compile(r"(?<=\d),(?=\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")


def _apostrophe_variants(word: str) -> set[str]:
    """All spellings of `word` with a non-empty subset of its apostrophes removed."""
    parts = word.split("'")
    gaps = range(len(parts) - 1)
    out = set()
    for drop in range(1, len(parts)):
        for dropped in combinations(gaps, drop):
            out.add("".join(p + ("" if i in dropped or i == len(parts) - 1 else "'") for i, p in enumerate(parts)))
    return out


def _build_contraction_map() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CONTRACTIONS:
        for variant in _apostrophe_variants(word):
            if variant not in _REAL_WORDS:
                table[variant] = word
    return table


_CONTRACTION_MAP = _build_contraction_map()


def normalize_answer(text: str) -> str:
    """One answer string → its normalised form (steps in the module docstring); e.g. "Two dogs." → "2 dogs"."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _PERIOD_NOT_DECIMAL.sub("", text)
    text = _COMMA_IN_NUMBER.sub("", text)
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTION_MAP.get(word, word))
    return " ".join(words)


def _soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Leave-one-out soft accuracy of a normalised prediction against normalised answers (n ≥ 2)."""
    matches = sum(answer == prediction for answer in answers)
    total = 0.0
    for own in answers:
        # The left-out annotator's own answer leaves the count of matches among the other n - 1.
        others = matches - (own == prediction)
        total += min(others / 3.0, 1.0)
    return total / len(answers)


def answer_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA soft accuracy in [0, 1] of one prediction against its human answers (repeats kept).

    Both sides are normalised first. Needs at least 2 answers (VQA v2 has 10): with one annotator, no
    leave-one-out subset has anyone left to agree with.
    """
    if isinstance(answers, str):
        raise TypeError("answer_accuracy: answers must be a sequence of strings, not one string")
    if len(answers) < 2:
        raise ValueError(
            f"answer_accuracy: needs at least 2 human answers (VQA v2 has 10), got {len(answers)}; "
            "score single-answer sets by exact match of normalize_answer instead"
        )
    return _soft_accuracy(normalize_answer(prediction), [normalize_answer(a) for a in answers])


class AnswerItem(NamedTuple):
    """One question's prediction, its human answers (repeats kept) and its question type."""

    prediction: str
    answers: Sequence[str]
    question_type: str


@dataclass(frozen=True)
class VqaScores:
    """overall: mean soft accuracy in [0, 1]; per_type: the mean per question type; counts: questions per type."""

    overall: float
    per_type: dict[str, float]
    counts: dict[str, int]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}vqa_acc": self.overall}
        out.update({f"{prefix}vqa_acc/{name}": value for name, value in self.per_type.items()})
        return out


def vqa_scores(items: Iterable[AnswerItem | tuple[str, Sequence[str], str]]) -> VqaScores:
    """Soft accuracy over (prediction, answers, question_type) items → overall and per-type means."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    total, n = 0.0, 0
    for index, item in enumerate(items):
        prediction, answers, question_type = item
        try:
            acc = answer_accuracy(prediction, answers)
        except (TypeError, ValueError) as error:
            raise ValueError(f"vqa_scores: item {index} (question type {question_type!r}): {error}") from error
        sums[question_type] += acc
        counts[question_type] += 1
        total, n = total + acc, n + 1
    if n == 0:
        raise ValueError("vqa_scores: got no items; pass at least one (prediction, answers, question_type)")
    per_type = {name: sums[name] / counts[name] for name in sorted(counts)}
    return VqaScores(overall=total / n, per_type=per_type, counts=dict(sorted(counts.items())))
