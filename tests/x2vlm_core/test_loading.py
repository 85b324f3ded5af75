"""Rebuilding models from checkpoint directories alone: moved checkpoints, deleted pretrained sources, errors."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from tests.helpers import pretraining_step
from x2vlm_core.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_model_state,
    read_manifest,
    save_checkpoint,
)
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import load_config, resolve_config
from x2vlm_core.contracts import Batch
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.pretrain import prepare_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CORPUS = [
    "a red circle on the left of a blue square",
    "two small green triangles near the top right corner",
    "the yellow star is above the purple rectangle",
    "a big orange square below a small circle",
] * 20


@pytest.fixture
def chdir(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny.yaml's model with its run-trained tokenizer (runs/tiny/tokenizer, relative to its own
    cwd) after one optimizer step, saved as `runs/tiny/checkpoints/step-00000001` (no Fabric: fast)."""
    cwd = tmp_path_factory.mktemp("tiny-run")
    old = Path.cwd()
    os.chdir(cwd)
    try:
        registry = default_registry()
        cfg = load_config(CONFIGS / "tiny.yaml", ["train.tokenizer.texts=300"])
        prepare_tokenizer(cfg, registry)
        torch.manual_seed(0)
        model = build_model(cfg.model, registry)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        pretraining_step(model)(_batch(model)).loss.backward()
        optimizer.step()
        save_checkpoint(cfg.train.out_dir, model, 1, cfg, None, keep_last=1, lineage=[], new_parameters=[])
    finally:
        os.chdir(old)
    return cwd


def _batch(model: X2VLM, images: int = 4, video: bool = True) -> Batch:
    """A small mixed batch from the synthetic world, built with the model's own tokenizer."""
    registry = default_registry()
    source = registry.build("data", {"plugin": "synthetic", "split": "val", "image_size": 64}, "t")
    samples = list(itertools.islice(source, images))  # the synthetic world is endless
    if video:
        clips = registry.build("data", {"plugin": "synthetic", "split": "val", "kind": "video", "image_size": 64}, "t")
        samples += list(itertools.islice(clips, 2))
    v = model.vision
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=v.image_size, mean=v.mean, std=v.std,
                           max_text_len=model.max_text_len, image_pairs=images, box_pairs=4,
                           video_pairs=2 if video else 0, frames=3)
    return builder(samples)


@torch.no_grad()
def _outputs(model: X2VLM, batch: Batch) -> dict[str, Tensor]:
    """Everything a forward pass computes: encodings, fused tokens and heads, every loss (seeded sampling)."""
    model.eval()
    bank = model.encode_visual(batch.images, batch.videos)
    memory = model.memory(bank, batch.source, batch.boxes)
    text = model.encode_text(batch.text.ids, batch.text.mask)
    fused = model.fuse(text.tokens, batch.text.mask, memory, torch.arange(batch.size))
    heads = model.heads
    torch.manual_seed(123)
    out = pretraining_step(model)(batch)
    return {
        "ids": batch.text.ids, "bank": bank, "concept_cls": memory.cls, "text": text.tokens,
        "image_feat": heads.image_features(memory.cls[: batch.size]), "text_feat": text.features, "fused": fused,
        "itm": heads.itm(fused[:, 0]), "bbox": heads.bbox(fused[:, 0]), "mlm": heads.mlm(fused),
        "loss": out.loss, **{f"loss/{k}": v for k, v in out.parts.items()},
    }


def _assert_identical(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), f"{key} differs"


# ------------------------------------------------------------------------------------------ portable
def test_moved_checkpoint_without_tokenizer_dir_gives_identical_outputs(
    tiny_run: Path, tmp_path: Path, chdir: Path
) -> None:
    run = tmp_path / "original"
    shutil.copytree(tiny_run, run)
    ckpt = latest_checkpoint(run / "runs" / "tiny")
    assert ckpt is not None
    manifest = read_manifest(ckpt)
    exported = manifest.parts["text"].exported
    assert exported is not None and exported["pretrained"] == "${checkpoint}/assets/text"
    assert exported["weights"] is False and exported["tokenizer"] is None
    assert {"assets/text/config.json", "assets/text/tokenizer.json"} <= set(manifest.files)
    assert manifest.parts["heads"].exported is None

    # Reference: the run config as written (tokenizer relative to the run's cwd) + the existing strict load.
    os.chdir(run)
    cfg = manifest.run_config()
    reference = build_model(resolve_config(cfg.model_dump(mode="json")).model)
    load_model_state(reference, ckpt)
    batch = _batch(reference)
    expected = _outputs(reference, batch)

    moved = tmp_path / "elsewhere" / "my-checkpoint"
    moved.parent.mkdir()
    shutil.move(str(ckpt), moved)
    shutil.rmtree(run / "runs" / "tiny" / "tokenizer")
    os.chdir(chdir)
    loaded = load_model(moved)
    assert loaded.path == moved and loaded.manifest.step == 1
    assert not loaded.model.training
    assert loaded.model.parts() == reference.parts()
    _assert_identical(_outputs(loaded.model, _batch(loaded.model)), expected)


