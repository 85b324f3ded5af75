"""Caption tokenisation, BLEU and CIDEr-D through pycocoevalcap, METEOR only with Java."""

from __future__ import annotations

import math
import shutil

import pytest

pytest.importorskip("pycocoevalcap")

from x2vlm_core.evaluation import captions
from x2vlm_core.evaluation.captions import caption_scores, tokenize_caption

REFS = {
    "dog": [
        "A dog runs on the grass.",
        "a dog runs on the grass",
        "A brown dog is running on grass",
        "a dog running across a green field",
    ],
    "cat": ["a cat sleeps on a red sofa", "a cat is sleeping on the couch", "a grey cat asleep on a sofa"],
    "bus": ["a yellow bus parked by the road", "a bus is parked on the street", "a yellow school bus on a street"],
    "pizza": ["a pizza with cheese on a plate", "a cheese pizza sitting on a table", "a plate holding a large pizza"],
    "boat": ["a small boat on a calm lake", "a boat floating on the water", "a rowing boat on a lake"],
}
# Right for each image but worded unlike any single reference.
CORRECT = {
    "dog": "a brown dog runs across the grass",
    "cat": "a grey cat sleeping on a red couch",
    "bus": "a yellow bus parked on the street",
    "pizza": "a large cheese pizza on a plate",
    "boat": "a small boat floating on a lake",
}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A man, riding a horse.", ["a", "man", "riding", "a", "horse"]),
        ("The dog's ball isn't red!", ["the", "dog", "'s", "ball", "is", "n't", "red"]),
        ("A t-shirt costs $3.50 (or 1,000 yen)", ["a", "t-shirt", "costs", "$", "3.50", "or", "1,000", "yen"]),
        ("“Quoted” text — here -- now...", ["quoted", "text", "here", "now"]),
        ("dogs' bowl at 5 o'clock", ["dogs", "bowl", "at", "5", "o'clock"]),
        ("Ｆｕｌｌ－width，ＴＥＸＴ", ["full-width", "text"]),
        ("一只狗在草地上。", ["一", "只", "狗", "在", "草", "地", "上"]),
        ("猫とdog", ["猫", "と", "dog"]),
        ("   ", []),
    ],
)
def test_tokenize_caption(text: str, tokens: list[str]) -> None:
    assert tokenize_caption(text) == tokens


def test_identical_candidate_and_references_score_bleu4_one() -> None:
    refs = {key: [CORRECT[key]] * 3 for key in CORRECT}
    scores = caption_scores(CORRECT, refs, java=False)
    assert scores.bleu4 == pytest.approx(1.0, abs=1e-6)
    assert scores.bleu == pytest.approx((1.0, 1.0, 1.0, 1.0), abs=1e-6)
    assert scores.meteor is None and scores.spice is None


def test_hand_checked_bleu_precisions() -> None:
    # "the cat sat on the mat" vs "the cat is on the mat" (same length, so no brevity penalty):
    # unigrams 5/6 (not "sat"), bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3.
    # BLEU-n is the geometric mean of the first n precisions: 5/6, √(5/6·3/5) = √½, (5/6·3/5·1/4)^⅓ = ½.
    one = caption_scores({1: "The cat sat on the mat."}, {1: ["the cat is on the mat"]}, java=False)
    assert one.bleu[:3] == pytest.approx((5 / 6, math.sqrt(0.5), 0.5), abs=1e-6)
    assert one.bleu4 < 1e-3
    # With a second reference "a cat sat on a mat" the counts clip against both: unigrams 6/6,
    # bigrams 5/5 (cat sat, sat on from it), trigrams 2/4 (cat sat on, on the mat): BLEU-3 = ½^⅓.
    two = caption_scores(
        {1: "the cat sat on the mat"}, {1: ["the cat is on the mat", "a cat sat on a mat"]}, java=False
    )
    assert two.bleu[:3] == pytest.approx((1.0, 1.0, 0.5 ** (1 / 3)), abs=1e-6)
    # Brevity: 2 words against a 6-word reference, all matching: BP = exp(1 - 6/2) = e^-2.
    short = caption_scores({1: "the cat"}, {1: ["the cat is on the mat"]}, java=False)
    assert short.bleu[:2] == pytest.approx((math.exp(-2), math.exp(-2)), abs=1e-6)


