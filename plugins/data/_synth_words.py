"""Task phrases of the synthetic world: the interface every language implements (questions, answers, statements).

Everything is built from English keys and `Ref`s (see _synth_refs): a Ref names a noun (shape key or a
generic noun) and optionally colour and size. Each question method takes `v`, which of VARIANTS
phrasings to use; answers are short words in the language (counts are digits, as in VQA v2). One
language per subclass, in _synth_words_en_de, _synth_words_fr_cs and _synth_words_zh_ja:

    en  what colour is the circle?          de  welche Farbe hat der Kreis?
    fr  de quelle couleur est le cercle ?   cs  jakou barvu má kruh?
    zh  圆形是什么颜色？                       ja  丸は何色ですか？
"""

from __future__ import annotations

from collections.abc import Sequence

from plugins.data._synth_refs import Ref

__all__ = ["SIDES_LR", "VARIANTS", "Words"]

VARIANTS = 2  # phrasings per question form, the same in every language
SIDES_LR = ("left", "right")  # the two images of a pair


class Words:
    """One language's task phrases. Methods raise NotImplementedError until a language defines them."""

    code: str = ""

    # -------------------------------------------------------------- answers
    def colour(self, colour: str) -> str:
        raise NotImplementedError

    def shape(self, shape: str) -> str:
        raise NotImplementedError

    def size(self, size: str) -> str:
        raise NotImplementedError

    def location(self, location: str) -> str:
        """A LOCATIONS key as a short answer ('top left')."""
        raise NotImplementedError

    def direction(self, direction: str) -> str:
        """A DIRECTIONS key as a short answer ('right')."""
        raise NotImplementedError

    def yes_no(self, value: bool, question_type: str) -> str:
        """Yes or no (some languages answer existence questions with another word than relations)."""
        raise NotImplementedError

    def number(self, n: int) -> str:
        return str(n)

    # -------------------------------------------------------------- image questions
    def ask_colour(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    def ask_shape(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    def ask_size(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    def ask_count(self, ref: Ref, v: int) -> str:
        """How many shapes fit ref (noun SHAPE = shapes of any kind)."""
        raise NotImplementedError

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        """Is a `relation` of b?"""
        raise NotImplementedError

    def ask_where(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    def ask_exists(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    # -------------------------------------------------------------- clip questions
    def ask_direction(self, ref: Ref, v: int) -> str:
        raise NotImplementedError

    def ask_mover_shape(self, direction: str, v: int) -> str:
        raise NotImplementedError

    def ask_mover_colour(self, direction: str, v: int) -> str:
        raise NotImplementedError

    # -------------------------------------------------------------- statements about an image pair
    def says_count(self, side: str, n: int, ref: Ref) -> str:
        """The `side` image contains exactly n (1–3) shapes fitting ref."""
        raise NotImplementedError

    def says_both(self, ref: Ref) -> str:
        raise NotImplementedError

    def says_more(self, ref: Ref, side: str) -> str:
        """There are more shapes fitting ref in the `side` image than in the other."""
        raise NotImplementedError

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        """In the `side` image some a is `relation` of some b."""
        raise NotImplementedError

    # -------------------------------------------------------------- referring expressions, captions
    def refer(self, ref: Ref) -> str:
        raise NotImplementedError

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        raise NotImplementedError

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        """'two circles and a square': (count, ref) parts joined."""
        raise NotImplementedError

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        """'a red circle left of a blue square'."""
        raise NotImplementedError

    @staticmethod
    def other(side: str) -> str:
        return SIDES_LR[1 - SIDES_LR.index(side)]
