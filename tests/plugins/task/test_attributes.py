"""Attributes task: the attribute notation, the evaluation set built from records, hand-worked mAP / top-1 with
unknown labels, batched box scoring against a one-pair-at-a-time reference, the synthetic world's concept-kind
filter it reads, and the CLI on a small trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plugins.data.synthetic import Synthetic, SyntheticConfig
from plugins.task import attributes
from plugins.task.attributes import (
    AttributeLabel,
    AttributesConfig,
    AttributeSet,
    AttributesTask,
    attribute_set,
    box_phrase_scores,
    format_attribute,
    parse_attribute,
)
from registry import ConfigError
from tests.plugins.task.test_winoground import register_task_plugins, tiny_model, trained_run
from x2vlm_core.cli import main
from x2vlm_core.contracts import Concept, ConceptKind, Sample
from x2vlm_core.data.transforms import normalise

OBJ, REG = ConceptKind.OBJECT, ConceptKind.REGION


def _image(value: int, size: int = 16) -> torch.Tensor:
    return torch.full((3, size, size), value, dtype=torch.uint8)


# ------------------------------------------------------------------ notation and evaluation set
@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("red", AttributeLabel("red", "", True)),
        ("colour:red", AttributeLabel("red", "colour", True)),
        ("?texture:smooth/sleek", AttributeLabel("smooth/sleek", "texture", False)),
        ("?wooden", AttributeLabel("wooden", "", False)),
        ("size: very  small ", AttributeLabel("very small", "size", True)),
    ],
)
def test_attribute_notation_round_trips(text: str, label: AttributeLabel) -> None:
    assert parse_attribute(text) == label
    assert parse_attribute(format_attribute(label.phrase, label.group, label.known)) == label


def test_evaluation_set_holds_named_objects_vocabulary_groups_and_labels() -> None:
    records = [
        Sample("a", "s", _image(10), None, ("cap",), (
            Concept((0.3, 0.3, 0.2, 0.2), "small red circle", OBJ, ("red", "small")),
            Concept((0.5, 0.5, 0.4, 0.4), "red circle left of a box", REG, ("red",)),  # a region: not an object box
            Concept((0.7, 0.7, 0.2, 0.2), "box", OBJ, ("?blue", "material:wooden/wood")),
            Concept((0.2, 0.8, 0.1, 0.1), "thing", OBJ, ()),  # names nothing: left out
        )),
        Sample("b", "s", _image(20), None, ("cap",), (Concept((0.5, 0.5, 1, 1), "sky", REG),)),  # no object
        Sample("c", "s", _image(30), None, (), (Concept((0.5, 0.5, 0.5, 0.5), "cup", OBJ, ("blue", "?small")),)),
    ]
    data = attribute_set(records, {"colour": ("red", "blue", "green"), "size": ("small",)}, size=8)
    assert data.phrases == ["red", "blue", "green", "small", "wooden/wood"]
    assert data.groups == {"colour": [0, 1, 2], "size": [3], "material": [4]}
    assert data.texts == ["small red circle", "box", "cup"] and data.image_index.tolist() == [0, 0, 1]
    assert data.images.shape == (2, 3, 8, 8) and int(data.images[1, 0, 0, 0]) == 30  # images resized, b left out
    assert data.positive.tolist() == [[True, False, False, True, False], [False, False, False, False, True],
                                      [False, True, False, False, False]]
    assert data.unknown.tolist() == [[False] * 5, [False, True, False, False, False],
                                     [False, False, False, True, False]]
    torch.testing.assert_close(data.boxes[1], torch.tensor([0.7, 0.7, 0.2, 0.2]))


def test_records_without_named_objects_are_a_clear_error() -> None:
    regions = list(Synthetic(SyntheticConfig(split="test", samples=4, concepts=("region",))))
    with pytest.raises(ConfigError, match="names an attribute"):
        attribute_set(regions, {}, 8)
    unknown_only = [Sample("a", "s", _image(1), None, (), (Concept((0.5, 0.5, 0.5, 0.5), "cup", OBJ, ("?red",)),))]
    with pytest.raises(ConfigError, match="unknown"):
        attribute_set(unknown_only, {}, 8)


# ------------------------------------------------------------------ hand-worked metrics
def _hand_records() -> list[Sample]:
    """o0: red, small; o1: blue, small unknown; o2: red. Vocabulary: colour red, blue; size small."""
    box = (0.5, 0.5, 0.5, 0.5)
    return [Sample("a", "s", _image(1), None, (), (Concept(box, "o0", OBJ, ("red", "small")),
                                                   Concept(box, "o1", OBJ, ("blue", "?small")))),
            Sample("b", "s", _image(2), None, (), (Concept(box, "o2", OBJ, ("red",)),))]


# columns red, blue, small; rows o0, o1, o2
MATCHING = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.95], [0.4, 0.85, 0.1]])
VOCAB = {"colour": ("red", "blue"), "size": ("small",)}


def test_map_top1_and_chance_match_the_hand_worked_case(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {"matching": MATCHING, "contrastive": -MATCHING, "combined": MATCHING * 0}
    monkeypatch.setattr(attributes, "box_phrase_scores", lambda model, data, template, batch_size: scores)
    model = type("M", (), {"preprocess": lambda self: type("P", (), {"image_size": 8})()})()
    out = AttributesTask(AttributesConfig(vocabulary=VOCAB), model).evaluate(model, _hand_records(), 4)  # type: ignore[arg-type]
    # AP red: o0 (+) o2 (+) o1 → 1; blue: o2 (−) o1 (+) o0 → 1/2; small: o1's unknown (0.95) is ignored,
    # o0 (+) o2 → 1 (scored as a negative it would give 1/2)
    assert out["attr_map"] == pytest.approx((1 + 0.5 + 1) / 3)
    # top-1: o0 red ✓; o1 small is unknown, so blue ✓; o2 blue ✗
    assert out["attr_top1"] == pytest.approx(2 / 3)
    assert out["attr_map/colour"] == pytest.approx(0.75) and out["attr_top1/colour"] == pytest.approx(2 / 3)
    assert out["attr_map/size"] == 1.0 and out["attr_top1/size"] == 1.0  # only o0 has a known size positive
    # contrastive (= −matching): red o1 (−) o2 (+) o0 (+) → (1/2 + 2/3) / 2; blue o0 (−) o1 (+) → 1/2;
    # small o2 (−) o0 (+) → 1/2
    assert out["contrastive/attr_map"] == pytest.approx(((0.5 + 2 / 3) / 2 + 0.5 + 0.5) / 3)
    # combined (all tied): each object scores the share of labels among its tied top candidates
    assert out["combined/attr_top1"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 3) / 3)
    # chance: prevalence red 2/3, blue 1/3, small 1/2 (of its 2 known objects); top-1 2/3, 1/2, 1/3
    assert out["chance/attr_map"] == pytest.approx(0.5) and out["chance/attr_top1"] == pytest.approx(0.5)
    assert out["chance/attr_top1/colour"] == pytest.approx(0.5) and out["chance/attr_map/size"] == pytest.approx(0.5)
    assert out["n"] == 3 and out["n_attributes"] == 3

    chosen = AttributesTask(AttributesConfig(vocabulary=VOCAB, scorer="contrastive"), model)
    flipped = chosen.evaluate(model, _hand_records(), 4)  # type: ignore[arg-type]
    assert flipped["attr_map"] == pytest.approx(out["contrastive/attr_map"])
    assert flipped["matching/attr_map"] == pytest.approx(out["attr_map"])


def test_config_checks_the_template_and_the_task_is_evaluation_only() -> None:
    with pytest.raises(ValueError, match="must contain"):
        AttributesConfig(template="a photo of a {object}")
    with pytest.raises(ValueError, match="must contain"):
        AttributesConfig(template="{attribute} {colour}")
    task = AttributesTask(AttributesConfig(template="{attribute} {object}"), None)  # type: ignore[arg-type]
    assert not list(task.parameters())
    with pytest.raises(ConfigError, match="evaluation-only"):
        task.batches(iter(()), None, 4, torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="evaluation-only"):
        task.loss(None, None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ batched scoring on a real model
def _reference(model, data: AttributeSet, template: str) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Each object box alone (its own image, model.memory of one box) with each synonym text alone."""
    prep = model.preprocess()
    sim = torch.zeros(len(data.texts), len(data.phrases))
    logp = torch.zeros_like(sim)
    for k in range(len(data.texts)):
        pixels = normalise(data.images[data.image_index[k]][None], prep.mean, prep.std)
        memory = model.memory(model.encode_images(pixels), torch.zeros(1, dtype=torch.long), data.boxes[k][None])
        box = model.heads.image_features(memory.cls[:1])
        for a, phrase in enumerate(data.phrases):
            synonyms = phrase.split("/")
            for synonym in synonyms:
                tok = model.tokenizer([template.format(attribute=synonym, object=data.texts[k])], model.max_text_len)
                text = model.encode_text(tok.ids, tok.mask)
                sim[k, a] += float(text.features @ box.T) / len(synonyms)
                fused = model.fuse(text.tokens, tok.mask, memory, torch.zeros(1, dtype=torch.long))
                logp[k, a] += float(model.heads.itm(fused[:, 0]).log_softmax(-1)[0, 1]) / len(synonyms)
    return {"contrastive": sim, "matching": logp}


