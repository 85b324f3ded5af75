"""Captioning metrics: BLEU-1..4 and CIDEr-D over all references per image (pycocoevalcap scorers), METEOR
and SPICE only where Java can run them. Pure functions of strings; no torch.

Tokenisation (`tokenize_caption`, used on references and candidates alike, in place of the Java PTB
tokenizer the COCO toolkit calls):
  1. Unicode NFKC (full-width forms become ASCII: "，" → ","), curly apostrophes become "'", lower case;
  2. clitics split off as the PTB tokenizer does: "dog's" → "dog 's", "don't" → "do n't";
  3. the marks PTB drops are removed: sentence punctuation, quotes, brackets, dashes (Unicode
     categories P* except the symbol-like marks below), but a hyphen or apostrophe between two letters
     or digits stays inside its word ("t-shirt", "o'clock") and a period or comma between two digits
     stays inside its number ("3.5", "1,000");
  4. symbols (Unicode S*: $ + = ...) and the marks % & # @ * / \\ become tokens of their own;
  5. CJK characters (Han, kana, Hangul) become one token each, so Chinese and Japanese captions are
     scored on characters;
  6. split on whitespace.
It is meant to agree with PTB on ordinary English captions; unusual inputs (URLs, abbreviations such
as "u.s.") may tokenise differently, so scores are comparable across models evaluated here, and close
to, not identical with, numbers reported with the Java tokenizer.

pycocoevalcap's `Cider` is CIDEr-D (clipped counts, Gaussian length penalty σ = 6, × 10); its IDF comes
from the references of the evaluated images, so CIDEr-D depends on the whole set, not only per image.
METEOR (English) needs a `java` binary; SPICE also needs the Stanford CoreNLP jars installed inside
pycocoevalcap (its scorer would otherwise download them), so it is reported only where both exist.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaptionScores", "ImageId", "caption_scores", "tokenize_caption"]

ImageId = int | str

_CLITIC_NT = re.compile(r"(?<=[^\W_])(n't)(?![^\W_])")
_CLITIC = re.compile(r"(?<=[^\W_])('s|'re|'ve|'ll|'d|'m)(?![^\W_])")
_CLITIC_TOKENS = frozenset({"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"})
_SYMBOL_MARKS = frozenset("%&#@*/\\")
_INNER_WORD = frozenset("-'")
_INNER_NUMBER = frozenset(".,")
_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x323AF),  # CJK extensions B onwards
)
_SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_word_char(ch: str) -> bool:
    # Combining marks (accents, Indic vowel signs) belong to the letter before them.
    return not _is_cjk(ch) and (ch.isalnum() or unicodedata.category(ch).startswith("M"))


def _split_chunk(chunk: str) -> list[str]:
    """One whitespace-free chunk → tokens (rules 3–5 of the module docstring)."""
    if chunk in _CLITIC_TOKENS:
        return [chunk]
    out: list[str] = []
    word: list[str] = []

    def flush() -> None:
        if word:
            out.append("".join(word))
            word.clear()

    for i, ch in enumerate(chunk):
        prev = chunk[i - 1] if i > 0 else ""
        nxt = chunk[i + 1] if i + 1 < len(chunk) else ""
        if _is_cjk(ch):
            flush()
            out.append(ch)
        elif _is_word_char(ch):
            word.append(ch)
        elif ch in _INNER_WORD and prev and nxt and _is_word_char(prev) and _is_word_char(nxt):
            word.append(ch)
        elif ch in _INNER_NUMBER and prev.isdigit() and nxt.isdigit():
            word.append(ch)
        elif unicodedata.category(ch).startswith("P") and ch not in _SYMBOL_MARKS:
            flush()
        else:
            flush()
            out.append(ch)
    flush()
    return out


def tokenize_caption(text: str) -> list[str]:
    """A caption → lower-case tokens without punctuation, e.g. "A dog's ball." → ["a", "dog", "'s", "ball"]."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'").lower()
    text = _CLITIC.sub(r" \1", _CLITIC_NT.sub(r" \1", text))
    return [token for chunk in text.split() for token in _split_chunk(chunk)]


