"""bert text plugin: random init from a tokenizer, local pretrained directory vs transformers, strict loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertModel

from plugins.text.bert import BertText, BertTextConfig
from registry import ConfigError
from x2vlm_core.checkpoint.weights import WeightsError, load_state_strict
from x2vlm_core.contracts import TextEncoder, Tokenizer

TEXTS = ["a red circle on the left", "two green triangles", "一个红色的圆"]
TINY = {"layers": 2, "width": 32, "heads": 4, "intermediate": 64, "max_positions": 40, "dropout": 0.0}


def _tiny(wordpiece_dir: Path) -> BertText:
    return BertText(BertTextConfig(tokenizer=str(wordpiece_dir), **TINY)).eval()


def test_config_rejects_unknown_and_inconsistent_fields(wordpiece_dir: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        BertTextConfig(tokenizer=str(wordpiece_dir), colour=1)
    with pytest.raises(ValidationError, match="pretrained"):
        BertTextConfig()
    with pytest.raises(ValidationError, match="random init only"):
        BertTextConfig(pretrained="x", tokenizer="y")
    with pytest.raises(ValidationError, match="divisible"):
        BertTextConfig(tokenizer="y", width=30, heads=4)


def test_random_init_forward_contract(wordpiece_dir: Path) -> None:
    model = _tiny(wordpiece_dir)
    assert isinstance(model, TextEncoder) and isinstance(model.tokenizer, Tokenizer)
    assert model.width == 32 and model.pretrained_keys == frozenset()
    assert model.word_embeddings().num_embeddings == model.tokenizer.vocab_size
    assert model.word_embeddings().padding_idx == model.tokenizer.pad_id
    batch = model.tokenizer(TEXTS, max_len=16)
    out = model(batch.ids, batch.mask).tokens
    assert out.shape == (3, batch.ids.shape[1], 32) and torch.isfinite(out).all()
    # Padding does not change the real positions.
    alone = model.tokenizer(TEXTS[1:2], max_len=16)
    n = int(alone.mask.sum())
    torch.testing.assert_close(model(alone.ids, alone.mask).tokens[0], out[1, :n], atol=1e-5, rtol=1e-5)


def test_pretrained_dir_matches_transformers(wordpiece_dir: Path, tmp_path: Path) -> None:
    source = _tiny(wordpiece_dir)
    source.model.save_pretrained(tmp_path)
    shutil.copy(wordpiece_dir / "tokenizer.json", tmp_path)
    shutil.copy(wordpiece_dir / "tokenizer_config.json", tmp_path)
    model = BertText(BertTextConfig(pretrained=str(tmp_path), dropout=0.0)).eval()
    reference = BertModel.from_pretrained(str(tmp_path)).eval()
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        ours = model(batch.ids, batch.mask).tokens
        theirs = reference(input_ids=batch.ids, attention_mask=batch.mask.long()).last_hidden_state
    real = batch.mask.bool()
    assert not real.all()  # the batch is padded, so packing (the CPU default) runs
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-6)  # pads are never read
    assert model.pretrained_keys == frozenset(f"model.{k}" for k in model.model.state_dict())
    assert model.model.config._attn_implementation == "sdpa"


def test_pretraining_checkpoint_with_prefix_heads_and_bin(wordpiece_dir: Path, tmp_path: Path) -> None:
    """A BertForMaskedLM saved as pytorch_model.bin: "bert." prefix stripped, "cls." head skipped by name."""
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40)
    mlm = BertForMaskedLM(config).eval()
    config.save_pretrained(tmp_path)
    torch.save(mlm.state_dict(), tmp_path / "pytorch_model.bin")
    shutil.copy(wordpiece_dir / "tokenizer.json", tmp_path)
    model = BertText(BertTextConfig(pretrained=str(tmp_path), dropout=0.0)).eval()
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        theirs = mlm.bert(input_ids=batch.ids, attention_mask=batch.mask.long()).last_hidden_state
        real = batch.mask.bool()
        torch.testing.assert_close(model(batch.ids, batch.mask).tokens[real], theirs[real], rtol=0, atol=1e-6)


def test_missing_weights_are_errors(wordpiece_dir: Path, tmp_path: Path) -> None:
    source = _tiny(wordpiece_dir)
    source.model.save_pretrained(tmp_path)
    shutil.copy(wordpiece_dir / "tokenizer.json", tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.output.dense.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="encoder.layer.1.output.dense.weight"):
        BertText(BertTextConfig(pretrained=str(tmp_path)))


def test_missing_dir_and_mismatched_fields_name_the_field(wordpiece_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained.*does not exist"):
        BertText(BertTextConfig(pretrained=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="tokenizer.*does not exist"):
        BertText(BertTextConfig(tokenizer=str(tmp_path / "nope")))
    _tiny(wordpiece_dir).model.save_pretrained(tmp_path)
    shutil.copy(wordpiece_dir / "tokenizer.json", tmp_path)
    with pytest.raises(ConfigError, match="layers.*num_hidden_layers=2"):
        BertText(BertTextConfig(pretrained=str(tmp_path), layers=12))


def test_strict_round_trip(wordpiece_dir: Path, tmp_path: Path) -> None:
    model = _tiny(wordpiece_dir)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "text.safetensors")
    other = _tiny(wordpiece_dir)
    report = load_state_strict(other, load_file(tmp_path / "text.safetensors"), "text.safetensors")
    assert report.missing == frozenset()
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        torch.testing.assert_close(other(batch.ids, batch.mask).tokens, model(batch.ids, batch.mask).tokens,
                                   rtol=0, atol=0)


def test_init_std_scales_random_init(wordpiece_dir: Path) -> None:
    for std in (0.02, 0.09):
        torch.manual_seed(0)
        model = BertText(BertTextConfig(tokenizer=str(wordpiece_dir), **{**TINY, "width": 64}, init_std=std))
        weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
        assert weights.std().item() == pytest.approx(std, rel=0.05)
