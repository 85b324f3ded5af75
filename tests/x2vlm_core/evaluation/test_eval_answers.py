"""VQA answer normalisation and the leave-one-out soft accuracy, against hand-worked values."""

from __future__ import annotations

import pytest

from x2vlm_core.evaluation.answers import AnswerItem, answer_accuracy, normalize_answer, vqa_scores


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),
        ("TEN.", "10"),
        ("none", "0"),
        ("The dog.", "dog"),
        ("an apple", "apple"),
        ("a man's hat", "man's hat"),  # apostrophe kept (possessive)
        ("yes!", "yes"),
        ("dont", "don't"),
        ("Couldnt've", "couldn't've"),
        ("isnt it", "isn't it"),
        ("well", "well"),  # an ordinary word, not "we'll"
        ("its", "its"),
        ("100,978", "100978"),  # comma between digits removed
        ("red,white", "red white"),
        ("3.5", "3.5"),  # decimal point kept
        (".5 inch", ".5 inch"),
        ("st. louis", "st louis"),
        ("2:50 pm", "2:50 pm"),  # colon kept
        ("black-and-white", "black and white"),
        ("(left)", "left"),
        ("  Hello\tworld\n", "hello world"),
        ("one / two", "1 2"),
    ],
)
def test_normalize_answer(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


def _answers(match: str, count: int, n: int = 10) -> list[str]:
    return [match] * count + [f"other{i}" for i in range(n - count)]


def _simple(count: int) -> float:
    return min(count / 3, 1.0)


# 10 annotators, c of them gave the prediction. Leaving out one who matched leaves c - 1 matches,
# leaving out one who did not leaves c:  acc = (c·min((c-1)/3, 1) + (10-c)·min(c/3, 1)) / 10.
#   c = 1: (1·0 + 9·1/3) / 10 = 0.3      c = 2: (2·1/3 + 8·2/3) / 10 = 0.6
#   c = 3: (3·2/3 + 7·1) / 10 = 0.9      c = 4: (4·1 + 6·1) / 10 = 1.0
LEAVE_ONE_OUT = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9, 4: 1.0, 5: 1.0, 10: 1.0}


@pytest.mark.parametrize(("count", "expected"), sorted(LEAVE_ONE_OUT.items()))
def test_soft_accuracy_is_the_leave_one_out_average(count: int, expected: float) -> None:
    accuracy = answer_accuracy("cat", _answers("cat", count))
    assert accuracy == pytest.approx(expected)
    # The simple form min(c / 3, 1) differs exactly where 1..3 annotators agree.
    assert (accuracy != pytest.approx(_simple(count))) == (1 <= count <= 3)


def test_soft_accuracy_normalises_both_sides_and_other_annotator_counts() -> None:
    # "Two", "2", "two." are one answer after normalisation: 3 matches → 0.9.
    answers = ["2", "two.", "Two", "3", "3", "3", "4", "4", "5", "6"]
    assert answer_accuracy("two", answers) == pytest.approx(0.9)
    assert answer_accuracy("3", answers) == pytest.approx(0.9)
    assert answer_accuracy("4", answers) == pytest.approx(0.6)
    # 3 annotators, all "x": each left-out subset has 2 matches → 2/3.
    assert answer_accuracy("x", ["x", "x", "x"]) == pytest.approx(2 / 3)


def test_vqa_scores_overall_and_per_type() -> None:
    items = [
        ("two", _answers("2", 3), "number"),  # 0.9
        ("Yes", ["yes"] * 10, "yes/no"),  # 1.0
        ("no", ["yes"] * 9 + ["no"], "yes/no"),  # 0.3
        AnswerItem("red", _answers("red", 2), "other"),  # 0.6
    ]
    scores = vqa_scores(items)
    assert scores.overall == pytest.approx((0.9 + 1.0 + 0.3 + 0.6) / 4)
    assert scores.per_type == pytest.approx({"number": 0.9, "other": 0.6, "yes/no": 0.65})
    assert scores.counts == {"number": 1, "other": 1, "yes/no": 2}
    assert scores.as_dict("vqa/")["vqa/vqa_acc/yes/no"] == pytest.approx(0.65)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="at least 2 human answers"):
        answer_accuracy("cat", ["cat"])
    with pytest.raises(TypeError, match="not one string"):
        answer_accuracy("cat", "cat")
    with pytest.raises(ValueError, match=r"item 1 \(question type 'color'\)"):
        vqa_scores([("a", ["a", "a"], "color"), ("b", [], "color")])
    with pytest.raises(ValueError, match="no items"):
        vqa_scores([])