@dataclass(frozen=True)
class CaptionScores:
    """bleu: BLEU-1..4 (corpus level, closest reference length); cider_d; meteor and spice are None
    where they could not run (no Java, or no CoreNLP jars for SPICE)."""

    bleu: tuple[float, float, float, float]
    cider_d: float
    meteor: float | None
    spice: float | None

    @property
    def bleu4(self) -> float:
        return self.bleu[3]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}bleu_{n}": value for n, value in enumerate(self.bleu, start=1)}
        out[f"{prefix}cider_d"] = self.cider_d
        if self.meteor is not None:
            out[f"{prefix}meteor"] = self.meteor
        if self.spice is not None:
            out[f"{prefix}spice"] = self.spice
        return out


def _tokenized_inputs(
    candidates: Mapping[ImageId, str], references: Mapping[ImageId, Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Validate and tokenise → (references, candidate) keyed 0..n-1 in candidate order, tokens space-joined."""
    missing = [key for key in candidates if key not in references]
    extra = [key for key in references if key not in candidates]
    if missing or extra:
        raise ValueError(
            f"caption_scores: candidates and references must cover the same image ids; without references: "
            f"{missing[:5]}, without a candidate: {extra[:5]}"
        )
    if not candidates:
        raise ValueError("caption_scores: got no images; pass at least one candidate with its references")
    gts: dict[int, list[str]] = {}
    res: dict[int, list[str]] = {}
    for index, (key, candidate) in enumerate(candidates.items()):
        if not isinstance(candidate, str):
            raise TypeError(f"caption_scores: image {key!r}: the candidate must be one string, got {type(candidate)}")
        tokens = tokenize_caption(candidate)
        if not tokens:
            raise ValueError(
                f"caption_scores: image {key!r}: the candidate caption {candidate!r} is empty after tokenisation; "
                "generate at least one word per image"
            )
        refs = references[key]
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(
                f"caption_scores: image {key!r}: needs a non-empty list of reference captions, got {refs!r}"
            )
        tokenized_refs = []
        for r, ref in enumerate(refs):
            ref_tokens = tokenize_caption(ref)
            if not ref_tokens:
                raise ValueError(
                    f"caption_scores: image {key!r}: reference {r} ({ref!r}) is empty after tokenisation; "
                    "drop it from the references"
                )
            tokenized_refs.append(" ".join(ref_tokens))
        gts[index], res[index] = tokenized_refs, [" ".join(tokens)]
    return gts, res


def _java_available(java: bool | None) -> bool:
    found = shutil.which("java") is not None
    if java and not found:
        raise RuntimeError("caption_scores: java=True but no `java` binary is on PATH; install a JRE or pass java=None")
    return found if java is None else java


def _spice_installed() -> bool:
    from pycocoevalcap import spice

    lib = Path(next(iter(spice.__path__))) / "lib"
    return all((lib / jar).is_file() for jar in _SPICE_JARS)


def caption_scores(
    candidates: Mapping[ImageId, str], references: Mapping[ImageId, Sequence[str]], java: bool | None = None
) -> CaptionScores:
    """One candidate caption per image id against all its references → CaptionScores.

    java: None runs METEOR (and SPICE, where its jars are installed) when a `java` binary is on PATH;
    False never runs them; True requires Java and raises without it.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as error:
        raise ImportError("caption_scores needs pycocoevalcap: pip install 'pycocoevalcap>=1.2'") from error
    gts, res = _tokenized_inputs(candidates, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    meteor = spice = None
    if _java_available(java):
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            meteor = float(scorer.compute_score(gts, res)[0])
        finally:
            del scorer  # stops the Java process now rather than at interpreter exit
        if _spice_installed():
            from pycocoevalcap.spice.spice import Spice

            spice = float(Spice().compute_score(gts, res)[0])
    b1, b2, b3, b4 = (float(b) for b in bleu)
    return CaptionScores(bleu=(b1, b2, b3, b4), cider_d=float(cider), meteor=meteor, spice=spice)
