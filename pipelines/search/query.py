"""Query understanding: spelling correction, synonyms, and a category intent.

- **Spelling**: a query word of four or more letters that no catalog field contains is
  replaced by the catalog word within ``max_edits`` Damerau-Levenshtein edits (a swap of
  two neighbours, a dropped, doubled or changed letter) that the most items contain;
  fewer edits win first. Candidates come from a one-deletion index of the vocabulary
  (SymSpell's idea), so a lookup touches a few keys, not the whole vocabulary.
- **Synonyms**: a TOML file of ``word = ["other", "words"]``; a query word also matches
  its synonyms (weighted by ``synonym_weight``), in both directions.
- **Category intent**: from the query log, which categories' items get clicked for a
  query's terms: ``P(category | query)`` is the mean over the query's known terms of
  ``(clicks on the category + prior) / (the term's clicks + prior)``.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.errors import ConfigError
from pipelines.search.text import STOP_WORDS, Analyzer, words

MIN_CORRECT_LEN = 4


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (adjacent swaps count 1), or ``limit + 1`` once
    it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Speller:
    """Corrects query words against the catalog's words and their item frequencies."""

    def __init__(self, frequency: dict[str, int], max_edits: int = 2) -> None:
        self.frequency = frequency
        self.max_edits = max_edits
        index: dict[str, list[str]] = defaultdict(list)
        for w in frequency:
            if len(w) >= MIN_CORRECT_LEN - 1:
                index[w].append(w)
                for d in _deletes(w):
                    index[d].append(w)
        self._index = dict(index)

    @classmethod
    def of_texts(cls, texts: Iterable[str], max_edits: int = 2) -> Speller:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update({w for w in words(t) if w not in STOP_WORDS and not w.isdigit()})
        return cls(dict(counts), max_edits)

    def correct_word(self, word: str) -> str:
        if word in self.frequency or len(word) < MIN_CORRECT_LEN or word.isdigit():
            return word
        seen: set[str] = set()
        for key in (word, *_deletes(word)):
            seen.update(self._index.get(key, ()))
        best: tuple[int, int, str] | None = None
        for cand in seen:
            d = edit_distance(word, cand, self.max_edits)
            if d <= self.max_edits:
                rank = (d, -self.frequency[cand], cand)
                if best is None or rank < best:
                    best = rank
        return word if best is None else best[2]

    def correct(self, text: str) -> tuple[str, bool]:
        """The query with each unknown word corrected, and whether anything changed."""
        ws = words(text)
        fixed = [self.correct_word(w) for w in ws]
        return " ".join(fixed), fixed != ws

    def to_json(self) -> dict[str, object]:
        return {"max_edits": self.max_edits, "frequency": self.frequency}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Speller:
        freq = d["frequency"]
        assert isinstance(freq, dict)
        return cls({str(k): int(v) for k, v in freq.items()}, int(str(d["max_edits"])))


def load_synonyms(path: str | Path) -> dict[str, tuple[str, ...]]:
    """``word = ["other", ...]`` pairs of a TOML file, made symmetric; words lower-cased."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"synonyms file {p} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"synonyms file {p} is not TOML: {e}") from None
    groups: dict[str, set[str]] = defaultdict(set)
    for key, value in raw.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"synonyms file {p}: {key!r} must be a list of words")
        a = key.strip().lower()
        for v in value:
            b = v.strip().lower()
            if b and b != a:
                groups[a].add(b)
                groups[b].add(a)
    return {k: tuple(sorted(v)) for k, v in sorted(groups.items())}


@dataclass
class CategoryIntent:
    """Clicked categories per query term (category codes into ``categories``)."""

    categories: list[str]
    counts: dict[str, dict[int, float]]  # term -> category code -> clicks
    prior: float = 1.0

    @classmethod
    def learn(
        cls,
        texts: Iterable[str],
        clicked_categories: Iterable[Iterable[int]],
        categories: list[str],
        analyzer: Analyzer,
    ) -> CategoryIntent:
        intent = cls(categories, {})
        intent.add(texts, clicked_categories, analyzer)
        return intent

    def add(
        self, texts: Iterable[str], clicked_categories: Iterable[Iterable[int]], analyzer: Analyzer
    ) -> None:
        """Fold more logged queries into the counts."""
        for text, cats in zip(texts, clicked_categories, strict=True):
            clicked = Counter(cats)
            if not clicked:
                continue
            for t in set(analyzer.terms(text)):
                row = self.counts.setdefault(t, {})
                for c, n in clicked.items():
                    row[int(c)] = row.get(int(c), 0.0) + float(n)

    def copy(self) -> CategoryIntent:
        return CategoryIntent(
            self.categories, {t: dict(cs) for t, cs in self.counts.items()}, self.prior
        )

    def distribution(self, terms: list[str]) -> np.ndarray:
        """P(category | query) over ``categories`` (zeros when no term was ever clicked)."""
        out = np.zeros(len(self.categories), dtype=np.float64)
        known = [t for t in dict.fromkeys(terms) if t in self.counts]
        for t in known:
            cs = self.counts[t]
            total = sum(cs.values()) + self.prior
            for c, n in cs.items():
                out[c] += n / total
        if known:
            out /= len(known)
        return out

    @property
    def empty(self) -> bool:
        return not self.counts

    def to_json(self) -> str:
        return json.dumps(
            {
                "categories": self.categories,
                "prior": self.prior,
                "counts": {t: {str(c): n for c, n in cs.items()} for t, cs in self.counts.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CategoryIntent:
        d = json.loads(text)
        return cls(
            list(d["categories"]),
            {t: {int(c): float(n) for c, n in cs.items()} for t, cs in d["counts"].items()},
            float(d["prior"]),
        )
