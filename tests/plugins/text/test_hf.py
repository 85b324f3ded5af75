"""hf text plugin: any local transformers encoder directory (AutoModel), strict, equal to transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from plugins.text.hf import HFText, HFTextConfig
from registry import ConfigError
from x2vlm_core.checkpoint.weights import WeightsError, load_state_strict

TEXTS = ["a red circle on the left", "two green triangles", "一个红色的圆"]


def _bert_dir(path: Path, tokenizer: Path, pooler: bool) -> Path:
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((tokenizer / name).read_bytes())
    return path


def test_config_requires_pretrained_and_rejects_unknown() -> None:
    with pytest.raises(ValidationError, match="pretrained"):
        HFTextConfig()
    with pytest.raises(ValidationError, match="extra"):
        HFTextConfig(pretrained="x", layers=2)


@pytest.mark.parametrize("pooler", [True, False])
def test_matches_transformers_automodel(wordpiece_dir: Path, tmp_path: Path, pooler: bool) -> None:
    directory = _bert_dir(tmp_path, wordpiece_dir, pooler)
    model = HFText(HFTextConfig(pretrained=str(directory))).eval()
    reference = AutoModel.from_pretrained(str(directory)).eval()
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        ours = model(batch.ids, batch.mask).tokens
        theirs = reference(input_ids=batch.ids, attention_mask=batch.mask.long()).last_hidden_state
    assert ours.shape == (3, batch.ids.shape[1], 32)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not any("pooler" in k for k in model.state_dict())
    assert model.pretrained_keys == frozenset(model.state_dict())


def test_other_architecture_distilbert(wordpiece_dir: Path, tmp_path: Path) -> None:
    config = DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40)
    reference = DistilBertModel(config).eval()
    reference.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_bytes((wordpiece_dir / "tokenizer.json").read_bytes())
    model = HFText(HFTextConfig(pretrained=str(tmp_path))).eval()
    assert model.width == 32
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        torch.testing.assert_close(model(batch.ids, batch.mask).tokens,
                                   reference(input_ids=batch.ids, attention_mask=batch.mask.long()).last_hidden_state,
                                   rtol=0, atol=1e-6)


def test_unexpected_encoder_key_is_an_error(wordpiece_dir: Path, tmp_path: Path) -> None:
    directory = _bert_dir(tmp_path, wordpiece_dir, pooler=False)
    state = load_file(directory / "model.safetensors")
    state["encoder.layer.7.output.dense.weight"] = torch.zeros(32, 64)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(WeightsError, match="unexpected.*encoder.layer.7"):
        HFText(HFTextConfig(pretrained=str(directory)))


def test_missing_dir_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained.*does not exist"):
        HFText(HFTextConfig(pretrained=str(tmp_path / "nope")))


def test_strict_round_trip(wordpiece_dir: Path, tmp_path: Path) -> None:
    directory = _bert_dir(tmp_path / "m", wordpiece_dir, pooler=False)
    model = HFText(HFTextConfig(pretrained=str(directory))).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "text.safetensors")
    other = HFText(HFTextConfig(pretrained=str(directory))).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    load_state_strict(other, load_file(tmp_path / "text.safetensors"), "text.safetensors")
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        torch.testing.assert_close(other(batch.ids, batch.mask).tokens, model(batch.ids, batch.mask).tokens,
                                   rtol=0, atol=0)
