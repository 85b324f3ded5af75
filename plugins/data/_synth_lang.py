"""Small grammars for the synthetic world's captions in en, de, fr, cs, zh and ja.

Everything is built from English keys: an object is (size, colour, shape), a relation is one of
RELATIONS ("left" = the first object is left of the second), a location one of LOCATIONS (3 × 3 grid
of the image), a direction one of DIRECTIONS. Each language is a `Grammar` that knows its own
vocabulary, agreement and word order:

    en  a small red circle left of a large blue square
    de  ein kleiner roter Kreis links von einem großen blauen Quadrat   (gender, case: nom/dat)
    fr  un petit cercle rouge à gauche d'un grand carré bleu          (gender, adjective position)
    cs  malý červený kruh vlevo od velkého modrého čtverce              (gender, case: nom/gen/ins)
    zh  一个小的红色圆形在一个大的蓝色正方形的左边
    ja  大きい青い四角の左に小さい赤い丸                                (reference object first)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "GRAMMARS",
    "LANGUAGES",
    "LOCATIONS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Grammar",
    "Thing",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
LOCATIONS: tuple[str, ...] = (
    "top_left", "top", "top_right",
    "left", "centre", "right",
    "bottom_left", "bottom", "bottom_right",
)  # row-major over a 3 × 3 grid
DIRECTIONS: tuple[str, ...] = ("right", "left", "up", "down")


@dataclass(frozen=True)
class Thing:
    """What a caption says about one object: English keys for size, colour and shape."""

    size: str
    colour: str
    shape: str


class Grammar:
    """One language: object texts, captions, region phrases and motion captions from English keys."""

    code: str = ""

    def object_text(self, t: Thing) -> str:
        """Attributes then label, no article: 'small red circle'."""
        raise NotImplementedError

    def located(self, t: Thing, location: str) -> str:
        """A whole-image caption for one object: 'a small red circle at the top left'."""
        raise NotImplementedError

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        """'a small red circle left of a large blue square' (a is `relation` of b)."""
        raise NotImplementedError

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        """Three objects: one relation plus the third object's location."""
        raise NotImplementedError

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        """Region phrase over two objects, sizes left out: 'red circle left of blue square'."""
        raise NotImplementedError

    def region_located(self, a: Thing, location: str) -> str:
        """Region phrase over one object: 'red circle at the top left'."""
        raise NotImplementedError

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        """Video caption: 'a small red circle moves to the right and a large blue square moves up'."""
        raise NotImplementedError

    def caption(self, things: Sequence[Thing], relation: str | None, locations: Sequence[str]) -> str:
        """1 object: located; 2: related; 3: related + the third located (locations per object)."""
        if len(things) == 1:
            return self.located(things[0], locations[0])
        if relation is None:
            raise ValueError("a caption of 2 or 3 objects needs the relation of the first to the second")
        if len(things) == 2:
            return self.related(things[0], relation, things[1])
        if len(things) == 3:
            return self.related_and_located(things[0], relation, things[1], things[2], locations[2])
        raise ValueError(f"captions describe 1 to 3 objects, got {len(things)}")


# ------------------------------------------------------------------------------------------ English
class _English(Grammar):
    code = "en"
    _rel: ClassVar[dict[str, str]] = {"left": "left of", "right": "right of", "above": "above", "below": "below"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "at the top left", "top": "at the top", "top_right": "at the top right",
        "left": "on the left", "centre": "in the centre", "right": "on the right",
        "bottom_left": "at the bottom left", "bottom": "at the bottom", "bottom_right": "at the bottom right",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "moves to the right", "left": "moves to the left", "up": "moves up", "down": "moves down"}

    def _np(self, t: Thing) -> str:
        return f"a {t.size} {t.colour} {t.shape}"  # "small"/"large" both take "a"

    def object_text(self, t: Thing) -> str:
        return f"{t.size} {t.colour} {t.shape}"

    def located(self, t: Thing, location: str) -> str:
        return f"{self._np(t)} {self._loc[location]}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._np(a)} {self._rel[relation]} {self._np(b)}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)} and {self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{a.colour} {a.shape} {self._rel[relation]} {b.colour} {b.shape}"

    def region_located(self, a: Thing, location: str) -> str:
        return f"{a.colour} {a.shape} {self._loc[location]}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        return " and ".join(f"{self._np(t)} {self._dir[d]}" for t, d in movers)


