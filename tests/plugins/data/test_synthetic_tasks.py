"""Synthetic task kinds (vqa, video_qa, nlvr2, refexp, composition): answers and labels recomputed from the scene
objects by an independent reading of the English texts, uniqueness, balance, distractors, languages, splits."""

from __future__ import annotations

import collections
import hashlib
import pickle
import re
import typing
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from plugins.data._synth_refs import Ref
from plugins.data._synth_scene import Clip, Scene, Shape, split_bucket
from plugins.data._synth_wordbook import WORDS
from plugins.data.synthetic import RECORD_KINDS, Synthetic, SyntheticConfig
from x2vlm_core.contracts import CompositionSample, ConceptKind, PairSample, QASample, Sample
from x2vlm_core.discovery import default_registry

LANGS = ("en", "de", "fr", "cs", "zh", "ja")
TASKS = ("vqa", "video_qa", "nlvr2", "refexp", "composition")
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star", "crosses": "cross",
          "shapes": "shape", "objects": "object"}


def make(**fields: object) -> Synthetic:
    return Synthetic(SyntheticConfig(**fields))  # type: ignore[arg-type]


# ------------------------------------------------------------------ an independent reading of English
def centre2(s: Shape) -> tuple[int, int]:
    return s.x0 + s.x1, s.y0 + s.y1


def rel_of(a: Shape, b: Shape) -> str:
    """Where a is relative to b: the axis where the centres differ more decides (image y points down)."""
    (ax, ay), (bx, by) = centre2(a), centre2(b)
    if abs(ax - bx) >= abs(ay - by):
        return "left" if ax < bx else "right"
    return "above" if ay < by else "below"


def parse_ref(text: str) -> tuple[str | None, str | None, str]:
    """'small red circle' / 'red shapes' / 'object' → (size, colour, noun singular)."""
    words = text.split()
    noun = PLURAL.get(words[-1], words[-1])
    size = next((w for w in words[:-1] if w in ("small", "large")), None)
    colour = next((w for w in words[:-1] if w in COLOURS), None)
    assert len(words) == 1 + (size is not None) + (colour is not None), text
    assert noun in (*SHAPES, "shape", "object"), text
    return size, colour, noun


def fits(s: Shape, text: str) -> bool:
    size, colour, noun = parse_ref(text)
    return (noun in ("shape", "object") or s.shape == noun) and colour in (None, s.colour) and size in (None, s.size)


def the_one(shapes: Sequence[Shape], text: str) -> Shape:
    """The single shape the phrase names; fails when it names none or several."""
    found = [s for s in shapes if fits(s, text)]
    assert len(found) == 1, (text, shapes)
    return found[0]


def grid_cell(s: Shape, size: int) -> str:
    col, row = (min(2, int(3 * c / (2 * size))) for c in (s.x0 + s.x1 + 1, s.y0 + s.y1 + 1))
    rows, cols = ("top", "", "bottom"), ("left", "", "right")
    return " ".join(w for w in (rows[row], cols[col]) if w) or "centre"


REL_WORDS = {"left of": "left", "right of": "right", "above": "above", "below": "below",
             "to the left of": "left", "to the right of": "right", "located above": "above", "located below": "below"}
REL = "|".join(sorted(REL_WORDS, key=len, reverse=True))


