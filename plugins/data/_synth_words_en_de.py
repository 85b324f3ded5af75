"""Task phrases in English and German (see _synth_words for the interface).

    en  is the circle left of the square?       the left image contains exactly two circles
    de  ist der Kreis links vom Quadrat?        das linke Bild enthält genau zwei Kreise

German adjectives decline by determiner, gender and case: weak after der/das/die, mixed after ein,
strong without an article; "von dem" contracts to "vom".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from plugins.data._synth_refs import Ref
from plugins.data._synth_words import Words

__all__ = ["English", "German"]


class English(Words):
    code = "en"
    _plural: ClassVar[dict[str, str]] = {"cross": "crosses"}
    _rel: ClassVar[dict[str, str]] = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
    _rel_long: ClassVar[dict[str, str]] = {
        "left": "to the left of", "right": "to the right of", "above": "located above", "below": "located below",
    }
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "top left", "top": "top", "top_right": "top right", "left": "left", "centre": "centre",
        "right": "right", "bottom_left": "bottom left", "bottom": "bottom", "bottom_right": "bottom right",
    }
    _move: ClassVar[dict[str, str]] = {"right": "to the right", "left": "to the left", "up": "up", "down": "down"}
    _numbers: ClassVar[dict[int, str]] = {1: "one", 2: "two", 3: "three"}

    def _bare(self, ref: Ref, plural: bool = False) -> str:
        noun = self._plural.get(ref.noun, f"{ref.noun}s") if plural else ref.noun
        return " ".join(w for w in (ref.size, ref.colour, noun) if w)

    def _the(self, ref: Ref) -> str:
        return f"the {self._bare(ref)}"

    def _a(self, ref: Ref) -> str:
        bare = self._bare(ref)
        return f"{'an' if bare[0] in 'aeiou' else 'a'} {bare}"

    def colour(self, colour: str) -> str:
        return colour

    def shape(self, shape: str) -> str:
        return shape

    def size(self, size: str) -> str:
        return size

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return direction

    def yes_no(self, value: bool, question_type: str) -> str:
        return "yes" if value else "no"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"what colour is {self._the(ref)}?", f"which colour does {self._the(ref)} have?")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"what shape is {self._the(ref)}?", f"which shape does {self._the(ref)} have?")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"what size is {self._the(ref)}?", f"is {self._the(ref)} small or large?")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"how many {self._bare(ref, True)} are there?", f"how many {self._bare(ref, True)} are in the image?")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        rel = (self._rel, self._rel_long)[v][relation]
        return f"is {self._the(a)} {rel} {self._the(b)}?"

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"where is {self._the(ref)}?", f"where in the image is {self._the(ref)}?")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"is there {self._a(ref)}?", f"is there {self._a(ref)} in the image?")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        return (f"which way does {self._the(ref)} move?", f"in which direction does {self._the(ref)} move?")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        return (f"which shape moves {self._move[direction]}?", f"what shape is moving {self._move[direction]}?")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"what colour is the shape that moves {move}?", f"what colour is the shape moving {move}?")[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"the {side} image contains exactly {self._numbers[n]} {self._bare(ref, n > 1)}"

    def says_both(self, ref: Ref) -> str:
        return f"both images contain {self._a(ref)}"

    def says_more(self, ref: Ref, side: str) -> str:
        return f"there are more {self._bare(ref, True)} in the {side} image than in the {self.other(side)} image"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        return f"in the {side} image {self._a(a)} is {self._rel[relation]} {self._a(b)}"

    def refer(self, ref: Ref) -> str:
        return self._the(ref)

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._the(ref)} {self._rel[relation]} {self._the(landmark)}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        return " and ".join(self._a(r) if n == 1 else f"{self._numbers[n]} {self._bare(r, True)}" for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._a(a)} {self._rel[relation]} {self._a(b)}"


class German(Words):
    code = "de"
    _noun: ClassVar[dict[str, tuple[str, str, str]]] = {  # singular, plural, gender
        "circle": ("Kreis", "Kreise", "m"), "square": ("Quadrat", "Quadrate", "n"),
        "triangle": ("Dreieck", "Dreiecke", "n"), "star": ("Stern", "Sterne", "m"),
        "cross": ("Kreuz", "Kreuze", "n"), "object": ("Objekt", "Objekte", "n"), "shape": ("Form", "Formen", "f"),
    }
    _adj: ClassVar[dict[str, str]] = {
        "small": "klein", "large": "groß", "red": "rot", "green": "grün", "blue": "blau",
        "yellow": "gelb", "purple": "violett", "orange": "orangefarben",
    }
    # (determiner, case, gender) → (article, adjective ending); plural without article: strong "-e"
    _decl: ClassVar[dict[tuple[str, str, str], tuple[str, str]]] = {
        **{("def", "nom", g): (a, "e") for g, a in (("m", "der"), ("n", "das"), ("f", "die"))},
        **{("def", "dat", g): (a, "en") for g, a in (("m", "dem"), ("n", "dem"), ("f", "der"))},
        ("ein", "nom", "m"): ("ein", "er"), ("ein", "nom", "n"): ("ein", "es"), ("ein", "nom", "f"): ("eine", "e"),
        ("ein", "acc", "m"): ("einen", "en"), ("ein", "acc", "n"): ("ein", "es"), ("ein", "acc", "f"): ("eine", "e"),
        ("ein", "dat", "m"): ("einem", "en"), ("ein", "dat", "n"): ("einem", "en"), ("ein", "dat", "f"): ("einer", "en"),
    }
    _rel: ClassVar[dict[str, str]] = {"left": "links von", "right": "rechts von", "above": "über", "below": "unter"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "oben links", "top": "oben", "top_right": "oben rechts", "left": "links", "centre": "in der Mitte",
        "right": "rechts", "bottom_left": "unten links", "bottom": "unten", "bottom_right": "unten rechts",
    }
    _move: ClassVar[dict[str, str]] = {"right": "nach rechts", "left": "nach links", "up": "nach oben", "down": "nach unten"}
    _side: ClassVar[dict[str, str]] = {"left": "link", "right": "recht"}
    _numbers: ClassVar[dict[int, str]] = {2: "zwei", 3: "drei"}

    def _np(self, ref: Ref, det: str, case: str) -> str:
        """Singular noun phrase with determiner 'def' (der) or 'ein', in case nom / acc / dat."""
        noun, _, gender = self._noun[ref.noun]
        article, ending = self._decl[(det, case, gender)]
        adjs = [f"{self._adj[a]}{ending}" for a in (ref.size, ref.colour) if a]
        return " ".join([article, *adjs, noun])

    def _plural(self, ref: Ref) -> str:
        adjs = [f"{self._adj[a]}e" for a in (ref.size, ref.colour) if a]
        return " ".join([*adjs, self._noun[ref.noun][1]])

    def _related(self, relation: str, np_dat: str) -> str:
        return f"{self._rel[relation]} {np_dat}".replace("von dem ", "vom ")

    def _some(self, n: int, ref: Ref, case: str) -> str:
        return self._np(ref, "ein", case) if n == 1 else f"{self._numbers[n]} {self._plural(ref)}"

    def colour(self, colour: str) -> str:
        return self._adj[colour]

    def shape(self, shape: str) -> str:
        return self._noun[shape][0]

    def size(self, size: str) -> str:
        return self._adj[size]

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return self._move[direction]

    def yes_no(self, value: bool, question_type: str) -> str:
        return "ja" if value else "nein"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"welche Farbe hat {self._np(ref, 'def', 'nom')}?", f"was für eine Farbe hat {self._np(ref, 'def', 'nom')}?")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"welche Form hat {self._np(ref, 'def', 'nom')}?", f"was für eine Form hat {self._np(ref, 'def', 'nom')}?")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"wie groß ist {self._np(ref, 'def', 'nom')}?", f"ist {self._np(ref, 'def', 'nom')} klein oder groß?")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"wie viele {self._plural(ref)} gibt es?", f"wie viele {self._plural(ref)} sind im Bild?")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        where = self._related(relation, self._np(b, "def", "dat"))
        return (f"ist {self._np(a, 'def', 'nom')} {where}?", f"befindet sich {self._np(a, 'def', 'nom')} {where}?")[v]

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"wo ist {self._np(ref, 'def', 'nom')}?", f"wo im Bild befindet sich {self._np(ref, 'def', 'nom')}?")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"gibt es {self._np(ref, 'ein', 'acc')}?", f"ist {self._np(ref, 'ein', 'nom')} im Bild?")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        np = self._np(ref, "def", "nom")
        return (f"in welche Richtung bewegt sich {np}?", f"wohin bewegt sich {np}?")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"welche Form bewegt sich {move}?", f"was für eine Form bewegt sich {move}?")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"welche Farbe hat die Form, die sich {move} bewegt?", f"welche Farbe hat die Form, die {move} wandert?")[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"das {self._side[side]}e Bild enthält genau {self._some(n, ref, 'acc')}"

    def says_both(self, ref: Ref) -> str:
        return f"beide Bilder enthalten {self._np(ref, 'ein', 'acc')}"

    def says_more(self, ref: Ref, side: str) -> str:
        other = self._side[self.other(side)]
        return f"im {self._side[side]}en Bild gibt es mehr {self._plural(ref)} als im {other}en Bild"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        where = self._related(relation, self._np(b, "ein", "dat"))
        return f"im {self._side[side]}en Bild ist {self._np(a, 'ein', 'nom')} {where}"

    def refer(self, ref: Ref) -> str:
        return self._np(ref, "def", "nom")

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._np(ref, 'def', 'nom')} {self._related(relation, self._np(landmark, 'def', 'dat'))}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        return " und ".join(self._some(n, r, "nom") for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._np(a, 'ein', 'nom')} {self._related(relation, self._np(b, 'ein', 'dat'))}"