def test_run_directory_loads_its_latest_checkpoint(tiny_run: Path, chdir: Path) -> None:
    loaded = load_model(tiny_run / "runs" / "tiny")
    assert loaded.path == latest_checkpoint(tiny_run / "runs" / "tiny")
    assert loaded.manifest.step == 1


def test_checkpoint_without_exports_falls_back_to_recorded_configs(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = latest_checkpoint(run / "runs" / "tiny")
    assert ckpt is not None
    data = json.loads((ckpt / "manifest.json").read_text())
    for part in data["parts"].values():
        part.pop("exported", None)
    (ckpt / "manifest.json").write_text(json.dumps(data))
    old = Path.cwd()
    os.chdir(run)  # its text config names runs/tiny/tokenizer relative to the run's cwd
    try:
        model = load_model(ckpt).model
    finally:
        os.chdir(old)
    assert "runs/tiny/tokenizer" in model.tokenizer.source  # the recorded (non-portable) config was used
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="cannot rebuild the model") as error:
            load_model(ckpt)
    finally:
        os.chdir(old)
    assert str(ckpt) in str(error.value) and "tokenizer" in str(error.value)


# ------------------------------------------------------------------------------------------ pretrained sources
def _hf_dir(plugin: str, root: Path) -> dict[str, Any]:
    """A tiny HF model + tokenizer saved like a downloaded model; returns the text section naming it."""
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    from x2vlm_core.data.tokenizer import load_tokenizer

    out = root / "hf-model"
    kind = "sentencepiece" if plugin == "xlmr" else "wordpiece"
    train_tokenizer(CORPUS, kind, 120, out)
    tok = load_tokenizer(out)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": tok.vocab_size + 5, "pad_token_id": tok.pad_id}
    if plugin == "xlmr":
        model = XLMRobertaModel(XLMRobertaConfig(max_position_embeddings=80, type_vocab_size=1,
                                                 layer_norm_eps=1e-5, **sizes))
    else:
        model = BertModel(BertConfig(max_position_embeddings=64, **sizes))
    model.save_pretrained(out)
    eps = 1e-5 if plugin == "xlmr" else 1e-12
    fusion = {"plugin": "cross_attention", "layers": 1, "width": 32, "heads": 2, "intermediate": 64,
              "layer_norm_eps": eps, "init_from_text": [1], "dropout": 0.0}
    text = {"plugin": plugin, "pretrained": str(out), **({} if plugin == "hf" else {"dropout": 0.0})}
    return {"text": text, "fusion": fusion}


def _open_clip_file(root: Path) -> dict[str, Any]:
    file = root / "tiny_clip.json"
    file.write_text(json.dumps({"embed_dim": 32, "text_cfg": {"context_length": 24, "width": 32, "heads": 2,
                                                              "layers": 1}}))
    fusion = {"plugin": "cross_attention", "layers": 1, "width": 32, "heads": 2, "intermediate": 64, "dropout": 0.0}
    return {"text": {"plugin": "open_clip", "model": str(file)}, "fusion": fusion}


_VISION = {
    "beit2": {"plugin": "beit2", "image_size": 64, "patch_size": 8, "width": 32, "depth": 1, "heads": 2},
    "timm_vit": {"plugin": "timm_vit", "timm_name": "vit_tiny_patch16_224", "image_size": 64, "patch_size": 8,
                 "width": 32, "depth": 1, "heads": 2},
}


@pytest.mark.parametrize(("plugin", "vision_plugin"),
                         [("bert", "beit2"), ("xlmr", "timm_vit"), ("hf", "beit2"), ("open_clip", "timm_vit")])