# ------------------------------------------------------------------------------------------ German
class _German(Grammar):
    """Adjectives decline by gender and case: mixed after 'ein', strong without an article."""

    code = "de"
    _noun: ClassVar[dict[str, tuple[str, str]]] = {  # noun, gender
        "circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
        "star": ("Stern", "m"), "cross": ("Kreuz", "n"),
    }
    _adj: ClassVar[dict[str, str]] = {
        "small": "klein", "large": "groß", "red": "rot", "green": "grün", "blue": "blau",
        "yellow": "gelb", "purple": "violett", "orange": "orangefarben",
    }
    # (case, gender) -> (indefinite article, adjective ending after it, strong ending without article)
    _decl: ClassVar[dict[tuple[str, str], tuple[str, str, str]]] = {
        ("nom", "m"): ("ein", "er", "er"), ("nom", "n"): ("ein", "es", "es"), ("nom", "f"): ("eine", "e", "e"),
        ("dat", "m"): ("einem", "en", "em"), ("dat", "n"): ("einem", "en", "em"), ("dat", "f"): ("einer", "en", "er"),
    }
    _rel: ClassVar[dict[str, str]] = {"left": "links von", "right": "rechts von", "above": "über", "below": "unter"}  # all + dative
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "oben links", "top": "oben", "top_right": "oben rechts",
        "left": "links", "centre": "in der Mitte", "right": "rechts",
        "bottom_left": "unten links", "bottom": "unten", "bottom_right": "unten rechts",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "nach rechts", "left": "nach links", "up": "nach oben", "down": "nach unten"}

    def _np(self, t: Thing, case: str) -> str:
        noun, gender = self._noun[t.shape]
        article, ending, _ = self._decl[(case, gender)]
        return f"{article} {self._adj[t.size]}{ending} {self._adj[t.colour]}{ending} {noun}"

    def _bare(self, t: Thing, case: str, with_size: bool) -> str:
        noun, gender = self._noun[t.shape]
        ending = self._decl[(case, gender)][2]
        size = f"{self._adj[t.size]}{ending} " if with_size else ""
        return f"{size}{self._adj[t.colour]}{ending} {noun}"

    def object_text(self, t: Thing) -> str:
        return self._bare(t, "nom", with_size=True)

    def located(self, t: Thing, location: str) -> str:
        return f"{self._np(t, 'nom')} {self._loc[location]}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._np(a, 'nom')} {self._rel[relation]} {self._np(b, 'dat')}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)} und {self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._bare(a, 'nom', False)} {self._rel[relation]} {self._bare(b, 'dat', False)}"

    def region_located(self, a: Thing, location: str) -> str:
        return f"{self._bare(a, 'nom', False)} {self._loc[location]}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        return " und ".join(f"{self._np(t, 'nom')} bewegt sich {self._dir[d]}" for t, d in movers)


