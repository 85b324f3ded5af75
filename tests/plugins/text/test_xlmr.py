"""xlmr text plugin: random init from a SentencePiece-style tokenizer, local directory vs transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import XLMRobertaModel

from plugins.text.xlmr import XlmrText, XlmrTextConfig
from registry import ConfigError
from x2vlm_core.checkpoint.weights import load_state_strict
from x2vlm_core.contracts import TextEncoder

TEXTS = ["a red circle on the left", "two green triangles", "一个红色的圆"]
TINY = {"layers": 2, "width": 32, "heads": 4, "intermediate": 64, "max_positions": 40, "dropout": 0.0}


def _tiny(tokenizer: Path) -> XlmrText:
    return XlmrText(XlmrTextConfig(tokenizer=str(tokenizer), **TINY)).eval()


def test_config_rejects_unknown_fields(sentencepiece_dir: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        XlmrTextConfig(tokenizer=str(sentencepiece_dir), vocab=3)
    with pytest.raises(ValidationError, match="pretrained"):
        XlmrTextConfig()


def test_random_init_forward_contract(sentencepiece_dir: Path) -> None:
    model = _tiny(sentencepiece_dir)
    assert isinstance(model, TextEncoder) and model.width == 32
    tok = model.tokenizer
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
    assert model.model.config.max_position_embeddings == 40 + tok.pad_id + 1
    batch = tok(TEXTS, max_len=40)  # the full 40 usable positions work
    out = model(batch.ids, batch.mask).tokens
    assert out.shape == (3, batch.ids.shape[1], 32) and torch.isfinite(out).all()


def test_pretrained_dir_matches_transformers(sentencepiece_dir: Path, tmp_path: Path) -> None:
    source = _tiny(sentencepiece_dir)
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save(str(tmp_path))
    model = XlmrText(XlmrTextConfig(pretrained=str(tmp_path), dropout=0.0)).eval()
    reference = XLMRobertaModel.from_pretrained(str(tmp_path)).eval()
    batch = model.tokenizer(TEXTS, max_len=24)
    with torch.no_grad():
        ours = model(batch.ids, batch.mask).tokens
        theirs = reference(input_ids=batch.ids, attention_mask=batch.mask.long()).last_hidden_state
    real = batch.mask.bool()
    assert not real.all()  # padded: the packed path (the CPU default) runs
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-6)  # pads are never read
    assert len(model.pretrained_keys) == len(model.model.state_dict())
    with pytest.raises(ConfigError, match="max_positions"):
        XlmrText(XlmrTextConfig(pretrained=str(tmp_path), max_positions=512))


def test_pretrained_dir_with_sentencepiece_model_only(tmp_path: Path) -> None:
    """XLM-R's layout from a bare sentencepiece .model: ids match sentencepiece + fairseq offset."""
    corpus = ["a red circle on the left", "two green triangles", "一个红色的圆在左边", "左側に赤い円"] * 30
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "sentencepiece.bpe"),
                                   vocab_size=36, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sentencepiece.bpe.model"))
    random_init = XlmrText(XlmrTextConfig(tokenizer=str(tmp_path / "sentencepiece.bpe.model"), **TINY))
    random_init.model.save_pretrained(tmp_path)
    model = XlmrText(XlmrTextConfig(pretrained=str(tmp_path))).eval()
    batch = model.tokenizer(["two green triangles"], max_len=32)
    assert batch.ids[0].tolist() == [0] + [i + 1 for i in sp.encode("two green triangles")] + [2]
    assert model.tokenizer.mask_id == sp.get_piece_size() + 1


def test_missing_dir_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained.*does not exist"):
        XlmrText(XlmrTextConfig(pretrained=str(tmp_path / "nope")))
    tmp_path.joinpath("d").mkdir()
    with pytest.raises(ConfigError, match="pretrained.*no config.json"):
        XlmrText(XlmrTextConfig(pretrained=str(tmp_path / "d")))


def test_strict_round_trip(sentencepiece_dir: Path, tmp_path: Path) -> None:
    model = _tiny(sentencepiece_dir)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "text.safetensors")
    other = _tiny(sentencepiece_dir)
    load_state_strict(other, load_file(tmp_path / "text.safetensors"), "text.safetensors")
    batch = model.tokenizer(TEXTS, max_len=24)
    with torch.no_grad():
        torch.testing.assert_close(other(batch.ids, batch.mask).tokens, model(batch.ids, batch.mask).tokens,
                                   rtol=0, atol=0)