def test_constant_caption_scores_far_below_per_image_captions() -> None:
    right = caption_scores(CORRECT, REFS, java=False)
    constant = caption_scores({key: "a dog on a street" for key in REFS}, REFS, java=False)
    assert right.cider_d > 3 * constant.cider_d
    assert right.bleu4 > 3 * constant.bleu4
    assert right.cider_d > 1.0 and constant.cider_d < 1.0


def test_consensus_candidate_has_the_highest_cider() -> None:
    # The dog image's references agree on "a dog runs on the grass" (twice, with case and punctuation
    # variations); other images stay fixed, so the corpus mean moves only with the dog image's score.
    def cider(dog: str) -> float:
        return caption_scores(dict(CORRECT, dog=dog), REFS, java=False).cider_d

    consensus = cider("a dog runs on the grass")
    others = ["a brown dog is running on grass", "a dog running across a green field", "a dog on grass",
              "a dog runs on the green grass", "a cat sleeps on a red sofa"]  # fmt: skip
    assert all(consensus > cider(text) + 0.05 for text in others)


def test_cjk_captions_are_scored_on_characters() -> None:
    refs = {1: ["一只狗在草地上奔跑"], 2: ["两只猫在沙发上睡觉"]}
    scores = caption_scores({1: "一只狗在草地上奔跑。", 2: "两只猫在沙发上睡觉"}, refs, java=False)
    assert scores.bleu4 == pytest.approx(1.0, abs=1e-6)  # one "word" per caption would have no 4-grams


def test_bad_inputs_name_the_image() -> None:
    refs = {"img1": ["a dog"], "img7": ["a cat"]}
    with pytest.raises(ValueError, match=r"image 'img7'.*empty"):
        caption_scores({"img1": "a dog", "img7": ""}, refs, java=False)
    with pytest.raises(ValueError, match=r"image 'img7'.*empty after tokenisation"):
        caption_scores({"img1": "a dog", "img7": " ... "}, refs, java=False)
    with pytest.raises(ValueError, match=r"image 'img7'.*non-empty list of reference"):
        caption_scores({"img1": "a dog", "img7": "a cat"}, {"img1": ["a dog"], "img7": []}, java=False)
    with pytest.raises(ValueError, match=r"image 'img7'.*non-empty list of reference"):
        caption_scores({"img1": "a dog", "img7": "a cat"}, {"img1": ["a dog"], "img7": "a cat"}, java=False)
    with pytest.raises(ValueError, match=r"image 'img7': reference 1"):
        caption_scores({"img1": "a dog", "img7": "a cat"}, {"img1": ["a dog"], "img7": ["a cat", "!"]}, java=False)
    with pytest.raises(ValueError, match=r"without references: \['img9'\]"):
        caption_scores({"img1": "a dog", "img9": "a cat"}, refs, java=False)
    with pytest.raises(ValueError, match="no images"):
        caption_scores({}, {}, java=False)


def test_without_java_meteor_and_spice_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captions.shutil, "which", lambda name: None)
    scores = caption_scores(CORRECT, REFS)
    assert scores.meteor is None and scores.spice is None
    assert set(scores.as_dict()) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d"}
    with pytest.raises(RuntimeError, match="no `java` binary"):
        caption_scores(CORRECT, REFS, java=True)


@pytest.mark.slow  # one Java start and METEOR's paraphrase tables: ~10-40 s
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a java binary")
def test_meteor_runs_where_java_exists() -> None:
    # Half the images captioned right, half with another image's caption: METEOR lands in between.
    mixed = dict(CORRECT, cat=CORRECT["bus"], pizza=CORRECT["boat"])
    scores = caption_scores(mixed, REFS)
    assert scores.meteor is not None and 0.1 < scores.meteor < 0.9
    assert "meteor" in scores.as_dict()
