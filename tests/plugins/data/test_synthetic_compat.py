"""Synthetic world, existing kinds: the image and video streams stay exactly as they were before the task kinds,
styles and attributes came (digests computed from that code), and object concepts gain their attribute words."""

from __future__ import annotations

import hashlib

import pytest

from plugins.data.synthetic import Synthetic, SyntheticConfig
from x2vlm_core.contracts import ConceptKind, Sample

LANGS = ("en", "de", "fr", "cs", "zh", "ja")

# config → sha1 over the per-record digests below, recorded from the generator before this change
STREAMS: dict[str, tuple[dict[str, object], str]] = {
    "image-default": ({"samples": 40}, "a2d6060c7b406b0827634c381c204b20cc16e9c6"),
    "image-languages": (
        {"samples": 24, "seed": 3, "image_size": 96, "split": "val", "languages": LANGS},
        "06f31b33faaeef6c6bddb735a6a539770ca106c7",
    ),
    "image-three": (
        {"samples": 12, "seed": 2, "image_size": 160, "split": "test", "min_objects": 3, "max_objects": 3},
        "9bd9ad64d0731c5a36c7aa3f564e93608798bd24",
    ),
    "image-holdout": (
        {"samples": 12, "holdout": ("red circle",), "split": "compositional"},
        "30559036ee002507909b11fdf8c577ba54721e0f",
    ),
    "video-default": ({"samples": 16, "kind": "video"}, "ed09be07c31cd670e1330e78f5251122e85e609a"),
    "video-frames": (
        {"samples": 12, "kind": "video", "frames": 4, "seed": 1, "split": "test", "max_objects": 1, "languages": ("en", "ja")},
        "dce866ee5bae473be87e156258611b93641ab5a8",
    ),
}
CORPUS = "77354520e680929874afbdeb13e54da0b0aad9e1"  # corpus(300) over all six languages

# attribute words written independently of the plugin: (colour, size) per language
COLOUR = {
    "en": ["red", "green", "blue", "yellow", "purple", "orange"],
    "de": ["rot", "grün", "blau", "gelb", "violett", "orangefarben"],
    "fr": ["rouge", "vert", "bleu", "jaune", "violet", "orange"],
    "cs": ["červený", "zelený", "modrý", "žlutý", "fialový", "oranžový"],
    "zh": ["红色", "绿色", "蓝色", "黄色", "紫色", "橙色"],
    "ja": ["赤", "緑", "青", "黄色", "紫", "オレンジ"],
}
SIZE = {
    "en": ["small", "large"], "de": ["klein", "groß"], "fr": ["petit", "grand"],
    "cs": ["malý", "velký"], "zh": ["小", "大"], "ja": ["小さい", "大きい"],
}
COLOUR_KEYS = ("red", "green", "blue", "yellow", "purple", "orange")


def record_digest(r: Sample) -> str:
    """Pixels, key, source, captions, concepts without attributes, language."""
    pixels = r.image if r.image is not None else r.frames
    assert pixels is not None
    h = hashlib.sha1(pixels.numpy().tobytes())
    concepts = [(c.box, c.text, int(c.kind)) for c in r.concepts]
    h.update(repr((r.key, r.source, r.captions, concepts, r.language, tuple(pixels.shape))).encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", list(STREAMS))
def test_existing_streams_are_unchanged(name: str) -> None:
    fields, expected = STREAMS[name]
    h = hashlib.sha1()
    for r in Synthetic(SyntheticConfig(**fields)):  # type: ignore[arg-type]
        assert isinstance(r, Sample)
        h.update(record_digest(r).encode())
    assert h.hexdigest() == expected


def test_existing_corpus_is_unchanged() -> None:
    texts = Synthetic(SyntheticConfig(languages=LANGS)).corpus(300)
    assert hashlib.sha1("\n".join(texts).encode()).hexdigest() == CORPUS


def test_default_style_is_the_old_renderer_under_the_old_name() -> None:
    source = Synthetic(SyntheticConfig(samples=3, style="default"))
    assert source.name == "synthetic-image-train"
    assert [r.key for r in source] == [f"synthetic-image-train-{i:09d}" for i in range(3)]


@pytest.mark.parametrize("lang", LANGS)
def test_object_concepts_carry_colour_and_size_words(lang: str) -> None:
    source = Synthetic(SyntheticConfig(samples=30, seed=4, languages=(lang,)))
    seen = 0
    for index, r in enumerate(source):
        assert isinstance(r, Sample)
        objects = [c for c in r.concepts if c.kind == ConceptKind.OBJECT]
        for shape, concept in zip(source.scene(index).shapes, objects, strict=True):
            colour = COLOUR[lang][COLOUR_KEYS.index(shape.colour)]
            size = SIZE[lang][0 if shape.size == "small" else 1]
            assert concept.attributes == (colour, size)
            seen += 1
        assert all(c.attributes == () for c in r.concepts if c.kind != ConceptKind.OBJECT)
    assert seen >= 45


def test_video_records_have_no_concepts() -> None:
    assert all(isinstance(r, Sample) and r.concepts == () for r in Synthetic(SyntheticConfig(samples=4, kind="video")))
