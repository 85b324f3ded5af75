"""Synthetic world: config, determinism, splits, holdout, tight boxes, grammars, rank/worker splits."""

from __future__ import annotations

import hashlib
import itertools
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from plugins.data._synth_lang import COLOURS, GRAMMARS, LANGUAGES, SHAPES, Thing
from plugins.data._synth_scene import BACKGROUNDS, RGB
from plugins.data.synthetic import Synthetic, SyntheticConfig, describe_scene
from registry import ConfigError
from x2vlm_core.contracts import ConceptKind, DataSource, Sample
from x2vlm_core.discovery import default_registry


def make(**fields: object) -> Synthetic:
    return Synthetic(SyntheticConfig(**fields))  # type: ignore[arg-type]


def digest(sample: Sample) -> str:
    pixels = sample.image if sample.image is not None else sample.frames
    assert pixels is not None
    return hashlib.sha1(pixels.numpy().tobytes()).hexdigest()


def fake_worker(monkeypatch: pytest.MonkeyPatch, worker: int | None, workers: int) -> None:
    info = None if worker is None else SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)


# ------------------------------------------------------------------------------------------ config
def test_config_rejects_unknown_and_bad_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SyntheticConfig(colours=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unsupported language"):
        SyntheticConfig(languages=("en", "xx"))
    with pytest.raises(ValidationError, match="colour shape"):
        SyntheticConfig(holdout=("red hexagon",))
    with pytest.raises(ValidationError, match="compositional"):
        SyntheticConfig(split="compositional")
    with pytest.raises(ValidationError, match="min_objects"):
        SyntheticConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValidationError):
        SyntheticConfig(image_size=32)
    with pytest.raises(ValidationError, match="even"):
        SyntheticConfig(kind="video", image_size=65)


def test_built_through_registry() -> None:
    source = default_registry().build("data", {"plugin": "synthetic", "samples": 3, "languages": ["de"]})
    assert isinstance(source, Synthetic) and isinstance(source, DataSource)
    records = list(source)
    assert len(records) == 3 and all(r.language == "de" for r in records)
    assert source.skipped == {}
    with pytest.raises(ConfigError, match="unknown field"):
        default_registry().build("data", {"plugin": "synthetic", "sample": 3})


