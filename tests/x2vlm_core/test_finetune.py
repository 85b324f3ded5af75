"""Fine-tuning: the config (no model), per-language retrieval evaluation, and a re-assembled checkpoint
fine-tuned end to end (contrastive + matching only, new parameters at lr × scale, lineage)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from registry import ConfigError
from x2vlm_core.checkpoint import latest_checkpoint, load_model_state, read_manifest, save_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.cli import main
from x2vlm_core.config import DataSourceSection, load_config
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.data.transforms import normalise
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.evalsets import load_eval_set
from x2vlm_core.evaluation.retrieval import evaluate_retrieval
from x2vlm_core.evaluation.runner import evaluate_languages
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.finetune import (
    FinetuneEvalConfig,
    finetune,
    finetune_config_from,
    load_finetune_config,
)
from x2vlm_core.transfer.reassemble import reassemble_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LANGS = ["en", "de", "fr", "cs", "zh", "ja"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    reg = default_registry()
    out = {"en": root / "en", "multi": root / "multi"}
    train_tokenizer(reg.build("data", {"plugin": "synthetic"}).corpus(1500), "wordpiece", 300, out["en"])  # type: ignore[attr-defined]
    multi = reg.build("data", {"plugin": "synthetic", "languages": LANGS})
    train_tokenizer(multi.corpus(2000), "sentencepiece", 500, out["multi"])  # type: ignore[attr-defined]
    return out


def _source(tokenizers: dict[str, Path], root: Path) -> tuple[Path, X2VLM]:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizers['en']}"])
    model = build_model(cfg.model)
    path = save_checkpoint(root / "pretrained", model, 5, cfg, None, keep_last=1,
                           lineage=[{"op": "pretrain", "step": 5}], new_parameters=[])
    return path, model


def _raw(out_dir: Path, steps: int = 3) -> dict[str, object]:
    return {
        "data": {"sources": [{"plugin": "synthetic", "languages": ["de", "zh"]}], "image_pairs": 4, "box_pairs": 0,
                 "video_pairs": 0},
        "train": {"steps": steps, "warmup_steps": 1, "log_every": 1, "checkpoint_every": steps, "accelerator": "cpu",
                  "out_dir": str(out_dir), "lr": 1e-3},
        "eval": {"data": [{"plugin": "synthetic", "split": "test"}], "languages": ["de", "zh"], "samples": 12,
                 "rerank_k": 4, "batch_size": 8},
    }


# ------------------------------------------------------------------------------------------ config
def test_shipped_config_is_a_multilingual_retrieval_config() -> None:
    cfg = load_finetune_config(CONFIGS / "finetune_multilingual.yaml")
    assert [s.plugin for s in cfg.losses] == ["contrastive", "matching"]
    assert set(cfg.eval.languages) == set(LANGS)
    assert cfg.data.box_pairs == 0 and cfg.train.tokenizer is None
    assert set(cfg.data.sources[0].fields()["languages"]) == set(LANGS)


def test_config_errors_are_clear(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    with caplog.at_level(logging.WARNING, logger="x2vlm.finetune"):
        cfg = finetune_config_from({**raw, "model": {"vision": {"plugin": "beit2"}}})
    assert "model section is ignored" in caplog.text
    assert [s.plugin for s in cfg.losses] == ["contrastive", "matching"]  # the default losses
    with pytest.raises(ConfigError, match="colour"):
        finetune_config_from({**raw, "colour": "red"})
    with pytest.raises(ConfigError, match="retrieval fine-tuning trains exactly contrastive, matching"):
        finetune_config_from({**raw, "losses": [{"plugin": "contrastive"}, {"plugin": "mlm"}]})
    train = {**raw["train"], "tokenizer": {"out": str(tmp_path / "tok")}}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="uses the checkpoint's tokenizer"):
        finetune_config_from({**raw, "train": train})
    coco_eval = {**raw["eval"], "data": [{"plugin": "coco", "annotations": "a.json", "images": "img"}]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="plugin 'coco' has none"):
        finetune_config_from({**raw, "eval": coco_eval})
    with pytest.raises(ConfigError, match="unsupported language"):
        finetune_config_from({**raw, "eval": {**raw["eval"], "languages": ["de", "xx"]}})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------ evaluation
def test_per_language_evaluation_matches_a_direct_evaluation(tokenizers: dict[str, Path]) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizers['multi']}", "model.text.plugin=xlmr"])
    model = build_model(cfg.model).eval()
    eval_cfg = FinetuneEvalConfig.model_validate({
        "data": [{"plugin": "synthetic", "split": "test"}], "languages": ["en", "zh"], "samples": 12,
        "rerank_k": 4, "batch_size": 8,
    })
    results = evaluate_languages(model, eval_cfg)
    registry = default_registry()
    direct = {}
    sets = {}
    for lang in ("en", "zh"):
        section = DataSourceSection.model_validate({"plugin": "synthetic", "split": "test", "languages": [lang]})
        data = load_eval_set(section, "x", 12, model.vision.image_size, registry)
        sets[lang] = data
        tokens = model.encode_images(normalise(data.visuals, model.vision.mean, model.vision.std))
        metrics = evaluate_retrieval(model, tokens, data.captions, torch.arange(12), 4, 8)
        direct[lang] = metrics
        for k in (1, 5, 10):
            assert results[f"lang/{lang}/i2t_r{k}"] == pytest.approx(metrics.i2t[k])
            assert results[f"lang/{lang}/t2i_r{k}"] == pytest.approx(metrics.t2i[k])
        assert results[f"lang/{lang}/mean_recall"] == pytest.approx(metrics.mean)
        assert results[f"lang/{lang}/n"] == 12
    # the same images, captioned in each language
    assert torch.equal(sets["en"].visuals, sets["zh"].visuals)
    assert sets["en"].captions != sets["zh"].captions
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c) for c in sets["zh"].captions)
    assert results["multilingual/mean_recall"] == pytest.approx((direct["en"].mean + direct["zh"].mean) / 2)
    assert model.training is False


# ------------------------------------------------------------------------------------------ end to end
def test_finetune_a_reassembled_checkpoint(tokenizers: dict[str, Path], tmp_path: Path) -> None:
    source, _ = _source(tokenizers, tmp_path)
    text = {"plugin": "xlmr", "tokenizer": str(tokenizers["multi"]), "layers": 1, "width": 32, "heads": 2,
            "intermediate": 64}
    reassembled = reassemble_checkpoint(source, text, "swap", tmp_path / "xlmr")
    new = set(read_manifest(reassembled).new_parameters)
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**_raw(tmp_path / "ft"), "model": {"ignored": True}}))
    args = ["finetune", "--task", "retrieval", "--checkpoint", str(tmp_path / "xlmr"), "--config", str(config),
            "--set", "train.seed=3", "--quiet"]
    assert main(args) == 0

    ckpt = latest_checkpoint(tmp_path / "ft")
    assert ckpt is not None and ckpt.name == "step-00000003"
    manifest = read_manifest(ckpt)
    assert [e["op"] for e in manifest.lineage] == ["pretrain", "reassemble", "load", "finetune"]
    assert manifest.lineage[2]["checkpoint"] == str(reassembled.resolve())
    assert set(manifest.new_parameters) == new
    assert [s["plugin"] for s in manifest.config["losses"]] == ["contrastive", "matching"]

    # new parameters (and only they) trained with lr × new_param_lr_scale
    trainer = torch.load(ckpt / "trainer.pt", weights_only=True)
    groups = trainer["optimizer"]["param_groups"]
    scaled = {n for g in groups if g["lr_scale"] == 2.0 for n in g["param_names"]}
    base = {n for g in groups if g["lr_scale"] == 1.0 for n in g["param_names"]}
    model = load_model(ckpt).model
    unique_new = {n for n, _ in model.named_parameters()} & new
    assert scaled == unique_new and base and not (base & new)

    # only the retrieval losses ran; the kept modules trained; per-language evaluation was written
    logs = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert {"contrastive", "matching"} <= set(logs[-1]) and not {"mlm", "bbox"} & set(logs[-1])
    before = load_model(reassembled).model.state_dict()
    after = model.state_dict()
    assert not torch.equal(before["heads.vision_proj.weight"], after["heads.vision_proj.weight"])
    assert torch.equal(before["heads.mlm.decoder.bias"], after["heads.mlm.decoder.bias"])  # MLM head unused here
    evaluation = json.loads((tmp_path / "ft" / "eval.json").read_text())
    for lang in ("de", "zh"):
        assert 0.0 <= evaluation[f"lang/{lang}/mean_recall"] <= 1.0
    mean = (evaluation["lang/de/mean_recall"] + evaluation["lang/zh/mean_recall"]) / 2
    assert evaluation["multilingual/mean_recall"] == pytest.approx(mean)


def test_a_pretraining_checkpoint_has_no_new_parameters(tokenizers: dict[str, Path], tmp_path: Path) -> None:
    source, model = _source(tokenizers, tmp_path)
    cfg = finetune_config_from(_raw(tmp_path / "ft", steps=1))
    result = finetune(source, cfg, progress=False, evaluate=False)
    assert result.evaluation == {} and not (tmp_path / "ft" / "eval.json").exists()
    ckpt = latest_checkpoint(tmp_path / "ft")
    assert ckpt is not None
    groups = torch.load(ckpt / "trainer.pt", weights_only=True)["optimizer"]["param_groups"]
    assert {g["lr_scale"] for g in groups} == {1.0}
    # the fine-tuned weights load back into the source architecture
    load_model_state(model, ckpt)
