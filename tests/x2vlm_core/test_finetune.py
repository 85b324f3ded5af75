"""Fine-tuning: the config (a task, no model), per-language task evaluation, and a re-assembled checkpoint
fine-tuned end to end (the retrieval task: contrastive + matching only, new parameters at lr × scale,
lineage, the task recorded so `evaluate` needs no flag)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from registry import ConfigError, PluginError
from x2vlm_core.checkpoint import latest_checkpoint, load_model_state, read_manifest, save_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.cli import main
from x2vlm_core.config import DataSourceSection, PluginSection, TaskEvalConfig, load_config
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.evalsets import encode_visuals, eval_set, read_records
from x2vlm_core.evaluation.retrieval import evaluate_retrieval
from x2vlm_core.evaluation.runner import evaluate_task
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model, build_task
from x2vlm_core.training.finetune import finetune, finetune_config_from, load_finetune_config
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
        "task": {"plugin": "retrieval", "rerank_k": 4},
        "data": {"sources": [{"plugin": "synthetic", "languages": ["de", "zh"]}], "batch_size": 4},
        "train": {"steps": steps, "warmup_steps": 1, "log_every": 1, "checkpoint_every": steps, "accelerator": "cpu",
                  "out_dir": str(out_dir), "lr": 1e-3},
        "eval": {"data": [{"plugin": "synthetic", "split": "test"}], "languages": ["de", "zh"], "samples": 12,
                 "batch_size": 8},
    }


# ------------------------------------------------------------------------------------------ config
def test_shipped_configs_are_valid_task_configs() -> None:
    cfg = load_finetune_config(CONFIGS / "tasks" / "retrieval_multilingual.yaml")
    assert cfg.task.plugin == "retrieval" and cfg.task.fields()["rerank_k"] == 16
    assert set(cfg.eval.languages) == set(LANGS) and cfg.train.tokenizer is None
    assert set(cfg.data.sources[0].fields()["languages"]) == set(LANGS)
    for name in ("retrieval", "grounding", "video_retrieval"):
        assert load_finetune_config(CONFIGS / "tasks" / f"{name}.yaml").task.plugin == name


def test_config_errors_are_clear(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    with pytest.raises(ConfigError, match="takes the model from the checkpoint"):
        finetune_config_from({**raw, "model": {"vision": {"plugin": "beit2"}}})
    with pytest.raises(ConfigError, match="colour"):
        finetune_config_from({**raw, "colour": "red"})
    with pytest.raises(PluginError, match="unknown task plugin .retreival..*Did you mean .retrieval."):
        finetune_config_from({**raw, "task": {"plugin": "retreival"}})
    with pytest.raises(ConfigError, match="task.rerank_k"):
        finetune_config_from({**raw, "task": {"plugin": "retrieval", "rerank_k": -1}})
    with pytest.raises(ConfigError, match="--task says 'grounding'"):
        finetune_config_from(raw, task="grounding")
    assert finetune_config_from({**raw, "task": {}}, task="grounding").task.plugin == "grounding"  # --task fills it
    train = {**raw["train"], "tokenizer": {"out": str(tmp_path / "tok")}}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="uses the checkpoint's tokenizer"):
        finetune_config_from({**raw, "train": train})
    coco_eval = {**raw["eval"], "data": [{"plugin": "coco", "annotations": "a.json"}]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="plugin 'coco' has none"):
        finetune_config_from({**raw, "eval": coco_eval})
    with pytest.raises(ConfigError, match="unsupported language"):
        finetune_config_from({**raw, "eval": {**raw["eval"], "languages": ["de", "xx"]}})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------ evaluation
def test_per_language_evaluation_matches_a_direct_evaluation(tokenizers: dict[str, Path]) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizers['multi']}", "model.text.plugin=xlmr"])
    model = build_model(cfg.model).eval()
    task = build_task(PluginSection.model_validate({"plugin": "retrieval", "rerank_k": 4}), model)
    eval_cfg = TaskEvalConfig.model_validate({"data": [{"plugin": "synthetic", "split": "test"}],
                                              "languages": ["en", "zh"], "samples": 12, "batch_size": 8})
    results = evaluate_task(model, task, eval_cfg, default_registry(), None, print_table=False)
    direct, sets = {}, {}
    for lang in ("en", "zh"):
        section = DataSourceSection.model_validate({"plugin": "synthetic", "split": "test", "languages": [lang]})
        data = eval_set(read_records(section, "x", 12, default_registry()), "x", model.preprocess())
        sets[lang] = data
        tokens = encode_visuals(model, data.visuals, data.video, 8)
        metrics = evaluate_retrieval(model, tokens, data.captions, data.text_to_visual, 4, 8)
        direct[lang] = metrics
        for k in (1, 5, 10):
            assert results[f"lang/{lang}/retrieval/i2t_r{k}"] == pytest.approx(metrics.i2t[k])
            assert results[f"lang/{lang}/retrieval/t2i_r{k}"] == pytest.approx(metrics.t2i[k])
        assert results[f"lang/{lang}/retrieval/mean_recall"] == pytest.approx(metrics.mean)
        assert results[f"lang/{lang}/retrieval/n"] == 12
    # the same images, captioned in each language
    assert torch.equal(sets["en"].visuals, sets["zh"].visuals)
    assert sets["en"].captions != sets["zh"].captions
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c) for c in sets["zh"].captions)
    mean = results["retrieval/mean_recall/mean_over_languages"]
    assert mean == pytest.approx((direct["en"].mean + direct["zh"].mean) / 2)


# ------------------------------------------------------------------------------------------ end to end
def test_finetune_a_reassembled_checkpoint(tokenizers: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = _source(tokenizers, tmp_path)
    text = {"plugin": "xlmr", "tokenizer": str(tokenizers["multi"]), "layers": 1, "width": 32, "heads": 2,
            "intermediate": 64}
    reassembled = reassemble_checkpoint(source, text, "swap", tmp_path / "xlmr")
    new = set(read_manifest(reassembled).new_parameters)
    config = tmp_path / "ft.yaml"
    raw = _raw(tmp_path / "ft")
    config.write_text(yaml.safe_dump({**raw, "task": {"rerank_k": 4}}))
    args = ["finetune", "--task", "retrieval", "--checkpoint", str(tmp_path / "xlmr"), "--config", str(config),
            "--set", "train.seed=3", "--quiet"]
    assert main(args) == 0

    ckpt = latest_checkpoint(tmp_path / "ft")
    assert ckpt is not None and ckpt.name == "step-00000003"
    manifest = read_manifest(ckpt)
    assert [e["op"] for e in manifest.lineage] == ["pretrain", "reassemble", "load", "finetune"]
    assert manifest.lineage[2]["checkpoint"] == str(reassembled.resolve())
    assert set(manifest.new_parameters) == new  # the retrieval task adds no heads
    assert manifest.parts["task"].plugin == "retrieval" and manifest.parts["task"].config["rerank_k"] == 4

    # new parameters (and only they) trained with lr × new_param_lr_scale
    trainer = torch.load(ckpt / "trainer.pt", weights_only=True)
    groups = trainer["optimizer"]["param_groups"]
    scaled = {n for g in groups if g["lr_scale"] == 2.0 for n in g["param_names"]}
    base = {n for g in groups if g["lr_scale"] == 1.0 for n in g["param_names"]}
    model = load_model(ckpt).model
    assert model.task is not None and model.task.name == "retrieval"
    unique_new = {n for n, _ in model.named_parameters()} & new
    assert scaled == unique_new and base and not (base & new)

    # only the retrieval losses ran; the kept modules trained; per-language evaluation was written
    logs = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert {"retrieval", "retrieval/contrastive", "retrieval/matching"} <= set(logs[-1])
    assert not any("mlm" in k or "bbox" in k for k in logs[-1])
    before = load_model(reassembled).model.state_dict()
    after = model.state_dict()
    assert not torch.equal(before["heads.vision_proj.weight"], after["heads.vision_proj.weight"])
    assert torch.equal(before["heads.mlm.decoder.bias"], after["heads.mlm.decoder.bias"])  # MLM head unused here
    evaluation = json.loads((tmp_path / "ft" / "eval.json").read_text())
    mean = (evaluation["lang/de/retrieval/mean_recall"] + evaluation["lang/zh/retrieval/mean_recall"]) / 2
    assert evaluation["retrieval/mean_recall/mean_over_languages"] == pytest.approx(mean)

    # the checkpoint knows its task and its evaluation: `evaluate` reproduces the numbers with no flag
    capsys.readouterr()
    out = tmp_path / "again.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft"), "--out", str(out)]) == 0
    assert "on task retrieval" in capsys.readouterr().out
    again = json.loads(out.read_text())["metrics"]
    assert again == pytest.approx(evaluation)


def test_a_pretraining_checkpoint_has_no_new_parameters(tokenizers: dict[str, Path], tmp_path: Path) -> None:
    source, model = _source(tokenizers, tmp_path)
    cfg = finetune_config_from(_raw(tmp_path / "ft", steps=1))
    result = finetune(source, cfg, progress=False, evaluate=False)
    assert result.evaluation == {} and not (tmp_path / "ft" / "eval.json").exists()
    ckpt = latest_checkpoint(tmp_path / "ft")
    assert ckpt is not None
    groups = torch.load(ckpt / "trainer.pt", weights_only=True)["optimizer"]["param_groups"]
    assert {g["lr_scale"] for g in groups} == {1.0}
    # the fine-tuned weights load back into the source architecture (the task part holds no tensors)
    load_model_state(model, ckpt, parts=["vision", "text", "fusion", "heads"])
