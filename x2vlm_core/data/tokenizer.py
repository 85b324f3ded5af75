"""Tokenizers over the `tokenizers` library: load HF/WordPiece/SentencePiece vocabularies, train small ones.

Every tokenizer here wraps one `tokenizers.Tokenizer` and adds `[CLS] text [SEP]`-style specials
(`<s> text </s>` for SentencePiece vocabularies) itself, so the `Tokenizer` contract of
x2vlm_core/interfaces.py holds whatever the source: token 0 is the class token, padding is on the right,
`word_ids` come from the pre-tokenizer's word boundaries (-1 for specials and padding).

transformers 5 silently maps every word to the unknown token when a `BertTokenizer` or
`XLMRobertaTokenizer` is built from a bare `vocab.txt` / `.model` file, so those formats are converted
here with the `tokenizers` models directly (WordPiece, Unigram) and checked against real words in tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _Backend

from registry import PluginError
from x2vlm_core.contracts import TokenizedText

__all__ = ["FastTokenizer", "TokenizerError", "load_tokenizer", "train_tokenizer"]

_ROLES = ("cls", "sep", "pad", "mask", "unk")
# Conventional spellings per role, tried in order when a directory does not name its special tokens.
_CANDIDATES = {
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "pad": ("[PAD]", "<pad>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("[UNK]", "<unk>"),
}
_WORDPIECE_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# XLM-R's (fairseq's) layout: <s>=0, <pad>=1, </s>=2, <unk>=3, pieces, <mask> last.
_SPM_HEAD = ("<s>", "<pad>", "</s>", "<unk>")
_CONFIG_FILE = "tokenizer_config.json"


class TokenizerError(PluginError):
    """A tokenizer file or directory is missing, unreadable or lacks a special token."""


class FastTokenizer:
    """`Tokenizer` over a `tokenizers.Tokenizer`: texts → TokenizedText ids/mask/word_ids [B, L].

    `specials` maps each role (cls, sep, pad, mask, unk) to its token string; all must be in the vocabulary.
    """

    def __init__(self, backend: _Backend, specials: dict[str, str], source: str = "<memory>") -> None:
        missing = [r for r in _ROLES if r not in specials]
        if missing:
            raise TokenizerError(f"tokenizer {source}: no special token for role(s) {', '.join(missing)}")
        ids: dict[str, int] = {}
        for role in _ROLES:
            token_id = backend.token_to_id(specials[role])
            if token_id is None:
                raise TokenizerError(f"tokenizer {source}: {role} token {specials[role]!r} is not in the vocabulary")
            ids[role] = token_id
        self._backend = backend
        self._specials = dict(specials)
        self.source = source
        # Registering them as special keeps e.g. "[MASK]" in text one token and out of word_ids.
        backend.add_special_tokens([specials[r] for r in _ROLES])
        # One single-sequence template for every source: token 0 is always the class token.
        backend.post_processor = processors.TemplateProcessing(
            single=f"{specials['cls']} $A {specials['sep']}",
            special_tokens=[(specials["cls"], ids["cls"]), (specials["sep"], ids["sep"])],
        )
        backend.no_truncation()
        backend.enable_padding(direction="right", pad_id=ids["pad"], pad_token=specials["pad"])
        self.cls_id, self.sep_id, self.pad_id = ids["cls"], ids["sep"], ids["pad"]
        self.mask_id, self.unk_id = ids["mask"], ids["unk"]
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        # Unknown tokens stand for real words, so they keep their word ids.
        self._special_ids = torch.tensor(sorted({i for r, i in ids.items() if r != "unk"}), dtype=torch.long)

    @property
    def specials(self) -> dict[str, str]:
        """Role → token string."""
        return dict(self._specials)

    @property
    def backend(self) -> _Backend:
        """The wrapped `tokenizers.Tokenizer` (padding on, post-processor set; do not reconfigure)."""
        return self._backend

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        """texts → ids/mask/word_ids [B, L], L = longest text in the call (with specials), at most max_len."""
        if isinstance(texts, str):
            raise TypeError("FastTokenizer takes a sequence of texts, not one string")
        if max_len < 3:
            raise ValueError(f"max_len must be at least 3 (two specials + one token), got {max_len}")
        if len(texts) == 0:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return TokenizedText(empty, empty.bool(), empty.clone())
        self._backend.enable_truncation(max_length=max_len)  # counts the specials the template adds
        encodings = self._backend.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        word_ids = torch.tensor([[-1 if w is None else w for w in e.word_ids] for e in encodings], dtype=torch.long)
        # Special tokens written in the text (e.g. "[MASK]") are not words either.
        word_ids = word_ids.masked_fill(torch.isin(ids, self._special_ids), -1)
        return TokenizedText(ids=ids, mask=mask, word_ids=word_ids)

    def encode(self, text: str) -> list[str]:
        """One text → its tokens as strings (with specials), for inspection and tests."""
        return list(self._backend.encode(text).tokens)

    def decode(self, ids: Sequence[int]) -> str:
        """ids → text, specials dropped."""
        return str(self._backend.decode(list(ids), skip_special_tokens=True))

    def save(self, directory: str) -> None:
        """Write `tokenizer.json` + `tokenizer_config.json` (HF-compatible) to `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._backend.save(str(out / "tokenizer.json"))
        config = {f"{role}_token": token for role, token in self._specials.items()}
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (out / _CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------- loading
def load_tokenizer(path: str | Path) -> FastTokenizer:
    """Load a tokenizer from a HF directory (tokenizer.json, vocab.txt or a SentencePiece `.model`),
    a WordPiece `vocab.txt` file, a `tokenizer.json` file or a SentencePiece `.model` file."""
    path = Path(path)
    if path.is_dir():
        config = _read_config(path)
        if (path / "tokenizer.json").is_file():
            return _from_tokenizer_json(path / "tokenizer.json", config)
        if (path / "vocab.txt").is_file():
            return _from_vocab_txt(path / "vocab.txt", config)
        spm_files = sorted(path.glob("*.model"))
        if len(spm_files) == 1:
            return _from_sentencepiece(spm_files[0])
        found = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "(empty)"
        raise TokenizerError(
            f"tokenizer directory {path} has no tokenizer.json, vocab.txt or single SentencePiece .model file "
            f"(found: {found})"
        )
    if path.is_file():
        if path.suffix == ".txt":
            return _from_vocab_txt(path, {})
        if path.suffix == ".model":
            return _from_sentencepiece(path)
        if path.suffix == ".json":
            return _from_tokenizer_json(path, _read_config(path.parent))
        raise TokenizerError(
            f"tokenizer file {path}: expected a WordPiece vocab .txt, a tokenizer .json or a SentencePiece .model"
        )
    raise TokenizerError(f"tokenizer path {path} does not exist; pass a local directory or file")


def _read_config(directory: Path) -> dict[str, object]:
    """Merge special_tokens_map.json and tokenizer_config.json (the latter wins), if present."""
    merged: dict[str, object] = {}
    for name in ("special_tokens_map.json", _CONFIG_FILE):
        file = directory / name
        if file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise TokenizerError(f"{file} is not valid JSON: {error}") from None
            if isinstance(data, dict):
                merged.update(data)
    return merged


def _specials_from(config: dict[str, object], vocab: dict[str, int], source: str) -> dict[str, str]:
    """Special tokens named by the config (str or {"content": str}), else the conventional spellings."""
    specials: dict[str, str] = {}
    for role in _ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in vocab:
            specials[role] = value
            continue
        found = next((c for c in _CANDIDATES[role] if c in vocab), None)
        if found is None:
            raise TokenizerError(
                f"tokenizer {source}: cannot find a {role} token (tried {', '.join(_CANDIDATES[role])}); "
                f"name it as {role}_token in {_CONFIG_FILE}"
            )
        specials[role] = found
    return specials


def _from_tokenizer_json(file: Path, config: dict[str, object]) -> FastTokenizer:
    try:
        backend = _Backend.from_file(str(file))
    except Exception as error:
        raise TokenizerError(f"cannot read tokenizer file {file}: {error}") from None
    specials = _specials_from(config, backend.get_vocab(with_added_tokens=True), str(file))
    return FastTokenizer(backend, specials, source=str(file))


def _from_vocab_txt(file: Path, config: dict[str, object]) -> FastTokenizer:
    """BERT WordPiece from a vocab.txt; lower-casing from do_lower_case, else from the vocabulary itself."""
    tokens = [line.rstrip("\n").rstrip("\r") for line in file.read_text(encoding="utf-8").splitlines()]
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)  # first occurrence wins, as in BERT's loader
    if not vocab:
        raise TokenizerError(f"vocabulary file {file} is empty")
    specials = _specials_from(config, vocab, str(file))
    lower = config.get("do_lower_case")
    if not isinstance(lower, bool):
        # A cased vocabulary holds capitalised words; an uncased one has none outside its specials.
        special_set = set(specials.values())
        lower = not any(t != t.lower() for t in vocab if t not in special_set and not t.startswith("["))
    backend = _Backend(models.WordPiece(vocab, unk_token=specials["unk"], max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lower
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return FastTokenizer(backend, specials, source=str(file))


def _from_sentencepiece(file: Path) -> FastTokenizer:
    """A SentencePiece unigram `.model` in XLM-R's layout: <s> <pad> </s> <unk>, then the pieces, <mask> last."""
    from sentencepiece import sentencepiece_model_pb2 as generated

    pb: Any = generated  # protobuf-generated module: no type information
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(file.read_bytes())
    except Exception as error:
        raise TokenizerError(f"{file} is not a SentencePiece model: {error}") from None
    if proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        raise TokenizerError(f"{file}: only SentencePiece unigram models are supported (XLM-R's kind)")
    normal, user, byte = (
        pb.ModelProto.SentencePiece.NORMAL,
        pb.ModelProto.SentencePiece.USER_DEFINED,
        pb.ModelProto.SentencePiece.BYTE,
    )
    pieces = [(p.piece, float(p.score)) for p in proto.pieces if p.type in (normal, user, byte)]
    vocab = [(t, 0.0) for t in _SPM_HEAD] + pieces + [("<mask>", 0.0)]
    backend = _Backend(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    steps: list[normalizers.Normalizer] = []
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    if proto.normalizer_spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    backend.normalizer = normalizers.Sequence(steps)
    scheme: Literal["always", "never"] = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    specials = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
    return FastTokenizer(backend, specials, source=str(file))


# ------------------------------------------------------------------------------------- training
def train_tokenizer(
    texts: Iterable[str],
    kind: Literal["wordpiece", "sentencepiece"],
    vocab_size: int,
    out_dir: str | Path,
    lowercase: bool = True,
) -> FastTokenizer:
    """Train a small tokenizer on `texts` and save it to `out_dir` (readable by `load_tokenizer`).

    wordpiece: BERT-style (CJK ideographs become single-character words, [CLS] [SEP] [PAD] [MASK] [UNK]).
    sentencepiece: unigram over Metaspace words, XLM-R specials <s> <pad> </s> <unk> <mask>; text
    without spaces (Chinese, Japanese) is segmented by the unigram model.
    """
    if vocab_size < 16:
        raise ValueError(f"vocab_size must be at least 16, got {vocab_size}")
    if kind == "wordpiece":
        backend = _Backend(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        order = ["pad", "unk", "cls", "sep", "mask"]
        special_tokens = [_WORDPIECE_SPECIALS[r] for r in order]
        trainer: trainers.Trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False
        )
        specials = dict(_WORDPIECE_SPECIALS)
    elif kind == "sentencepiece":
        backend = _Backend(models.Unigram())
        steps: list[normalizers.Normalizer] = [normalizers.NFKC(), normalizers.Strip(),
                                               normalizers.Replace(Regex(r"\s+"), " ")]
        if lowercase:
            steps.append(normalizers.Lowercase())
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        special_tokens = [*_SPM_HEAD, "<mask>"]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, unk_token="<unk>", max_piece_length=8,
            show_progress=False,
        )
        specials = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
    else:
        raise ValueError(f"kind must be 'wordpiece' or 'sentencepiece', got {kind!r}")
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = FastTokenizer(backend, specials, source=f"trained {kind}")
    tokenizer.save(str(out_dir))
    return load_tokenizer(out_dir)