# ------------------------------------------------------------------------------------------ records
def test_records_have_contract_shapes_and_count() -> None:
    records = list(make(samples=7, image_size=96))
    assert len(records) == 7
    for r in records:
        assert r.image is not None and r.frames is None
        assert r.image.dtype == torch.uint8 and r.image.shape == (3, 96, 96) and r.image.is_contiguous()
        assert len(r.captions) == 1 and r.captions[0]
        n_obj = sum(c.kind == ConceptKind.OBJECT for c in r.concepts)
        n_region = sum(c.kind == ConceptKind.REGION for c in r.concepts)
        assert 1 <= n_obj <= 3
        assert n_region == (1 if n_obj == 1 else n_obj * (n_obj - 1) // 2)
        for c in r.concepts:
            cx, cy, w, h = c.box
            assert 0 < w <= 1 and 0 < h <= 1 and cx - w / 2 >= 0 and cy + h / 2 <= 1
    assert len({r.key for r in records}) == 7


def test_infinite_stream_when_samples_is_none() -> None:
    records = list(itertools.islice(make(), 25))
    assert len(records) == 25
    assert [r.key for r in records[:3]] == [f"synthetic-image-train-{i:09d}" for i in range(3)]


def test_deterministic_by_seed() -> None:
    a, b, c = (list(make(samples=20, seed=s, languages=("en", "fr"))) for s in (3, 3, 4))
    assert [digest(r) for r in a] == [digest(r) for r in b]
    assert [(r.captions, r.concepts, r.language) for r in a] == [(r.captions, r.concepts, r.language) for r in b]
    assert sum(digest(x) != digest(y) for x, y in zip(a, c, strict=True)) >= 18


def test_splits_share_no_scene() -> None:
    seen = {split: {digest(r) for r in make(samples=300, split=split, min_objects=1, max_objects=1)}
            for split in ("train", "val", "test")}
    assert seen["train"].isdisjoint(seen["test"])
    assert seen["train"].isdisjoint(seen["val"])
    assert seen["val"].isdisjoint(seen["test"])
    assert all(len(s) > 250 for s in seen.values())  # real streams, not a handful of repeats


def test_holdout_only_in_compositional_split() -> None:
    def combos(records: list[Sample]) -> list[set[str]]:
        # English object texts are "size colour shape"
        return [{" ".join(c.text.split()[1:]) for c in r.concepts if c.kind == ConceptKind.OBJECT} for r in records]

    held = ("red circle", "blue star")
    train = combos(list(make(samples=400, holdout=held)))
    test = combos(list(make(samples=100, holdout=held, split="test")))
    comp = combos(list(make(samples=100, holdout=held, split="compositional")))
    assert not any(set(held) & c for c in train + test)
    assert all(set(held) & c for c in comp)
    assert {h for c in comp for h in c if h in held} == set(held)
    assert any(c - set(held) for c in comp)  # other shapes still appear next to the held-out one
    # the colours and shapes themselves still occur in training
    flat = set().union(*train)
    assert any(x.startswith("red ") for x in flat) and any(x.endswith(" circle") for x in flat)
    comp_records = list(make(samples=20, holdout=held, split="compositional"))
    assert all(("red circle" in r.captions[0]) or ("blue star" in r.captions[0]) for r in comp_records)


def test_object_boxes_are_tight_and_surrounded_by_background() -> None:
    min_fill = {"square": 0.99, "circle": 0.7, "cross": 0.5, "triangle": 0.4, "star": 0.25}
    palette = torch.tensor(list(RGB.values()), dtype=torch.int16)  # [6, 3]
    checked = 0
    for size in (64, 160):
        for r in make(samples=60, image_size=size, seed=size):
            assert r.image is not None
            image = r.image.to(torch.int16)
            for c in r.concepts:
                if c.kind != ConceptKind.OBJECT:
                    continue
                _, colour, shape = c.text.split()
                cx, cy, w, h = c.box
                x0, x1 = round((cx - w / 2) * size), round((cx + w / 2) * size)
                y0, y1 = round((cy - h / 2) * size), round((cy + h / 2) * size)
                assert abs(x0 - (cx - w / 2) * size) < 1e-6 and abs(y1 - (cy + h / 2) * size) < 1e-6
                rgb = torch.tensor(RGB[colour], dtype=torch.int16)[:, None, None]
                inside = (image[:, y0:y1, x0:x1] == rgb).all(0)
                # the shape's own pixels touch all four sides of its box, and fill it as the shape should
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
                assert inside.float().mean() >= min_fill[shape], (shape, inside.float().mean())
                # a one-pixel ring around the box is background: no object colour at all
                ring = torch.cat([
                    image[:, y0 - 1, x0 - 1:x1 + 1], image[:, y1, x0 - 1:x1 + 1],
                    image[:, y0 - 1:y1 + 1, x0 - 1], image[:, y0 - 1:y1 + 1, x1],
                ], dim=1)  # [3, P]
                assert not (ring.T[:, None, :] == palette[None]).all(-1).any()
                checked += 1
    assert checked > 150


def test_region_boxes_are_unions_and_relations_match_geometry() -> None:
    for r in make(samples=80, min_objects=2, max_objects=2, seed=5):
        objects = [c for c in r.concepts if c.kind == ConceptKind.OBJECT]
        (region,) = [c for c in r.concepts if c.kind == ConceptKind.REGION]
        boxes = [(c.box[0] - c.box[2] / 2, c.box[1] - c.box[3] / 2, c.box[0] + c.box[2] / 2, c.box[1] + c.box[3] / 2)
                 for c in objects]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        assert region.box == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))
        dx = objects[0].box[0] - objects[1].box[0]
        dy = objects[0].box[1] - objects[1].box[1]
        caption = r.captions[0]
        expected = ("left of" if dx < 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
        assert f" {expected} " in caption and f" {expected} " in region.text
        assert caption.startswith(f"a {objects[0].text} ") and caption.endswith(f" a {objects[1].text}")


def test_single_object_caption_names_its_grid_cell() -> None:
    words = {0: "left", 1: None, 2: "right"}
    for r in make(samples=60, min_objects=1, max_objects=1, seed=11):
        (obj,) = [c for c in r.concepts if c.kind == ConceptKind.OBJECT]
        col, row = min(int(obj.box[0] * 3), 2), min(int(obj.box[1] * 3), 2)
        caption = r.captions[0]
        assert caption.startswith(f"a {obj.text} ")
        vertical = {0: "top", 1: None, 2: "bottom"}[row]
        if vertical is None and words[col] is None:
            assert caption.endswith("in the centre")
        else:
            expected = " ".join(w for w in (vertical, words[col]) if w)
            assert caption.endswith(expected)


def test_captions_are_distinctive() -> None:
    captions = [r.captions[0] for r in make(samples=1000)]
    assert len(set(captions)) >= 850


def test_backgrounds_vary_and_never_use_object_colours() -> None:
    corners = {tuple(r.image[:, 0, 0].tolist()) for r in make(samples=200, seed=1) if r.image is not None}
    assert len(corners) >= 5
    assert not corners & set(RGB.values())
    assert len(BACKGROUNDS) >= 4 and set(RGB) == set(COLOURS)


# ------------------------------------------------------------------------------------------ languages
# colour words written independently of the plugin's tables (stems where the word declines)
COLOUR_WORDS = {
    "en": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "purple": "purple", "orange": "orange"},
    "de": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett", "orange": "orangefarben"},
    "fr": {"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "viol", "orange": "orange"},
    "cs": {"red": "červen", "green": "zelen", "blue": "modr", "yellow": "žlut", "purple": "fialov", "orange": "oranžov"},
    "zh": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"},
    "ja": {"red": "赤", "green": "緑", "blue": "青", "yellow": "黄色", "purple": "紫", "orange": "オレンジ"},
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_captions_name_every_object_colour(lang: str) -> None:
    english = make(samples=40, seed=2)
    local = make(samples=40, seed=2, languages=(lang,))
    for index in range(40):
        scene = english.scene(index)
        record = local.record(index)
        assert record.language == lang
        caption = record.captions[0]
        objects = [c for c in record.concepts if c.kind == ConceptKind.OBJECT]
        assert len(objects) == len(scene.shapes)
        for shape, concept in zip(scene.shapes, objects, strict=True):
            word = COLOUR_WORDS[lang][shape.colour]
            assert word in caption and word in concept.text
            assert concept.box == shape.box(64)


def test_languages_take_turns() -> None:
    langs = ("en", "de", "fr", "cs", "zh", "ja")
    records = list(make(samples=12, languages=langs))
    assert [r.language for r in records] == list(langs) * 2


SMALL_RED_CIRCLE, LARGE_BLUE_SQUARE = Thing("small", "red", "circle"), Thing("large", "blue", "square")
SMALL_GREEN_STAR, LARGE_PURPLE_CROSS = Thing("small", "green", "star"), Thing("large", "purple", "cross")
LARGE_YELLOW_TRIANGLE, SMALL_ORANGE_STAR = Thing("large", "yellow", "triangle"), Thing("small", "orange", "star")


@pytest.mark.parametrize(
    ("lang", "related", "feminine", "neuter_dative"),
    [
        ("en", "a small red circle left of a large blue square",
         "a small green star above a large purple cross",
         "a large yellow triangle below a small orange star"),
        ("de", "ein kleiner roter Kreis links von einem großen blauen Quadrat",
         "ein kleiner grüner Stern über einem großen violetten Kreuz",
         "ein großes gelbes Dreieck unter einem kleinen orangefarbenen Stern"),
        ("fr", "un petit cercle rouge à gauche d'un grand carré bleu",
         "une petite étoile verte au-dessus d'une grande croix violette",
         "un grand triangle jaune en dessous d'une petite étoile orange"),
        ("cs", "malý červený kruh vlevo od velkého modrého čtverce",
         "malá zelená hvězda nad velkým fialovým křížem",
         "velký žlutý trojúhelník pod malou oranžovou hvězdou"),
        ("zh", "一个小的红色圆形在一个大的蓝色正方形的左边",
         "一个小的绿色星形在一个大的紫色十字形的上面",
         "一个大的黄色三角形在一个小的橙色星形的下面"),
        ("ja", "大きい青い四角の左に小さい赤い丸",
         "大きい紫の十字の上に小さい緑の星",
         "小さいオレンジの星の下に大きい黄色い三角"),
    ],
)
def test_grammar_agreement_and_word_order(lang: str, related: str, feminine: str, neuter_dative: str) -> None:
    g = GRAMMARS[lang]
    assert g.related(SMALL_RED_CIRCLE, "left", LARGE_BLUE_SQUARE) == related
    assert g.related(SMALL_GREEN_STAR, "above", LARGE_PURPLE_CROSS) == feminine
    assert g.related(LARGE_YELLOW_TRIANGLE, "below", SMALL_ORANGE_STAR) == neuter_dative


def test_grammar_object_region_location_and_motion_texts() -> None:
    expected = {
        "en": ("small red circle", "red circle left of blue square", "a small green star at the top left",
               "a small red circle moves to the right and a large blue square moves up"),
        "de": ("kleiner roter Kreis", "roter Kreis links von blauem Quadrat", "ein kleiner grüner Stern oben links",
               "ein kleiner roter Kreis bewegt sich nach rechts und ein großes blaues Quadrat bewegt sich nach oben"),
        "fr": ("petit cercle rouge", "cercle rouge à gauche d'un carré bleu",
               "une petite étoile verte en haut à gauche",
               "un petit cercle rouge se déplace vers la droite et un grand carré bleu se déplace vers le haut"),
        "cs": ("malý červený kruh", "červený kruh vlevo od modrého čtverce", "malá zelená hvězda vlevo nahoře",
               "malý červený kruh se pohybuje doprava a velký modrý čtverec se pohybuje nahoru"),
        "zh": ("小的红色圆形", "红色圆形在蓝色正方形的左边", "一个小的绿色星形在左上角",
               "一个小的红色圆形向右移动，一个大的蓝色正方形向上移动"),
        "ja": ("小さい赤い丸", "青い四角の左の赤い丸", "左上に小さい緑の星",
               "小さい赤い丸が右へ動き、大きい青い四角が上へ動く"),
    }
    for lang, (obj, region, located, moving) in expected.items():
        g = GRAMMARS[lang]
        assert g.object_text(SMALL_RED_CIRCLE) == obj
        assert g.region_related(SMALL_RED_CIRCLE, "left", LARGE_BLUE_SQUARE) == region
        assert g.located(SMALL_GREEN_STAR, "top_left") == located
        assert g.moving([(SMALL_RED_CIRCLE, "right"), (LARGE_BLUE_SQUARE, "up")]) == moving


def test_every_word_combination_is_covered() -> None:
    # every shape/colour/size/relation/location has a word in every language (no KeyError, no blanks)
    for g in GRAMMARS.values():
        for colour, shape, size in itertools.product(COLOURS, SHAPES, ("small", "large")):
            t = Thing(size, colour, shape)
            for text in (g.object_text(t), g.region_located(t, "centre"), g.moving([(t, "down")])):
                assert text and "  " not in text and text == text.strip()
        for relation in ("left", "right", "above", "below"):
            assert g.related(SMALL_RED_CIRCLE, relation, LARGE_BLUE_SQUARE)
    assert SHAPES and len(COLOURS) >= 6


def test_describe_scene_three_objects_lists_and_relates() -> None:
    source = make(samples=50, min_objects=3, max_objects=3, seed=9)
    scene = source.scene(0)
    caption, concepts = describe_scene(scene, GRAMMARS["en"], 64)
    assert caption.count(" and ") == 1
    assert all(f"a {s.size} {s.colour} {s.shape}" in caption for s in scene.shapes)
    assert sum(c.kind == ConceptKind.REGION for c in concepts) == 3


# ------------------------------------------------------------------------------------------ video
def test_video_clips_move_in_the_captioned_direction() -> None:
    records = list(make(samples=30, kind="video", frames=4, max_objects=1, seed=4))
    for r in records:
        assert r.image is None and r.frames is not None and r.concepts == ()
        assert r.frames.shape == (4, 3, 64, 64) and r.frames.dtype == torch.uint8
        words = r.captions[0].split()  # "a small red circle moves ..."
        colour = words[2]
        rgb = torch.tensor(RGB[colour], dtype=torch.uint8)[:, None, None]
        centres = []
        for frame in r.frames:
            ys, xs = torch.where((frame == rgb).all(0))
            centres.append((xs.float().mean().item(), ys.float().mean().item()))
        dx, dy = centres[-1][0] - centres[0][0], centres[-1][1] - centres[0][1]
        direction = r.captions[0].split("moves ")[1]
        expected = {"to the right": dx > 10, "to the left": dx < -10, "up": dy < -10, "down": dy > 10}
        assert expected[direction], (r.captions[0], dx, dy)
    assert len({r.captions[0].split("moves ")[1] for r in records}) == 4


def test_video_two_movers_and_languages() -> None:
    records = list(make(samples=30, kind="video", min_objects=2, max_objects=2, languages=("en", "zh")))
    en = [r.captions[0] for r in records if r.language == "en"]
    assert all(c.count(" moves ") == 2 and " and " in c for c in en)
    zh = [r.captions[0] for r in records if r.language == "zh"]
    assert all(c.count("移动") == 2 for c in zh)


# ------------------------------------------------------------------------------------------ splitting
@pytest.mark.parametrize(("world", "workers"), [(1, 1), (2, 2), (3, 2)])
def test_ranks_and_workers_partition_the_stream(monkeypatch: pytest.MonkeyPatch, world: int, workers: int) -> None:
    fake_worker(monkeypatch, None, 1)
    reference = {r.key: digest(r) for r in make(samples=23)}
    got: list[tuple[str, str]] = []
    for rank in range(world):
        for worker in range(workers):
            fake_worker(monkeypatch, worker, workers)
            got += [(r.key, digest(r)) for r in Synthetic(SyntheticConfig(samples=23), rank=rank, world_size=world)]
    assert len(got) == 23 and dict(got) == reference


def test_real_dataloader_workers_partition_the_stream() -> None:
    source = make(samples=12, seed=7)
    loader = torch.utils.data.DataLoader(source, batch_size=None, num_workers=2, collate_fn=lambda s: s)
    keys = [s.key for s in loader]
    assert sorted(keys) == sorted(r.key for r in make(samples=12, seed=7))


def test_bad_rank_is_rejected() -> None:
    with pytest.raises(ValueError, match="rank"):
        Synthetic(SyntheticConfig(), rank=2, world_size=2)


# ------------------------------------------------------------------------------------------ corpus
def test_corpus_covers_languages_concepts_and_motion() -> None:
    texts = make(languages=("en", "cs")).corpus(200)
    assert len(texts) == 200 and all(isinstance(t, str) and t for t in texts)
    assert any(" moves " in t for t in texts) and any(" se pohybuje " in t for t in texts)
    assert any(" of " in t and not t.startswith("a ") for t in texts)  # region phrases
    assert make().corpus(0) == []
