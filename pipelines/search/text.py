"""Tokens of item text and queries: lower-cased words of two or more letters or digits,
English stop words dropped, Snowball (Porter 2) stems.

Lexical matching, spelling correction and the category intent all read the same tokens,
so a query and the catalog are always cut the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

WORD = re.compile(r"(?u)\b\w\w+\b")
STOP_WORDS = frozenset(STOPWORDS_EN)


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (two or more word characters), stop words kept."""
    return WORD.findall(text.lower())


@dataclass
class Analyzer:
    """Words → index terms: stop words dropped (``stopwords``), stems (``stem``)."""

    stem: bool = True
    stopwords: bool = True
    _stemmer: Stemmer.Stemmer | None = field(default=None, init=False, repr=False)
    _cache: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def terms(self, text: str) -> list[str]:
        return self.of_words(words(text))

    def of_words(self, ws: Iterable[str]) -> list[str]:
        kept = [w for w in ws if not (self.stopwords and w in STOP_WORDS)]
        if not self.stem:
            return kept
        return [self.stem_word(w) for w in kept]

    def stem_word(self, word: str) -> str:
        if not self.stem:
            return word
        hit = self._cache.get(word)
        if hit is None:
            if self._stemmer is None:
                self._stemmer = Stemmer.Stemmer("english")
            hit = self._stemmer.stemWord(word)
            if len(self._cache) < 1_000_000:
                self._cache[word] = hit
        return hit

    def batch(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]

    def as_dict(self) -> dict[str, bool]:
        return {"stem": self.stem, "stopwords": self.stopwords}
