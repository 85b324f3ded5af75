"""configs/ablations/*.yaml do what their names say, and nothing else changes between them.

full = the demo recipe; no_bbox drops the box loss; no_alignment keeps object/region pairs out of
contrastive/matching/MLM but not out of the box loss; no_object / no_region drop those concept kinds from the
image records (same scenes, same captions). Checked on the loaded configs, on the records they stream, and
on one real training step of a tiny model.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from x2vlm_core.config import load_config
from x2vlm_core.contracts.data import ConceptKind
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.factory import build_losses, build_model, build_step

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ABLATIONS = CONFIGS / "ablations"


def _cfg(name: str):  # type: ignore[no-untyped-def]
    return load_config(ABLATIONS / f"{name}.yaml")


def _losses(name: str) -> dict[str, dict[str, Any]]:
    return {s.plugin: s.fields() for s in _cfg(name).losses}


def _sources(name: str) -> list[dict[str, Any]]:
    return [s.plugin_section() for s in _cfg(name).data.sources]


def test_full_is_the_demo_recipe() -> None:
    demo, full = load_config(CONFIGS / "demo.yaml"), _cfg("full")
    assert full.model.model_dump(exclude={"text"}) == demo.model.model_dump(exclude={"text"})
    assert full.losses == demo.losses and full.data == demo.data and full.eval == demo.eval
    assert full.train.model_dump(exclude={"out_dir", "tokenizer"}) == demo.train.model_dump(
        exclude={"out_dir", "tokenizer"})
    assert all(fields.get("box_pairs", True) for fields in _losses("full").values())


@pytest.mark.parametrize("name", ["no_bbox", "no_alignment", "no_object", "no_region"])
def test_each_variant_differs_from_full_only_where_its_name_says(name: str) -> None:
    full, variant = _cfg("full"), _cfg(name)
    assert variant.model == full.model and variant.eval == full.eval
    assert variant.train.model_dump(exclude={"out_dir"}) == full.train.model_dump(exclude={"out_dir"})
    assert variant.train.out_dir != full.train.out_dir  # never overwrites the reference run
    if name in ("no_bbox", "no_alignment"):
        assert variant.data == full.data
    else:
        assert variant.losses == full.losses
        assert variant.data.model_dump(exclude={"sources"}) == full.data.model_dump(exclude={"sources"})


def test_no_bbox_drops_only_the_box_loss() -> None:
    losses = _losses("no_bbox")
    assert set(losses) == {"contrastive", "matching", "mlm"}
    assert all(fields.get("box_pairs", True) for fields in losses.values())


def test_no_alignment_keeps_box_pairs_for_the_box_loss_only() -> None:
    losses = _losses("no_alignment")
    assert set(losses) == {"contrastive", "matching", "mlm", "bbox"}
    assert {k: v.get("box_pairs") for k, v in losses.items() if k != "bbox"} == dict.fromkeys(
        ("contrastive", "matching", "mlm"), False)
    assert "box_pairs" not in losses["bbox"]


@pytest.mark.parametrize(("name", "kept"), [("no_object", {ConceptKind.REGION}), ("no_region", {ConceptKind.OBJECT})])
def test_data_variants_drop_one_concept_kind_and_keep_scenes_and_captions(name: str, kept: set[ConceptKind]) -> None:
    reg = default_registry()
    full_src, var_src = _sources("full"), _sources(name)
    assert [s.get("kind") for s in var_src] == [s.get("kind") for s in full_src]
    full_img, var_img = (reg.build("data", {**s[0], "samples": 40}) for s in (full_src, var_src))
    seen: set[ConceptKind] = set()
    for a, b in zip(itertools.islice(iter(full_img), 40), itertools.islice(iter(var_img), 40), strict=True):  # type: ignore[call-overload]
        assert a.key == b.key and a.captions == b.captions and torch.equal(a.image, b.image)
        assert b.concepts == tuple(c for c in a.concepts if c.kind in kept)
        seen |= {c.kind for c in b.concepts}
    assert seen == kept  # the kept kind really occurs (the filter is not just "drop everything")
    assert var_src[1:] == full_src[1:]  # the video source is untouched


# ------------------------------------------------------------------ one real step of a tiny model per variant
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reg = default_registry()
    tok = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(reg.build("data", {"plugin": "synthetic"}).corpus(2000), "wordpiece", 300, tok)  # type: ignore[attr-defined]
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tok}"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    images = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "samples": 12})), 6))  # type: ignore[call-overload]
    videos = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "kind": "video", "samples": 4})), 2))  # type: ignore[call-overload]
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean,
                           std=model.vision.std, max_text_len=model.max_text_len, image_pairs=4, box_pairs=8,
                           video_pairs=2, frames=3)
    batch = builder(images + videos, torch.Generator().manual_seed(1))
    return model, batch


def _step(model, batch, name: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(7)  # the same hard negatives and MLM masks wherever the rows are the same
    model.zero_grad(set_to_none=True)
    out = build_step(model, build_losses(_cfg(name).losses))(batch)
    out.loss.backward()
    return out


def test_a_training_step_of_each_loss_variant(tiny) -> None:  # type: ignore[no-untyped-def]
    model, batch = tiny
    assert batch.n_image > 0 and batch.n_box > 0 and batch.n_video > 0
    full = _step(model, batch, "full")
    bbox_head = {n: p.grad.clone() for n, p in model.named_parameters() if "bbox" in n and p.grad is not None}
    assert bbox_head and all(float(g.abs().sum()) > 0 for g in bbox_head.values())

    no_bbox = _step(model, batch, "no_bbox")
    assert set(no_bbox.parts) == {"contrastive", "matching", "mlm"}
    for name in no_bbox.parts:  # the other losses are untouched by dropping the box loss
        torch.testing.assert_close(no_bbox.parts[name], full.parts[name], msg=name)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for n, p in model.named_parameters() if n in bbox_head)

    no_align = _step(model, batch, "no_alignment")
    assert set(no_align.parts) == set(full.parts)
    torch.testing.assert_close(no_align.parts["bbox"], full.parts["bbox"])  # the box loss still sees every box
    for name in ("contrastive", "matching", "mlm"):  # box rows left out: a different loss on the same batch
        assert no_align.parts[name].item() != pytest.approx(full.parts[name].item()), name