@torch.no_grad()
def test_batched_box_scores_equal_one_box_and_phrase_at_a_time() -> None:
    model = tiny_model()
    records = list(Synthetic(SyntheticConfig(split="test", samples=3, max_objects=1, concepts=("object",))))
    extra = Concept((0.5, 0.5, 0.3, 0.6), "cup", OBJ, ("colour:red/crimson", "?size:large"))
    records[1] = Sample(records[1].key, "s", records[1].image, None, (), (*records[1].concepts, extra))
    data = attribute_set(records, {"colour": ("red",)}, model.preprocess().image_size)
    assert "red/crimson" in data.phrases and len(data.texts) == 4 and data.image_index.tolist() == [0, 1, 1, 2]
    template = "{attribute} {object}"  # per-object texts: the harder indexing path
    scores = box_phrase_scores(model, data, template, batch_size=2)  # 2 images per chunk: the last is partial
    reference = _reference(model, data, template)
    torch.testing.assert_close(scores["contrastive"], reference["contrastive"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores["matching"], reference["matching"], atol=1e-5, rtol=1e-4)
    tau = float(model.heads.temperature)
    torch.testing.assert_close(scores["combined"], reference["contrastive"] / tau + reference["matching"],
                               atol=1e-4, rtol=1e-4)
    shared = box_phrase_scores(model, data, "{attribute}", batch_size=8)  # one text per phrase, all objects
    assert not torch.allclose(shared["matching"], scores["matching"])


# ------------------------------------------------------------------ the synthetic world's concept kinds
def test_synthetic_concept_kinds_filter_image_records_and_keep_the_scenes() -> None:
    base = {"split": "test", "samples": 6}
    full = list(Synthetic(SyntheticConfig(**base)))
    assert SyntheticConfig(**base).concepts == ("object", "region")
    for kinds, kept in ((("object",), {OBJ}), (("region",), {REG}), ((), set())):
        filtered = list(Synthetic(SyntheticConfig(**base, concepts=kinds)))
        for f, r in zip(filtered, full, strict=True):
            assert f.key == r.key and f.captions == r.captions and torch.equal(f.image, r.image)  # type: ignore[union-attr, arg-type]
            assert f.concepts == tuple(c for c in r.concepts if c.kind in kept)  # type: ignore[union-attr]
        assert (sum(len(f.concepts) for f in filtered) > 0) == bool(kinds)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        SyntheticConfig(concepts=("video",))  # type: ignore[arg-type]


# ------------------------------------------------------------------ the CLI on a small trained model
@pytest.mark.slow
def test_cli_evaluates_a_trained_checkpoint_on_the_runs_own_image_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_task_plugins()
    run = trained_run()
    out = tmp_path / "attributes.json"
    assert main(["evaluate", "--checkpoint", str(run), "--task", "attributes", "--samples", "16",
                 "--batch-size", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for key in ("attributes/attr_map", "attributes/attr_top1", "attributes/attr_map/colour",
                "attributes/attr_top1/size", "attributes/contrastive/attr_map", "attributes/chance/attr_map"):
        assert key in printed
    metrics = json.loads(out.read_text())["metrics"]
    objects = sum(c.kind == OBJ for r in Synthetic(SyntheticConfig(split="test", samples=16)) for c in r.concepts)  # type: ignore[union-attr]
    assert metrics["attributes/n"] == objects
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "attr_" in k)
    assert metrics["attributes/n_attributes"] <= 8  # 6 colours + 2 sizes can have positives
