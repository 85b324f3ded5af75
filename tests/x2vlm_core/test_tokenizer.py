"""x2vlm_core.tokenizer: contract shapes, training (incl. CJK), save/load round trip, vocab.txt and .model files."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from x2vlm_core.contracts import Tokenizer
from x2vlm_core.data.tokenizer import FastTokenizer, TokenizerError, load_tokenizer, train_tokenizer

CORPUS = [
    "A red circle on the left of a blue square.",
    "Two small green triangles near the top right corner.",
    "The yellow star is above the purple rectangle.",
    "一个红色的圆在蓝色正方形的左边。",
    "左側に赤い円があり、右側に青い四角があります。",
    "Ein roter Kreis links neben einem blauen Quadrat.",
] * 30


@pytest.fixture(scope="module", params=["wordpiece", "sentencepiece"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[FastTokenizer, Path]:
    out = tmp_path_factory.mktemp(request.param)
    return train_tokenizer(CORPUS, request.param, 300, out), out


def test_contract_shapes_and_specials(trained: tuple[FastTokenizer, Path]) -> None:
    tok, _ = trained
    assert isinstance(tok, Tokenizer)
    texts = ["a red circle", "the yellow star is above the purple rectangle", "两个"]
    out = tok(texts, max_len=64)
    lengths = out.mask.sum(1)
    assert out.ids.shape == out.mask.shape == out.word_ids.shape == (3, int(lengths.max()))
    assert out.ids.dtype == torch.long and out.mask.dtype == torch.bool and out.word_ids.dtype == torch.long
    assert (out.ids[:, 0] == tok.cls_id).all()
    for row, n in enumerate(lengths.tolist()):
        assert out.ids[row, n - 1] == tok.sep_id
        assert (out.ids[row, n:] == tok.pad_id).all() and not out.mask[row, n:].any()
        assert out.word_ids[row, 0] == -1 and out.word_ids[row, n - 1] == -1 and (out.word_ids[row, n:] == -1).all()
        assert (out.word_ids[row, 1 : n - 1] >= 0).all()
    assert len({tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.unk_id}) == 5
    assert max(tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.unk_id) < tok.vocab_size


def test_truncation_keeps_sep_and_caps_length(trained: tuple[FastTokenizer, Path]) -> None:
    tok, _ = trained
    out = tok(["the yellow star is above the purple rectangle " * 5, "a"], max_len=8)
    assert out.ids.shape[1] == 8
    assert out.ids[0, -1] == tok.sep_id and out.mask[0].all()
    with pytest.raises(ValueError, match="max_len"):
        tok(["a"], max_len=2)


def test_training_corpus_has_no_unknown_tokens_and_cjk_is_segmented(trained: tuple[FastTokenizer, Path]) -> None:
    tok, _ = trained
    out = tok(CORPUS[:6], max_len=128)
    assert not (out.ids[out.mask] == tok.unk_id).any()
    chinese = tok(["一个红色的圆在蓝色正方形的左边。"], max_len=128)
    assert int(chinese.mask.sum()) > 4  # segmented into several pieces, not one unknown blob
    assert tok.decode(chinese.ids[0].tolist()).replace(" ", "") == "一个红色的圆在蓝色正方形的左边。"


def test_wordpiece_cjk_characters_are_words(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, "wordpiece", 300, tmp_path)
    out = tok(["红色的圆"], max_len=16)
    assert out.word_ids[0, 1:5].tolist() == [0, 1, 2, 3]
    # Whole-word ids: sub-word pieces of one English word share an id.
    pieces = tok.encode("rectangles")
    words = tok(["rectangles"], max_len=16).word_ids[0, 1 : len(pieces) - 1]
    assert (words == 0).all()


def test_save_load_round_trip(trained: tuple[FastTokenizer, Path], tmp_path: Path) -> None:
    tok, saved = trained
    assert (saved / "tokenizer.json").is_file()
    tok.save(str(tmp_path))
    again = load_tokenizer(tmp_path)
    texts = CORPUS[:6] + ["unseen words zebra", "[MASK] 你好"]
    a, b = tok(texts, 40), again(texts, 40)
    for x, y in zip((a.ids, a.mask, a.word_ids), (b.ids, b.mask, b.word_ids), strict=True):
        assert torch.equal(x, y)
    assert (again.vocab_size, again.pad_id, again.cls_id, again.sep_id, again.mask_id, again.unk_id) == (
        tok.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id)


def test_mask_token_in_text_stays_one_special(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, "wordpiece", 300, tmp_path)
    out = tok(["a [MASK] circle"], max_len=16)
    assert out.ids[0, 2] == tok.mask_id and out.word_ids[0, 2] == -1


def _write_vocab(path: Path, cased: bool = False) -> list[str]:
    words = ["red", "circle", "blue", "square", "left", "the", "of", "on", "a", "##s", "##er", "small", ".", "紅"]
    if cased:
        words += ["Red", "Paris"]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def test_vocab_txt_file_tokenizes_real_words(tmp_path: Path) -> None:
    tokens = _write_vocab(tmp_path / "vocab.txt")
    tok = load_tokenizer(tmp_path / "vocab.txt")
    assert tok.encode("The red circles on the LEFT.") == [
        "[CLS]", "the", "red", "circle", "##s", "on", "the", "left", ".", "[SEP]"]
    out = tok(["The red circles on the LEFT."], max_len=16)
    assert out.ids[0].tolist() == [tokens.index(t) for t in
                                   ["[CLS]", "the", "red", "circle", "##s", "on", "the", "left", ".", "[SEP]"]]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert out.word_ids[0].tolist() == [-1, 0, 1, 2, 2, 3, 4, 5, 6, -1]
    assert tok(["zebra"], max_len=8).ids[0, 1] == tok.unk_id
    # Same ids from the containing directory (vocab.txt inside a HF directory).
    assert torch.equal(load_tokenizer(tmp_path)(["the red circles"], 8).ids, tok(["the red circles"], 8).ids)


def test_vocab_txt_casing_follows_vocabulary(tmp_path: Path) -> None:
    _write_vocab(tmp_path / "vocab.txt", cased=True)
    tok = load_tokenizer(tmp_path / "vocab.txt")
    assert tok.encode("Red red")[1:3] == ["Red", "red"]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    assert load_tokenizer(tmp_path).encode("Red red")[1:3] == ["red", "red"]


def test_sentencepiece_model_matches_sentencepiece(tmp_path: Path) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "spm"), vocab_size=80, minloglevel=2,
        model_type="unigram",
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    tok = load_tokenizer(tmp_path / "spm.model")
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.mask_id == tok.vocab_size - 1 == sp.get_piece_size() + 1
    texts = ["A red circle on the left.", "一个红色的圆在左边。", "左側に赤い円があります。", "  Two   stars  "]
    out = tok(texts, max_len=64)
    for row, text in enumerate(texts):
        pieces = sp.encode(text)
        expected = [0] + [p + 1 for p in pieces] + [2]  # XLM-R: fairseq offset 1 for ordinary pieces
        assert out.ids[row, : len(expected)].tolist() == expected
    assert not (out.ids[out.mask] == tok.unk_id).any()


def test_bad_paths_explain(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(TokenizerError, match="cls token"):
        load_tokenizer(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(CORPUS, "bpe", 100, tmp_path / "x")  # type: ignore[arg-type]