# ------------------------------------------------------------------------------------------ French
class _French(Grammar):
    """Size before the noun, colour after it; both agree in gender."""

    code = "fr"
    _noun: ClassVar[dict[str, tuple[str, str]]] = {
        "circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
        "star": ("étoile", "f"), "cross": ("croix", "f"),
    }
    _adj: ClassVar[dict[str, tuple[str, str]]] = {  # masculine, feminine
        "small": ("petit", "petite"), "large": ("grand", "grande"),
        "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
        "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orange", "orange"),
    }
    # every relation ends in "de", elided before "un"/"une"
    _rel: ClassVar[dict[str, str]] = {"left": "à gauche d'", "right": "à droite d'", "above": "au-dessus d'", "below": "en dessous d'"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "en haut à gauche", "top": "en haut", "top_right": "en haut à droite",
        "left": "à gauche", "centre": "au centre", "right": "à droite",
        "bottom_left": "en bas à gauche", "bottom": "en bas", "bottom_right": "en bas à droite",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "vers la droite", "left": "vers la gauche", "up": "vers le haut", "down": "vers le bas"}

    def _parts(self, t: Thing) -> tuple[str, str, str, str]:
        noun, gender = self._noun[t.shape]
        g = 0 if gender == "m" else 1
        return ("un" if g == 0 else "une"), self._adj[t.size][g], noun, self._adj[t.colour][g]

    def _np(self, t: Thing, with_size: bool = True) -> str:
        article, size, noun, colour = self._parts(t)
        return f"{article} {size} {noun} {colour}" if with_size else f"{article} {noun} {colour}"

    def object_text(self, t: Thing) -> str:
        _, size, noun, colour = self._parts(t)
        return f"{size} {noun} {colour}"

    def located(self, t: Thing, location: str) -> str:
        return f"{self._np(t)} {self._loc[location]}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._np(a)} {self._rel[relation]}{self._np(b)}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)} et {self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        _, _, noun, colour = self._parts(a)
        return f"{noun} {colour} {self._rel[relation]}{self._np(b, with_size=False)}"

    def region_located(self, a: Thing, location: str) -> str:
        _, _, noun, colour = self._parts(a)
        return f"{noun} {colour} {self._loc[location]}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        return " et ".join(f"{self._np(t)} se déplace {self._dir[d]}" for t, d in movers)


# ------------------------------------------------------------------------------------------ Czech
class _Czech(Grammar):
    """No articles; hard adjectives (-ý) agree with the noun in gender and case (nom, gen, ins)."""

    code = "cs"
    _noun: ClassVar[dict[str, tuple[str, str, str, str]]] = {  # gender, nominative, genitive, instrumental
        "circle": ("m", "kruh", "kruhu", "kruhem"),
        "square": ("m", "čtverec", "čtverce", "čtvercem"),
        "triangle": ("m", "trojúhelník", "trojúhelníku", "trojúhelníkem"),
        "star": ("f", "hvězda", "hvězdy", "hvězdou"),
        "cross": ("m", "kříž", "kříže", "křížem"),
    }
    _stem: ClassVar[dict[str, str]] = {
        "small": "mal", "large": "velk", "red": "červen", "green": "zelen", "blue": "modr",
        "yellow": "žlut", "purple": "fialov", "orange": "oranžov",
    }
    _ending: ClassVar[dict[tuple[str, str], str]] = {
        ("nom", "m"): "ý", ("gen", "m"): "ého", ("ins", "m"): "ým",
        ("nom", "f"): "á", ("gen", "f"): "é", ("ins", "f"): "ou",
    }
    _case_index: ClassVar[dict[str, int]] = {"nom": 1, "gen": 2, "ins": 3}
    _rel: ClassVar[dict[str, tuple[str, str]]] = {"left": ("vlevo od", "gen"), "right": ("vpravo od", "gen"), "above": ("nad", "ins"), "below": ("pod", "ins")}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "vlevo nahoře", "top": "nahoře", "top_right": "vpravo nahoře",
        "left": "vlevo", "centre": "uprostřed", "right": "vpravo",
        "bottom_left": "vlevo dole", "bottom": "dole", "bottom_right": "vpravo dole",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "doprava", "left": "doleva", "up": "nahoru", "down": "dolů"}

    def _np(self, t: Thing, case: str, with_size: bool = True) -> str:
        entry = self._noun[t.shape]
        ending = self._ending[(case, entry[0])]
        size = f"{self._stem[t.size]}{ending} " if with_size else ""
        return f"{size}{self._stem[t.colour]}{ending} {entry[self._case_index[case]]}"

    def object_text(self, t: Thing) -> str:
        return self._np(t, "nom")

    def located(self, t: Thing, location: str) -> str:
        return f"{self._np(t, 'nom')} {self._loc[location]}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        word, case = self._rel[relation]
        return f"{self._np(a, 'nom')} {word} {self._np(b, case)}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)} a {self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        word, case = self._rel[relation]
        return f"{self._np(a, 'nom', False)} {word} {self._np(b, case, False)}"

    def region_located(self, a: Thing, location: str) -> str:
        return f"{self._np(a, 'nom', False)} {self._loc[location]}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        # the reflexive clitic "se" takes the second position, right after the subject
        return " a ".join(f"{self._np(t, 'nom')} se pohybuje {self._dir[d]}" for t, d in movers)