def answer_vqa(question: str, scene: Scene, size: int) -> tuple[str, str]:
    """(question type, answer) from the question's English words and the scene's objects alone."""
    shapes = scene.shapes
    if m := re.fullmatch(r"(?:what colour is|which colour does) the (.+?)(?: have)?\?", question):
        return "colour", the_one(shapes, m[1]).colour
    if m := re.fullmatch(r"(?:what shape is|which shape does) the (.+?)(?: have)?\?", question):
        return "shape", the_one(shapes, m[1]).shape
    if m := re.fullmatch(r"what size is the (.+)\?|is the (.+) small or large\?", question):
        return "size", the_one(shapes, m[1] or m[2]).size
    if m := re.fullmatch(r"how many (.+) are (?:there|in the image)\?", question):
        return "count", str(sum(fits(s, m[1]) for s in shapes))
    if m := re.fullmatch(rf"is the (.+?) ({REL}) the (.+)\?", question):
        a, b = the_one(shapes, m[1]), the_one(shapes, m[3])
        assert a is not b
        truth = rel_of(a, b) == REL_WORDS[m[2]]
        if not truth:  # a denied relation is clearly false: a's centre is not on that side at all
            (ax, ay), (bx, by) = centre2(a), centre2(b)
            along = {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[REL_WORDS[m[2]]]
            assert along <= 0, question
        return "position", "yes" if truth else "no"
    if m := re.fullmatch(r"where (?:is|in the image is) the (.+)\?", question):
        return "position", grid_cell(the_one(shapes, m[1]), size)
    if m := re.fullmatch(r"is there an? (.+?)(?: in the image)?\?", question):
        return "exists", "yes" if any(fits(s, m[1]) for s in shapes) else "no"
    raise AssertionError(f"unreadable question {question!r}")


# ------------------------------------------------------------------ vqa
@pytest.fixture(scope="module")
def vqa_en() -> list[tuple[QASample, Scene]]:
    source = make(kind="vqa", samples=600, seed=1)
    out = []
    for index, r in enumerate(source):
        plan = source.plan(index)
        assert isinstance(r, QASample) and isinstance(plan.visual, Scene)  # type: ignore[union-attr]
        out.append((r, plan.visual))  # type: ignore[union-attr]
    return out


def test_vqa_answers_recomputed_from_scenes(vqa_en: list[tuple[QASample, Scene]]) -> None:
    for r, scene in vqa_en:
        assert r.image is not None and r.frames is None and r.image.shape == (3, 64, 64)
        qtype, answer = answer_vqa(r.question, scene, 64)
        assert qtype == r.question_type, r.question
        assert r.answers == (answer,) * 10, (r.question, r.answers[0], answer)


def test_vqa_types_yes_no_and_phrasings_are_balanced(vqa_en: list[tuple[QASample, Scene]]) -> None:
    types = collections.Counter(r.question_type for r, _ in vqa_en)
    assert set(types) == {"colour", "shape", "size", "count", "position", "exists"}
    assert all(60 <= n <= 150 for n in types.values()), types
    for qtype in ("exists", "position"):
        yes_no = collections.Counter(r.answers[0] for r, _ in vqa_en if r.question_type == qtype and r.answers[0] in ("yes", "no"))
        assert min(yes_no.values()) >= 0.35 * sum(yes_no.values()), (qtype, yes_no)
    where = [r for r, _ in vqa_en if r.question.startswith("where")]
    assert len(where) >= 30 and len({r.answers[0] for r in where}) >= 6
    counts = collections.Counter(r.answers[0] for r, _ in vqa_en if r.question_type == "count")
    assert {"0", "1", "2", "3"} <= set(counts)
    openings = {" ".join(r.question.split()[:2]) for r, _ in vqa_en}  # two phrasings of every question form
    assert {"what colour", "which colour", "what shape", "which shape", "what size", "how many", "where is",
            "where in", "is there"} <= openings
    assert any(r.question.endswith("small or large?") for r, _ in vqa_en)
    assert any(" to the left of " in r.question or " located " in r.question for r, _ in vqa_en)


# the same record index asks the same thing in every language: answers are the English answer translated
ANSWER_WORDS = {
    "de": {"red": "rot", "blue": "blau", "green": "grün", "yellow": "gelb", "purple": "violett", "orange": "orangefarben",
           "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern", "cross": "Kreuz",
           "small": "klein", "large": "groß", "yes": "ja", "no": "nein"},
    "fr": {"red": "rouge", "blue": "bleu", "green": "vert", "yellow": "jaune", "purple": "violet", "orange": "orange",
           "circle": "cercle", "square": "carré", "triangle": "triangle", "star": "étoile", "cross": "croix",
           "small": "petit", "large": "grand", "yes": "oui", "no": "non"},
    "cs": {"red": "červený", "blue": "modrý", "green": "zelený", "yellow": "žlutý", "purple": "fialový",
           "orange": "oranžový", "circle": "kruh", "square": "čtverec", "triangle": "trojúhelník", "star": "hvězda",
           "cross": "kříž", "small": "malý", "large": "velký", "yes": "ano", "no": "ne"},
    "zh": {"red": "红色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
           "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字形",
           "small": "小", "large": "大", "yes": "是", "no": "不是"},
    "ja": {"red": "赤", "blue": "青", "green": "緑", "yellow": "黄色", "purple": "紫", "orange": "オレンジ",
           "circle": "丸", "square": "四角", "triangle": "三角", "star": "星", "cross": "十字",
           "small": "小さい", "large": "大きい", "yes": "はい", "no": "いいえ"},
}


@pytest.mark.parametrize("lang", LANGS[1:])
def test_vqa_answers_in_every_language(lang: str, vqa_en: list[tuple[QASample, Scene]]) -> None:
    local = make(kind="vqa", samples=150, seed=1, languages=(lang,))
    for (en, _), r in zip(vqa_en, local, strict=False):
        assert isinstance(r, QASample) and r.language == lang and r.question_type == en.question_type
        answer = en.answers[0]
        if en.question_type == "exists" and lang == "zh":
            expected = "有" if answer == "yes" else "没有"
        elif en.question_type == "count":
            expected = answer
        elif answer in ANSWER_WORDS[lang]:
            expected = ANSWER_WORDS[lang][answer]
        else:  # a location word
            assert answer in {"top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"}
            continue
        assert r.answers == (expected,) * 10, (r.question, r.answers[0], en.question)
        assert r.question and r.question != en.question and "  " not in r.question


# ------------------------------------------------------------------ video qa
MOVES = {"to the right": "right", "to the left": "left", "up": "up", "down": "down"}


def moved(m: object, frames: int) -> str:
    start, end = m.at(0), m.at(frames - 1)  # type: ignore[attr-defined]
    dx, dy = end.x0 - start.x0, end.y0 - start.y0
    assert (dx == 0) != (dy == 0)
    return ("right" if dx > 0 else "left") if dx else ("down" if dy > 0 else "up")


def test_video_qa_answers_recomputed_from_clips() -> None:
    source = make(kind="video_qa", samples=300, seed=2, frames=4)
    types: collections.Counter[str] = collections.Counter()
    for index, r in enumerate(source):
        clip = source.plan(index).visual  # type: ignore[union-attr]
        assert isinstance(r, QASample) and isinstance(clip, Clip)
        assert r.image is None and r.frames is not None and r.frames.shape == (4, 3, 64, 64)
        if m := re.fullmatch(r"(?:which way|in which direction) does the (\w+) (\w+) move\?", r.question):
            (mover,) = [v for v in clip.movers if (v.start.colour, v.start.shape) == (m[1], m[2])]
            qtype, answer = "direction", moved(mover, 4)
        elif m := re.fullmatch(
            r"(?:which shape moves|what shape is moving|what colour is the shape (?:that moves|moving)) (.+)\?", r.question
        ):
            (mover,) = [v for v in clip.movers if moved(v, 4) == MOVES[m[1]]]
            qtype = "colour" if r.question.startswith("what colour") else "shape"
            answer = mover.start.colour if qtype == "colour" else mover.start.shape
        else:
            raise AssertionError(r.question)
        assert (r.question_type, r.answers) == (qtype, (answer,) * 10), r.question
        types[qtype] += 1
    assert all(70 <= n <= 130 for n in types.values()) and len(types) == 3, types


# ------------------------------------------------------------------ nlvr2
NUMBER = {"one": 1, "two": 2, "three": 3}


def nlvr2_truth(text: str, scenes: tuple[Scene, Scene]) -> tuple[str, bool]:
    side = {"left": scenes[0].shapes, "right": scenes[1].shapes}
    if m := re.fullmatch(r"the (left|right) image contains exactly (one|two|three) (.+)", text):
        return "count", sum(fits(s, m[3]) for s in side[m[1]]) == NUMBER[m[2]]
    if m := re.fullmatch(r"both images contain an? (.+)", text):
        return "both", all(any(fits(s, m[1]) for s in shapes) for shapes in side.values())
    if m := re.fullmatch(r"there are more (.+) in the (left|right) image than in the (left|right) image", text):
        assert m[2] != m[3]
        return "more", sum(fits(s, m[1]) for s in side[m[2]]) > sum(fits(s, m[1]) for s in side[m[3]])
    if m := re.fullmatch(rf"in the (left|right) image an? (.+?) is ({REL}) an? (.+)", text):
        shapes = side[m[1]]
        return "relation", any(
            rel_of(a, b) == REL_WORDS[m[3]] for a in shapes for b in shapes if a is not b and fits(a, m[2]) and fits(b, m[4])
        )
    raise AssertionError(f"unreadable statement {text!r}")


def test_nlvr2_labels_recomputed_and_balanced() -> None:
    source = make(kind="nlvr2", samples=400, seed=3)
    labels, templates = collections.Counter(), collections.Counter()
    for index, r in enumerate(source):
        plan = source.plan(index)
        assert isinstance(r, PairSample) and len(r.images) == 2
        assert all(i.shape == (3, 64, 64) and i.dtype == torch.uint8 for i in r.images)
        template, truth = nlvr2_truth(r.text, plan.scenes)  # type: ignore[union-attr]
        assert r.label == truth, r.text
        labels[r.label] += 1
        templates[template, r.label] += 1
    assert 160 <= labels[True] <= 240, labels
    assert len(templates) == 8 and min(templates.values()) >= 25, templates


# ------------------------------------------------------------------ refexp
def resolve(expression: str, shapes: Sequence[Shape]) -> Shape:
    """The one object an English expression picks out ('the red circle', 'the circle left of the star')."""
    if m := re.fullmatch(rf"the (.+?) ({REL}) the (.+)", expression):
        landmark = the_one(shapes, m[3])
        found = [s for s in shapes if fits(s, m[1]) and s is not landmark and rel_of(s, landmark) == REL_WORDS[m[2]]]
        assert len(found) == 1, expression
        return found[0]
    assert expression.startswith("the "), expression
    return the_one(shapes, expression[4:])


def test_refexp_expressions_pick_their_box_and_scenes_have_distractors() -> None:
    source = make(kind="refexp", samples=200, seed=4)
    with_distractor = relational = 0
    for index, r in enumerate(source):
        plan = source.plan(index)
        shapes = plan.scene.shapes  # type: ignore[union-attr]
        assert isinstance(r, Sample) and r.image is not None and len(r.captions) == 1
        assert all(f"a {s.size} {s.colour} {s.shape}" in r.captions[0] for s in shapes)  # the caption is kept
        assert r.concepts and all(c.kind == ConceptKind.REGION for c in r.concepts)
        for concept in r.concepts:
            assert concept.box == resolve(concept.text, shapes).box(64), concept.text
            relational += " of " in concept.text or " above " in concept.text or " below " in concept.text
        target = plan.target  # type: ignore[union-attr]
        if target is not None:
            assert any(c.box == target.box(64) for c in r.concepts)
            rivals = [s for s in shapes if s is not target and (s.shape == target.shape or s.colour == target.colour)]
            with_distractor += bool(rivals)
    assert with_distractor >= 0.8 * 200 and relational >= 20, (with_distractor, relational)


def test_refexp_uses_the_telling_attribute() -> None:
    words = WORDS["en"]
    red, blue = Shape("circle", "red", "small", 5, 5, 14, 14), Shape("circle", "blue", "small", 30, 5, 39, 14)
    square = Shape("square", "red", "large", 5, 30, 24, 49)
    from plugins.data._synth_refexp import describe_object

    assert describe_object(red, [red, blue, square], words) == "the red circle"
    assert describe_object(square, [red, blue, square], words) == "the square"
    twin = Shape("circle", "red", "small", 45, 40, 54, 49)
    star = Shape("star", "green", "small", 40, 5, 49, 14)
    assert describe_object(red, [red, twin, star], words) == "the circle left of the star"
    assert describe_object(twin, [red, twin, star], words) == "the circle below the star"


# ------------------------------------------------------------------ composition
def composition_truth(caption: str, scene: Scene) -> tuple[str, bool]:
    shapes = scene.shapes
    if m := re.fullmatch(rf"an? (\w+) (\w+) ({REL}) an? (\w+) (\w+)", caption):
        first, second = f"{m[1]} {m[2]}", f"{m[4]} {m[5]}"
        return "relation", any(
            rel_of(a, b) == REL_WORDS[m[3]] for a in shapes for b in shapes if a is not b and fits(a, first) and fits(b, second)
        )
    if m := re.fullmatch(r"an? (\w+) (\w+) and an? (\w+) (\w+)", caption):
        return "attribute", all(any(fits(s, f"{c} {k}") for s in shapes) for c, k in ((m[1], m[2]), (m[3], m[4])))
    if m := re.fullmatch(r"(an?|two) (\w+) and (an?|two) (\w+)", caption):
        wanted = [(2 if n == "two" else 1, PLURAL.get(k, k)) for n, k in ((m[1], m[2]), (m[3], m[4]))]
        return "count", all(sum(s.shape == k for s in shapes) == n for n, k in wanted) and len(shapes) == 3
    raise AssertionError(f"unreadable caption {caption!r}")


def test_composition_captions_true_only_of_their_own_image() -> None:
    source = make(kind="composition", samples=300, seed=5)
    tags: collections.Counter[str] = collections.Counter()
    for index, r in enumerate(source):
        plan = source.plan(index)
        assert isinstance(r, CompositionSample) and len(r.images) == 2 and r.captions[0] != r.captions[1]
        for i in range(2):
            for j in range(2):
                tag, truth = composition_truth(r.captions[i], plan.scenes[j])  # type: ignore[union-attr]
                assert tag == r.tag and truth == (i == j), (r.captions, i, j)
        if r.tag != "count":  # the same words in another order
            assert sorted(r.captions[0].split()) == sorted(r.captions[1].split())
        tags[r.tag] += 1
    assert all(70 <= n <= 130 for n in tags.values()) and len(tags) == 3, tags


@pytest.mark.parametrize("lang", LANGS)
def test_composition_captions_reorder_the_same_words_in_every_language(lang: str) -> None:
    tags = set()
    for r in make(kind="composition", samples=30, seed=6, languages=(lang,)):
        assert isinstance(r, CompositionSample) and r.captions[0] != r.captions[1]
        a, b = r.captions
        if lang in ("zh", "ja"):  # no inflection: the very same characters
            assert sorted(a) == sorted(b), (a, b)
        elif lang == "en" and r.tag != "count":
            assert sorted(a.split()) == sorted(b.split()), (a, b)
        else:  # de, fr, cs inflect adjectives and nouns by gender, case and number: the same number of words
            assert len(a.split()) == len(b.split()), (a, b)
        tags.add(r.tag)
    assert tags == {"attribute", "relation", "count"}


# ------------------------------------------------------------------ exact strings per language
def test_exact_task_phrases_per_language() -> None:
    circle, red_circle = Ref("circle"), Ref("circle", "red")
    square, star, orange_star = Ref("square"), Ref("star"), Ref("star", "orange")
    red_shapes, small_object = Ref("shape", "red"), Ref("object", None, "small")
    expected = {
        "en": ["what colour is the circle?", "is the circle left of the square?", "how many red shapes are there?",
               "is there an orange star?", "which way does the red circle move?",
               "the left image contains exactly two circles", "both images contain a red shape",
               "there are more squares in the left image than in the right image",
               "in the right image a star is left of a circle", "the circle left of the star",
               "a red circle and an orange star", "two circles and a square", "what shape is the small object?"],
        "de": ["welche Farbe hat der Kreis?", "ist der Kreis links vom Quadrat?", "wie viele rote Formen gibt es?",
               "gibt es einen orangefarbenen Stern?", "in welche Richtung bewegt sich der rote Kreis?",
               "das linke Bild enthält genau zwei Kreise", "beide Bilder enthalten eine rote Form",
               "im linken Bild gibt es mehr Quadrate als im rechten Bild",
               "im rechten Bild ist ein Stern links von einem Kreis", "der Kreis links vom Stern",
               "ein roter Kreis und ein orangefarbener Stern", "zwei Kreise und ein Quadrat",
               "welche Form hat das kleine Objekt?"],
        "fr": ["de quelle couleur est le cercle ?", "le cercle est-il à gauche du carré ?",
               "combien y a-t-il de formes rouges ?", "y a-t-il une étoile orange ?",
               "dans quelle direction se déplace le cercle rouge ?", "l'image de gauche contient exactement deux cercles",
               "les deux images contiennent une forme rouge",
               "il y a plus de carrés dans l'image de gauche que dans l'image de droite",
               "dans l'image de droite, une étoile est à gauche d'un cercle", "le cercle à gauche de l'étoile",
               "un cercle rouge et une étoile orange", "deux cercles et un carré", "quelle est la forme du petit objet ?"],
        "cs": ["jakou barvu má kruh?", "je kruh vlevo od čtverce?", "kolik je tam červených tvarů?",
               "je na obrázku oranžová hvězda?", "kterým směrem se pohybuje červený kruh?",
               "na levém obrázku jsou právě dva kruhy", "na obou obrázcích je červený tvar",
               "na levém obrázku je více čtverců než na pravém obrázku", "na pravém obrázku je hvězda vlevo od kruhu",
               "kruh vlevo od hvězdy", "červený kruh a oranžová hvězda", "dva kruhy a čtverec", "jaký tvar má malý předmět?"],
        "zh": ["圆形是什么颜色？", "圆形在正方形的左边吗？", "有几个红色图形？", "有橙色星形吗？", "红色圆形向哪个方向移动？",
               "左图中恰好有两个圆形", "两张图中都有红色图形", "左图中的正方形比右图中的多", "右图中有一个星形在一个圆形的左边",
               "星形左边的圆形", "一个红色圆形和一个橙色星形", "两个圆形和一个正方形", "小的图形是什么形状？"],
        "ja": ["丸は何色ですか？", "丸は四角の左にありますか？", "赤い図形はいくつありますか？", "オレンジの星はありますか？",
               "赤い丸はどちらへ動きますか？", "左の画像には丸がちょうど二つある", "両方の画像に赤い図形がある",
               "左の画像には右の画像より多くの四角がある", "右の画像では丸の左に星がある", "星の左の丸",
               "赤い丸とオレンジの星", "二つの丸と一つの四角", "小さい図形はどんな形ですか？"],
    }
    for lang, texts in expected.items():
        w = WORDS[lang]
        got = [
            w.ask_colour(circle, 0), w.ask_relation(circle, "left", square, 0), w.ask_count(red_shapes, 0),
            w.ask_exists(orange_star, 0), w.ask_direction(red_circle, 0), w.says_count("left", 2, circle),
            w.says_both(red_shapes), w.says_more(square, "left"), w.says_relation("right", star, "left", circle),
            w.refer_related(circle, "left", star), w.compose_and([(1, red_circle), (1, orange_star)]),
            w.compose_and([(2, circle), (1, square)]), w.ask_shape(small_object, 0),
        ]
        assert got == texts, lang


def test_exact_records_in_every_language() -> None:
    # record 3 of the vqa stream asks the same question in each language
    expected = {
        "en": ("is the circle right of the red star?", "yes"),
        "de": ("ist der Kreis rechts vom roten Stern?", "ja"),
        "fr": ("le cercle est-il à droite de l'étoile rouge ?", "oui"),
        "cs": ("je kruh vpravo od červené hvězdy?", "ano"),
        "zh": ("圆形在红色星形的右边吗？", "是"),
        "ja": ("丸は赤い星の右にありますか？", "はい"),
    }
    for lang, (question, answer) in expected.items():
        r = make(kind="vqa", samples=4, languages=(lang,)).record(3)
        assert isinstance(r, QASample) and (r.question, r.answers[0], r.language) == (question, answer, lang)


# ------------------------------------------------------------------ every kind: determinism, splits, sharding
def texts_of(r: object) -> tuple[object, ...]:
    if isinstance(r, QASample):
        return (r.key, r.question, r.answers, r.question_type, r.language)
    if isinstance(r, PairSample):
        return (r.key, r.text, r.label, r.language)
    if isinstance(r, CompositionSample):
        return (r.key, r.captions, r.tag)
    assert isinstance(r, Sample)
    return (r.key, r.captions, r.concepts, r.language)


def pixels_of(r: object) -> str:
    tensors = [getattr(r, "image", None), getattr(r, "frames", None), *getattr(r, "images", ())]
    return hashlib.sha1(b"".join(t.numpy().tobytes() for t in tensors if t is not None)).hexdigest()


def scenes_of(source: Synthetic, index: int) -> list[Scene | Clip]:
    plan = source.plan(index)
    for field in ("visual", "scene"):
        if hasattr(plan, field):
            return [getattr(plan, field)]
    return list(plan.scenes)  # type: ignore[union-attr]


def scene_key(scene: Scene | Clip) -> str:
    parts = scene.shapes if isinstance(scene, Scene) else scene.movers
    return repr((scene.background, sorted(repr(p) for p in parts)))


@pytest.mark.parametrize("kind", TASKS)
def test_task_kinds_are_deterministic_and_seeded(kind: str) -> None:
    a, b, c = (list(make(kind=kind, samples=12, seed=s, languages=LANGS)) for s in (7, 7, 8))
    assert [texts_of(r) for r in a] == [texts_of(r) for r in b]
    assert [pixels_of(r) for r in a] == [pixels_of(r) for r in b]
    assert sum(pixels_of(x) != pixels_of(y) for x, y in zip(a, c, strict=True)) >= 10
    assert [r.key for r in a] == [f"synthetic-{kind}-train-{i:09d}" for i in range(12)]
    assert all(getattr(r, "language", lang) == lang for r, lang in zip(a, LANGS * 2, strict=True))


@pytest.mark.parametrize("kind", TASKS)
def test_task_splits_share_no_scene(kind: str) -> None:
    seen, buckets = {}, {"train": set(range(8)), "val": {8}, "test": {9}}
    for split in ("train", "val", "test"):
        source = make(kind=kind, split=split, samples=60, seed=1)
        scenes = [s for i in range(60) for s in scenes_of(source, i)]
        assert {split_bucket(s) for s in scenes} <= buckets[split]  # every scene of a record, not just the first
        seen[split] = {scene_key(s) for s in scenes}
        assert len(seen[split]) >= 50
    assert seen["train"].isdisjoint(seen["val"]) and seen["train"].isdisjoint(seen["test"])
    assert seen["val"].isdisjoint(seen["test"])


@pytest.mark.parametrize("kind", TASKS)
def test_task_holdout_only_in_compositional_split(kind: str) -> None:
    held = {("red", "circle"), ("blue", "star")}

    def combos(scene: Scene | Clip) -> set[tuple[str, str]]:
        parts = scene.shapes if isinstance(scene, Scene) else [m.start for m in scene.movers]
        return {(p.colour, p.shape) for p in parts}

    train = make(kind=kind, samples=80, holdout=("red circle", "blue star"))
    assert not any(combos(s) & held for i in range(80) for s in scenes_of(train, i))
    comp = make(kind=kind, samples=30, holdout=("red circle", "blue star"), split="compositional")
    assert all(any(combos(s) & held for s in scenes_of(comp, i)) for i in range(30))


@pytest.mark.parametrize(("kind", "world", "workers"), [("nlvr2", 2, 2), ("vqa", 3, 1), ("composition", 1, 3)])
def test_task_ranks_and_workers_partition_the_stream(
    monkeypatch: pytest.MonkeyPatch, kind: str, world: int, workers: int
) -> None:
    reference = {texts_of(r)[0]: (texts_of(r), pixels_of(r)) for r in make(kind=kind, samples=13)}
    got = []
    for rank in range(world):
        for worker in range(workers):
            info = SimpleNamespace(id=worker, num_workers=workers)
            monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
            source = Synthetic(SyntheticConfig(kind=kind, samples=13), rank=rank, world_size=world)  # type: ignore[arg-type]
            got += [(texts_of(r)[0], (texts_of(r), pixels_of(r))) for r in source]
    assert len(got) == 13 and dict(got) == reference


@pytest.mark.parametrize("kind", TASKS)
def test_task_kinds_in_every_language_through_the_registry(kind: str) -> None:
    section = {"plugin": "synthetic", "kind": kind, "samples": 12, "languages": list(LANGS), "image_size": 96}
    records = list(default_registry().build("data", section))  # type: ignore[call-overload]
    assert len(records) == 12
    for r, lang in zip(records, LANGS * 2, strict=True):
        texts = [str(t) for t in texts_of(r)[1:] if isinstance(t, (str, tuple))]
        assert all("None" not in t and "  " not in t for t in texts), texts
        assert getattr(r, "language", lang) == lang


@pytest.mark.parametrize("style", ["default", "foreign"])
def test_sources_pickle_for_spawned_workers(style: str) -> None:
    source = make(kind="nlvr2", style=style, samples=3, seed=2)
    copy = pickle.loads(pickle.dumps(source))
    assert [texts_of(r) for r in copy] == [texts_of(r) for r in source]


def test_record_kinds_list_every_kind() -> None:
    assert typing.get_args(SyntheticConfig.model_fields["kind"].annotation) == RECORD_KINDS
    assert set(RECORD_KINDS) == {"image", "video", *TASKS}


def test_task_corpus_holds_task_texts_and_plan_needs_a_task_kind() -> None:
    texts = make(kind="vqa", languages=("en", "fr")).corpus(400)
    assert any(t.endswith("?") for t in texts) and any(t.endswith(" ?") for t in texts)
    assert any(" moves " in t for t in texts)  # the world's captions are still there
    with pytest.raises(ValueError, match="task plans"):
        make().plan(0)
    with pytest.raises(ValidationError, match="even"):
        SyntheticConfig(kind="video_qa", image_size=65)
    with pytest.raises(ValidationError):
        SyntheticConfig(kind="gqa")  # type: ignore[arg-type]
