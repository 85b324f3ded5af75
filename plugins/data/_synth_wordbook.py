"""Every language's task phrases, by language code (the same codes as the caption grammars)."""

from __future__ import annotations

from plugins.data._synth_words import Words
from plugins.data._synth_words_en_de import English, German
from plugins.data._synth_words_fr_cs import Czech, French
from plugins.data._synth_words_zh_ja import Chinese, Japanese

__all__ = ["WORDS"]

WORDS: dict[str, Words] = {w.code: w for w in (English(), German(), French(), Czech(), Chinese(), Japanese())}