def test_pretrained_sources_deleted_after_saving_still_load(
    plugin: str, vision_plugin: str, tmp_path: Path, chdir: Path
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    vision = _VISION[vision_plugin]
    donor = default_registry().build("vision", vision, "donor")
    torch.save(donor.trunk.state_dict(), sources / "vision.pth")
    parts = _open_clip_file(sources) if plugin == "open_clip" else _hf_dir(plugin, sources)
    cfg = resolve_config({
        "model": {"vision": {**vision, "pretrained": str(sources / "vision.pth")}, **parts, "embed_dim": 16},
        "losses": [{"plugin": "contrastive"}, {"plugin": "matching"}, {"plugin": "mlm"}, {"plugin": "bbox"}],
        "data": {"sources": [{"plugin": "synthetic"}]},
    })
    model = build_model(cfg.model)
    assert torch.equal(model.vision.trunk.patch_embed.proj.weight, donor.trunk.patch_embed.proj.weight)
    if plugin != "open_clip":  # the text weights came from the HF directory, and fusion layer 0 from its layer 1
        assert len(model.text.pretrained_keys) > 0
        assert torch.equal(model.fusion.layer[0].intermediate.dense.weight,
                           model.text.transformer_layers()[1].intermediate.dense.weight)
    ckpt = save_checkpoint(tmp_path / "run", model, 7, cfg, None, keep_last=1, lineage=[], new_parameters=[])
    parts_of = read_manifest(ckpt).parts
    assert parts_of["vision"].exported == {**parts_of["vision"].config, "pretrained": None}
    assert parts_of["fusion"].exported == {**parts_of["fusion"].config, "init_from_text": None}
    batch = _batch(model, video=False)
    expected = _outputs(model, batch)

    shutil.rmtree(sources)
    loaded = load_model(ckpt).model
    _assert_identical(_outputs(loaded, _batch(loaded, video=False)), expected)
    if plugin == "open_clip":
        exported = read_manifest(ckpt).parts["text"].exported
        assert exported == {"model": "${checkpoint}/assets/text/open_clip_model.json", "checkpoint": None}


def test_weights_false_needs_a_pretrained_directory(tmp_path: Path) -> None:
    from plugins.text.bert import BertTextConfig
    from plugins.text.xlmr import XlmrTextConfig

    for config in (BertTextConfig, XlmrTextConfig):
        with pytest.raises(ValueError, match="weights: false"):
            config(tokenizer=str(tmp_path), weights=False)


# ------------------------------------------------------------------------------------------ errors
def _copy_checkpoint(tiny_run: Path, tmp_path: Path) -> Path:
    ckpt = latest_checkpoint(tiny_run / "runs" / "tiny")
    assert ckpt is not None
    target = tmp_path / ckpt.name
    shutil.copytree(ckpt, target)
    return target


def test_corrupt_weights_are_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tiny_run, tmp_path)
    data = bytearray((ckpt / "text.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (ckpt / "text.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"text\.safetensors has sha256 .* \(corrupt\)") as error:
        load_model(ckpt)
    assert str(ckpt) in str(error.value)


def test_missing_asset_is_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tiny_run, tmp_path)
    (ckpt / "assets" / "text" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"file assets/text/config\.json is missing"):
        load_model(ckpt)


def test_unknown_plugin_and_missing_directories_are_clear_errors(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tiny_run, tmp_path)
    data = json.loads((ckpt / "manifest.json").read_text())
    data["parts"]["fusion"]["plugin"] = "no_such_fusion"
    (ckpt / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"cannot rebuild the model .*no_such_fusion.*cross_attention"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no complete checkpoint"):
        load_model(tmp_path / "empty-run")
    with pytest.raises(CheckpointError, match=r"has no manifest\.json"):
        load_model(tmp_path / "empty-run" / "checkpoints")


def test_an_export_that_keeps_an_external_path_is_reported(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from plugins.text.bert import BertText
    from x2vlm_core.contracts import TextEncoder

    loaded = load_model(tiny_run / "runs" / "tiny")
    monkeypatch.chdir(tiny_run)  # where the run config's relative tokenizer path exists
    cfg = loaded.manifest.run_config()
    with caplog.at_level("WARNING", logger="x2vlm_core.checkpoint"):
        save_checkpoint(tmp_path / "good", loaded.model, 1, cfg, None, keep_last=1, lineage=[], new_parameters=[])
    assert "outside the checkpoint" not in caplog.text
    monkeypatch.setattr(BertText, "export_config", TextEncoder.export_config)  # a plugin that forgot to export
    with caplog.at_level("WARNING", logger="x2vlm_core.checkpoint"):
        save_checkpoint(tmp_path / "bad", loaded.model, 1, cfg, None, keep_last=1, lineage=[], new_parameters=[])
    assert "'text' still names runs/tiny/tokenizer outside the checkpoint" in caplog.text