# ------------------------------------------------------------------------------------------ Chinese
class _Chinese(Grammar):
    """'NP 在 NP 的 左边'; every shape takes the classifier 个; no spaces."""

    code = "zh"
    _shape: ClassVar[dict[str, str]] = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字形"}
    _colour: ClassVar[dict[str, str]] = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}
    _size: ClassVar[dict[str, str]] = {"small": "小的", "large": "大的"}
    _rel: ClassVar[dict[str, str]] = {"left": "左边", "right": "右边", "above": "上面", "below": "下面"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "左上角", "top": "上方", "top_right": "右上角",
        "left": "左侧", "centre": "中间", "right": "右侧",
        "bottom_left": "左下角", "bottom": "下方", "bottom_right": "右下角",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "向右移动", "left": "向左移动", "up": "向上移动", "down": "向下移动"}

    def _bare(self, t: Thing) -> str:
        return f"{self._colour[t.colour]}{self._shape[t.shape]}"

    def object_text(self, t: Thing) -> str:
        return f"{self._size[t.size]}{self._bare(t)}"

    def _np(self, t: Thing) -> str:
        return f"一个{self.object_text(t)}"

    def located(self, t: Thing, location: str) -> str:
        return f"{self._np(t)}在{self._loc[location]}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._np(a)}在{self._np(b)}的{self._rel[relation]}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)}，{self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._bare(a)}在{self._bare(b)}的{self._rel[relation]}"

    def region_located(self, a: Thing, location: str) -> str:
        return f"{self._bare(a)}在{self._loc[location]}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        return "，".join(f"{self._np(t)}{self._dir[d]}" for t, d in movers)


# ------------------------------------------------------------------------------------------ Japanese
class _Japanese(Grammar):
    """Modifiers precede the noun; the reference object comes first: 'B の左に A'; no spaces."""

    code = "ja"
    _shape: ClassVar[dict[str, str]] = {"circle": "丸", "square": "四角", "triangle": "三角", "star": "星", "cross": "十字"}
    # i-adjectives end in い; colour nouns take の
    _colour: ClassVar[dict[str, str]] = {"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の", "orange": "オレンジの"}
    _size: ClassVar[dict[str, str]] = {"small": "小さい", "large": "大きい"}
    _rel: ClassVar[dict[str, str]] = {"left": "左", "right": "右", "above": "上", "below": "下"}
    # absolute places use words that cannot be read as relative to the previous object
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "左上", "top": "上部", "top_right": "右上",
        "left": "左側", "centre": "中央", "right": "右側",
        "bottom_left": "左下", "bottom": "下部", "bottom_right": "右下",
    }
    _dir: ClassVar[dict[str, str]] = {"right": "右", "left": "左", "up": "上", "down": "下"}

    def _bare(self, t: Thing) -> str:
        return f"{self._colour[t.colour]}{self._shape[t.shape]}"

    def object_text(self, t: Thing) -> str:
        return f"{self._size[t.size]}{self._bare(t)}"

    def located(self, t: Thing, location: str) -> str:
        return f"{self._loc[location]}に{self.object_text(t)}"

    def related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self.object_text(b)}の{self._rel[relation]}に{self.object_text(a)}"

    def related_and_located(self, a: Thing, relation: str, b: Thing, c: Thing, location: str) -> str:
        return f"{self.related(a, relation, b)}、{self.located(c, location)}"

    def region_related(self, a: Thing, relation: str, b: Thing) -> str:
        return f"{self._bare(b)}の{self._rel[relation]}の{self._bare(a)}"

    def region_located(self, a: Thing, location: str) -> str:
        return f"{self._loc[location]}の{self._bare(a)}"

    def moving(self, movers: Sequence[tuple[Thing, str]]) -> str:
        # all clauses but the last use the continuative form 動き
        clauses = [f"{self.object_text(t)}が{self._dir[d]}へ動" for t, d in movers]
        return "き、".join(clauses) + "く"


GRAMMARS: dict[str, Grammar] = {g.code: g for g in (_English(), _German(), _French(), _Czech(), _Chinese(), _Japanese())}
LANGUAGES: tuple[str, ...] = tuple(GRAMMARS)
