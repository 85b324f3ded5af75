"""Task phrases in Chinese and Japanese (see _synth_words for the interface); no spaces, full-width '？'.

    zh  圆形在正方形的左边吗？        左图中恰好有两个圆形
    ja  丸は四角の左にありますか？    左の画像には丸がちょうど二つある

Chinese counts take the classifier 个 (两 for two); yes/no answers echo the verb (是/不是 for
relations, 有/没有 for existence). Japanese modifiers precede the noun and a relation names the
reference object first ('星の左の丸'); colours answer as nouns (赤), sizes as adjectives (小さい).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from plugins.data._synth_refs import Ref
from plugins.data._synth_words import Words

__all__ = ["Chinese", "Japanese"]


class Chinese(Words):
    code = "zh"
    _shape: ClassVar[dict[str, str]] = {
        "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字形",
        "object": "图形", "shape": "图形",
    }
    _colour: ClassVar[dict[str, str]] = {
        "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
    }
    _size: ClassVar[dict[str, str]] = {"small": "小", "large": "大"}
    _rel: ClassVar[dict[str, str]] = {"left": "左边", "right": "右边", "above": "上面", "below": "下面"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "左上角", "top": "上方", "top_right": "右上角", "left": "左侧", "centre": "中间",
        "right": "右侧", "bottom_left": "左下角", "bottom": "下方", "bottom_right": "右下角",
    }
    _move: ClassVar[dict[str, str]] = {"right": "向右", "left": "向左", "up": "向上", "down": "向下"}
    _side: ClassVar[dict[str, str]] = {"left": "左", "right": "右"}
    _numbers: ClassVar[dict[int, str]] = {1: "一", 2: "两", 3: "三"}

    def _np(self, ref: Ref) -> str:
        size = f"{self._size[ref.size]}的" if ref.size else ""
        colour = self._colour[ref.colour] if ref.colour else ""
        return f"{size}{colour}{self._shape[ref.noun]}"

    def colour(self, colour: str) -> str:
        return self._colour[colour]

    def shape(self, shape: str) -> str:
        return self._shape[shape]

    def size(self, size: str) -> str:
        return self._size[size]

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return self._move[direction]

    def yes_no(self, value: bool, question_type: str) -> str:
        if question_type == "exists":
            return "有" if value else "没有"
        return "是" if value else "不是"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}是什么颜色？", f"{self._np(ref)}的颜色是什么？")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}是什么形状？", f"{self._np(ref)}的形状是什么？")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}是大还是小？", f"{self._np(ref)}有多大？")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"有几个{self._np(ref)}？", f"图中有多少个{self._np(ref)}？")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        rel = self._rel[relation]
        return (f"{self._np(a)}在{self._np(b)}的{rel}吗？", f"{self._np(a)}是不是在{self._np(b)}的{rel}？")[v]

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}在哪里？", f"{self._np(ref)}在图中的什么位置？")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"有{self._np(ref)}吗？", f"图中有没有{self._np(ref)}？")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}向哪个方向移动？", f"{self._np(ref)}往哪边移动？")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"哪个图形{move}移动？", f"{move}移动的是什么形状？")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"{move}移动的图形是什么颜色？", f"{move}移动的图形的颜色是什么？")[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"{self._side[side]}图中恰好有{self._numbers[n]}个{self._np(ref)}"

    def says_both(self, ref: Ref) -> str:
        return f"两张图中都有{self._np(ref)}"

    def says_more(self, ref: Ref, side: str) -> str:
        return f"{self._side[side]}图中的{self._np(ref)}比{self._side[self.other(side)]}图中的多"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._side[side]}图中有一个{self._np(a)}在一个{self._np(b)}的{self._rel[relation]}"

    def refer(self, ref: Ref) -> str:
        return self._np(ref)

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._np(landmark)}{self._rel[relation]}的{self._np(ref)}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        return "和".join(f"{self._numbers[n]}个{self._np(r)}" for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"一个{self._np(a)}在一个{self._np(b)}的{self._rel[relation]}"


class Japanese(Words):
    code = "ja"
    _shape: ClassVar[dict[str, str]] = {
        "circle": "丸", "square": "四角", "triangle": "三角", "star": "星", "cross": "十字",
        "object": "図形", "shape": "図形",
    }
    # attributive forms (i-adjectives end in い, colour nouns take の) and the bare colour nouns answers use
    _colour_attr: ClassVar[dict[str, str]] = {
        "red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の", "orange": "オレンジの",
    }
    _colour: ClassVar[dict[str, str]] = {
        "red": "赤", "green": "緑", "blue": "青", "yellow": "黄色", "purple": "紫", "orange": "オレンジ",
    }
    _size: ClassVar[dict[str, str]] = {"small": "小さい", "large": "大きい"}
    _rel: ClassVar[dict[str, str]] = {"left": "左", "right": "右", "above": "上", "below": "下"}
    _loc: ClassVar[dict[str, str]] = {
        "top_left": "左上", "top": "上部", "top_right": "右上", "left": "左側", "centre": "中央",
        "right": "右側", "bottom_left": "左下", "bottom": "下部", "bottom_right": "右下",
    }
    _move: ClassVar[dict[str, str]] = {"right": "右", "left": "左", "up": "上", "down": "下"}
    _side: ClassVar[dict[str, str]] = {"left": "左", "right": "右"}
    _numbers: ClassVar[dict[int, str]] = {1: "一つ", 2: "二つ", 3: "三つ"}

    def _np(self, ref: Ref) -> str:
        size = self._size[ref.size] if ref.size else ""
        colour = self._colour_attr[ref.colour] if ref.colour else ""
        return f"{size}{colour}{self._shape[ref.noun]}"

    def colour(self, colour: str) -> str:
        return self._colour[colour]

    def shape(self, shape: str) -> str:
        return self._shape[shape]

    def size(self, size: str) -> str:
        return self._size[size]

    def location(self, location: str) -> str:
        return self._loc[location]

    def direction(self, direction: str) -> str:
        return self._move[direction]

    def yes_no(self, value: bool, question_type: str) -> str:
        return "はい" if value else "いいえ"

    def ask_colour(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}は何色ですか？", f"{self._np(ref)}の色は何ですか？")[v]

    def ask_shape(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}はどんな形ですか？", f"{self._np(ref)}の形は何ですか？")[v]

    def ask_size(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}は大きいですか、小さいですか？", f"{self._np(ref)}の大きさはどうですか？")[v]

    def ask_count(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}はいくつありますか？", f"画像に{self._np(ref)}はいくつありますか？")[v]

    def ask_relation(self, a: Ref, relation: str, b: Ref, v: int) -> str:
        rel = self._rel[relation]
        return (f"{self._np(a)}は{self._np(b)}の{rel}にありますか？", f"{self._np(a)}は{self._np(b)}の{rel}側にありますか？")[v]

    def ask_where(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}はどこにありますか？", f"{self._np(ref)}は画像のどこにありますか？")[v]

    def ask_exists(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}はありますか？", f"画像に{self._np(ref)}がありますか？")[v]

    def ask_direction(self, ref: Ref, v: int) -> str:
        return (f"{self._np(ref)}はどちらへ動きますか？", f"{self._np(ref)}はどの方向に動きますか？")[v]

    def ask_mover_shape(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"{move}へ動くのはどの形ですか？", f"どの図形が{move}へ動きますか？")[v]

    def ask_mover_colour(self, direction: str, v: int) -> str:
        move = self._move[direction]
        return (f"{move}へ動く図形は何色ですか？", f"{move}へ動く図形の色は何ですか？")[v]

    def says_count(self, side: str, n: int, ref: Ref) -> str:
        return f"{self._side[side]}の画像には{self._np(ref)}がちょうど{self._numbers[n]}ある"

    def says_both(self, ref: Ref) -> str:
        return f"両方の画像に{self._np(ref)}がある"

    def says_more(self, ref: Ref, side: str) -> str:
        return f"{self._side[side]}の画像には{self._side[self.other(side)]}の画像より多くの{self._np(ref)}がある"

    def says_relation(self, side: str, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._side[side]}の画像では{self._np(b)}の{self._rel[relation]}に{self._np(a)}がある"

    def refer(self, ref: Ref) -> str:
        return self._np(ref)

    def refer_related(self, ref: Ref, relation: str, landmark: Ref) -> str:
        return f"{self._np(landmark)}の{self._rel[relation]}の{self._np(ref)}"

    def compose_and(self, parts: Sequence[tuple[int, Ref]]) -> str:
        if all(n == 1 for n, _ in parts):
            return "と".join(self._np(r) for _, r in parts)
        return "と".join(f"{self._numbers[n]}の{self._np(r)}" for n, r in parts)

    def compose_related(self, a: Ref, relation: str, b: Ref) -> str:
        return f"{self._np(b)}の{self._rel[relation]}に{self._np(a)}"
