"""Task phrases in French and Czech (see _synth_words for the interface).

    fr  le cercle est-il à gauche du carré ?     l'image de gauche contient exactement deux cercles
    cs  je kruh vlevo od čtverce?                na levém obrázku jsou právě dva kruhy

French: size before the noun, colour after, both agree in gender and number; le/la elide to l' and
de + le contracts to du. Czech: no articles; hard adjectives agree in gender, number and case (nom,
gen, ins, nominative and genitive plural); counts of 2–4 take the nominative plural and "jsou".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from plugins.data._synth_refs import Ref
from plugins.data._synth_words import Words

__all__ = ["Czech", "French"]

_VOWELS = "aeiouéèêh"


class French(Words):
    code = "fr"
    _noun: ClassVar[dict[str, tuple[str, str, str]]] = {  # singular, plural, gender
        "circle": ("cercle", "cercles", "m"), "square": ("carré", "carrés", "m"),
        "triangle": ("triangle", "triangles", "m"), "star": ("étoile", "étoiles", "f"),
        "cross": ("croix", "croix", "f"), "object": ("objet", "objets", "m"), "shape": ("forme", "formes", "f"),
    }
    _adj: ClassVar[dict[str, tuple[str, str]]] = {  # masculine, feminine (plural adds -s but for orange)
        "small": ("petit", "petite"), "large": ("grand", "grande"), "red": ("rouge", "rouge"),
        "green": ("vert", "verte"), "blue": ("bleu", "bleue"), "yellow": ("jaune", "jaune"),
        "purple": ("violet", "violette"), "orange": ("orange", "orange"),
    }
    _rel: ClassVar[dict[str, str]] = {"left": "à gauche", "right": "à droite", "above": "au-dessus", "below": "en dessous"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "en haut à gauche", "top": "en haut", "top_right": "en haut à droite", "left": "à gauche",
        "centre": "au centre", "right": "à droite", "bottom_left": "en bas à gauche", "bottom": "en bas",
        "bottom_right": "en bas à droite",
    }
    _move: ClassVar[dict[str, str]] = {
        "right": "vers la droite", "left": "vers la gauche", "up": "vers le haut", "down": "vers le bas",
    }
    _side: ClassVar[dict[str, str]] = {"left": "gauche", "right": "droite"}
    _numbers: ClassVar[dict[int, str]] = {2: "deux", 3: "trois"}

    def _feminine(self, ref: Ref) -> bool:
        return self._noun[ref.noun][2] == "f"

    def _adjective(self, key: str, ref: Ref, plural: bool) -> str:
        word = self._adj[key][self._feminine(ref)]
        return f"{word}s" if plural and key != "orange" else word

    def _bare(self, ref: Ref, plural: bool = False) -> str:
        words = [self._adjective(ref.size, ref, plural)] if ref.size else []
        words.append(self._noun[ref.noun][1 if plural else 0])
        if ref.colour:
            words.append(self._adjective(ref.colour, ref, plural))
        return " ".join(words)

    def _the(self, ref: Ref) -> str:
        bare = self._bare(ref)
        return f"l'{bare}" if bare[0] in _VOWELS else f"{'la' if self._feminine(ref) else 'le'} {bare}"

    def _of_the(self, ref: Ref) -> str:
        the = self._the(ref)
        return f"du {the[3:]}" if the.startswith("le ") else f"de {the}"

    def _a(self, ref: Ref) -> str:
        return f"{'une' if self._feminine(ref) else 'un'} {self._bare(ref)}"

    def _of_plural(self, ref: Ref) -> str:
        bare = self._bare(ref, True)
        return f"d'{bare}" if bare[0] in _VOWELS else f"de {bare}"

    def _some(self, n: int, ref: Ref) -> str:
        return self._a(ref) if n == 1 else f"{self._numbers[n]} {self._bare(ref, True)}"

    def _is(self, ref: Ref) -> str:
        return "est-elle" if self._feminine(ref) else "est-il"

    def colour(self, colour: str) -> str:
        return self._adj[colour][0]

    def shape(self, shape: str) -> str:
        return self._noun[shape][0]

    def size(self, size: str) -> str:
        return self._adj[size][0]

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return self._move[direction]

    def yes_no(self, value: bool, question_type: str) -> str:
        return "oui" if value else "non"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"de quelle couleur est {self._the(ref)} ?", f"quelle est la couleur {self._of_the(ref)} ?")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"quelle est la forme {self._of_the(ref)} ?", f"quelle forme a {self._the(ref)} ?")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"quelle est la taille {self._of_the(ref)} ?", f"quelle taille a {self._the(ref)} ?")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"combien y a-t-il {self._of_plural(ref)} ?", f"combien {self._of_plural(ref)} y a-t-il dans l'image ?")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        where = f"{self._rel[relation]} {self._of_the(b)}"
        return (f"{self._the(a)} {self._is(a)} {where} ?", f"est-ce que {self._the(a)} est {where} ?")[v]

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"où est {self._the(ref)} ?", f"où se trouve {self._the(ref)} ?")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"y a-t-il {self._a(ref)} ?", f"est-ce qu'il y a {self._a(ref)} dans l'image ?")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        return (f"dans quelle direction se déplace {self._the(ref)} ?", f"vers où se déplace {self._the(ref)} ?")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"quelle forme se déplace {move} ?", f"quelle est la forme qui se déplace {move} ?")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (
            f"de quelle couleur est la forme qui se déplace {move} ?",
            f"quelle est la couleur de la forme qui va {move} ?",
        )[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"l'image de {self._side[side]} contient exactement {self._some(n, ref)}"

    def says_both(self, ref: Ref) -> str:
        return f"les deux images contiennent {self._a(ref)}"

    def says_more(self, ref: Ref, side: str) -> str:
        other = self._side[self.other(side)]
        return f"il y a plus {self._of_plural(ref)} dans l'image de {self._side[side]} que dans l'image de {other}"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        return f"dans l'image de {self._side[side]}, {self._a(a)} est {self._rel[relation]} d'{self._a(b)}"

    def refer(self, ref: Ref) -> str:
        return self._the(ref)

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._the(ref)} {self._rel[relation]} {self._of_the(landmark)}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        return " et ".join(self._some(n, r) for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._a(a)} {self._rel[relation]} d'{self._a(b)}"


class Czech(Words):
    code = "cs"
    # gender, nominative, genitive, instrumental, nominative plural, genitive plural
    _noun: ClassVar[dict[str, tuple[str, ...]]] = {
        "circle": ("m", "kruh", "kruhu", "kruhem", "kruhy", "kruhů"),
        "square": ("m", "čtverec", "čtverce", "čtvercem", "čtverce", "čtverců"),
        "triangle": ("m", "trojúhelník", "trojúhelníku", "trojúhelníkem", "trojúhelníky", "trojúhelníků"),
        "star": ("f", "hvězda", "hvězdy", "hvězdou", "hvězdy", "hvězd"),
        "cross": ("m", "kříž", "kříže", "křížem", "kříže", "křížů"),
        "object": ("m", "předmět", "předmětu", "předmětem", "předměty", "předmětů"),
        "shape": ("m", "tvar", "tvaru", "tvarem", "tvary", "tvarů"),
    }
    _cases: ClassVar[tuple[str, ...]] = ("nom", "gen", "ins", "nom_pl", "gen_pl")
    _stem: ClassVar[dict[str, str]] = {
        "small": "mal", "large": "velk", "red": "červen", "green": "zelen", "blue": "modr",
        "yellow": "žlut", "purple": "fialov", "orange": "oranžov",
    }
    _ending: ClassVar[dict[str, tuple[str, str]]] = {  # case → (masculine inanimate, feminine)
        "nom": ("ý", "á"), "gen": ("ého", "é"), "ins": ("ým", "ou"), "nom_pl": ("é", "é"), "gen_pl": ("ých", "ých"),
    }
    _rel: ClassVar[dict[str, tuple[str, str]]] = {
        "left": ("vlevo od", "gen"), "right": ("vpravo od", "gen"), "above": ("nad", "ins"), "below": ("pod", "ins"),
    }
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "vlevo nahoře", "top": "nahoře", "top_right": "vpravo nahoře", "left": "vlevo",
        "centre": "uprostřed", "right": "vpravo", "bottom_left": "vlevo dole", "bottom": "dole",
        "bottom_right": "vpravo dole",
    }
    _move: ClassVar[dict[str, str]] = {"right": "doprava", "left": "doleva", "up": "nahoru", "down": "dolů"}
    _side: ClassVar[dict[str, str]] = {"left": "levém", "right": "pravém"}
    _numbers: ClassVar[dict[tuple[int, bool], str]] = {
        (1, False): "jeden", (2, False): "dva", (3, False): "tři", (1, True): "jedna", (2, True): "dvě", (3, True): "tři",
    }

    def _feminine(self, ref: Ref) -> bool:
        return self._noun[ref.noun][0] == "f"

    def _np(self, ref: Ref, case: str = "nom") -> str:
        ending = self._ending[case][self._feminine(ref)]
        adjs = [f"{self._stem[a]}{ending}" for a in (ref.size, ref.colour) if a]
        return " ".join([*adjs, self._noun[ref.noun][1 + self._cases.index(case)]])

    def _related(self, relation: str, ref: Ref) -> str:
        word, case = self._rel[relation]
        return f"{word} {self._np(ref, case)}"

    def _counted(self, n: int, ref: Ref) -> str:
        return f"{self._numbers[(n, self._feminine(ref))]} {self._np(ref, 'nom' if n == 1 else 'nom_pl')}"

    def _agree(self, stem: str, ref: Ref) -> str:
        return f"{stem}{'á' if self._feminine(ref) else 'ý'}"

    def colour(self, colour: str) -> str:
        return f"{self._stem[colour]}ý"

    def shape(self, shape: str) -> str:
        return self._noun[shape][1]

    def size(self, size: str) -> str:
        return f"{self._stem[size]}ý"

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return self._move[direction]

    def yes_no(self, value: bool, question_type: str) -> str:
        return "ano" if value else "ne"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"jakou barvu má {self._np(ref)}?", f"jaké barvy je {self._np(ref)}?")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"jaký tvar má {self._np(ref)}?", f"jakého tvaru je {self._np(ref)}?")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"jak {self._agree('velk', ref)} je {self._np(ref)}?", f"jakou velikost má {self._np(ref)}?")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"kolik je tam {self._np(ref, 'gen_pl')}?", f"kolik {self._np(ref, 'gen_pl')} je na obrázku?")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        return (f"je {self._np(a)} {self._related(relation, b)}?", f"nachází se {self._np(a)} {self._related(relation, b)}?")[v]

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"kde je {self._np(ref)}?", f"kde se nachází {self._np(ref)}?")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"je na obrázku {self._np(ref)}?", f"je tam {self._agree('nějak', ref)} {self._np(ref)}?")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        return (f"kterým směrem se pohybuje {self._np(ref)}?", f"kam se pohybuje {self._np(ref)}?")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"který tvar se pohybuje {move}?", f"jaký tvar se pohybuje {move}?")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"jakou barvu má tvar, který se pohybuje {move}?", f"jaké barvy je tvar, který se pohybuje {move}?")[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"na {self._side[side]} obrázku {'je' if n == 1 else 'jsou'} právě {self._counted(n, ref)}"

    def says_both(self, ref: Ref) -> str:
        return f"na obou obrázcích je {self._np(ref)}"

    def says_more(self, ref: Ref, side: str) -> str:
        other = self._side[self.other(side)]
        return f"na {self._side[side]} obrázku je více {self._np(ref, 'gen_pl')} než na {other} obrázku"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        return f"na {self._side[side]} obrázku je {self._np(a)} {self._related(relation, b)}"

    def refer(self, ref: Ref) -> str:
        return self._np(ref)

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._np(ref)} {self._related(relation, landmark)}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        return " a ".join(self._np(r) if n == 1 else self._counted(n, r) for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._np(a)} {self._related(relation, b)}"
