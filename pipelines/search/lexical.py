"""BM25 per item field (bm25s), combined with per-field weights.

Each field (title, brand, category path, description) is its own BM25 index, so a term
in a short title weighs as a title term and not as one word of a long description;
the lexical score is ``sum_f weight_f * bm25_f(query, item)``. The indexes are saved
with bm25s's own format (numpy arrays, loaded memory-mapped).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd

from pipelines.search.text import Analyzer

FIELDS = ("title", "brand", "category", "description")


def field_texts(items: pd.DataFrame) -> dict[str, list[str]]:
    """Each field's text per item, in row order: the category path's levels as words."""
    out: dict[str, list[str]] = {}
    for f in FIELDS:
        col = items[f] if f in items.columns else pd.Series("", index=items.index)
        text = col.fillna("").astype(str)
        if f == "category":
            text = text.str.replace("/", " ", regex=False)
        out[f] = text.tolist()
    return out


class LexicalIndex:
    """One BM25 index per field over the same items (row order = the catalog's)."""

    def __init__(self, indexes: dict[str, bm25s.BM25], n_items: int) -> None:
        self.indexes = indexes
        self.n_items = n_items

    @classmethod
    def build(
        cls,
        texts: Mapping[str, list[str]],
        analyzer: Analyzer,
        *,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> LexicalIndex:
        n = len(next(iter(texts.values())))
        indexes = {}
        for f, docs in texts.items():
            terms = analyzer.batch(docs)
            if not any(terms):  # a field no item fills (no brands): nothing to match
                continue
            idx = bm25s.BM25(k1=k1, b=b)
            idx.index(terms, show_progress=False)
            indexes[f] = idx
        return cls(indexes, n)

    def field_scores(self, terms: list[str]) -> dict[str, np.ndarray]:
        """BM25 of ``terms`` against every item, per field (zeros where nothing matches)."""
        out = {}
        for f, idx in self.indexes.items():
            known = [t for t in terms if t in idx.vocab_dict]
            if known:
                out[f] = np.asarray(idx.get_scores(known), dtype=np.float32)
            else:
                out[f] = np.zeros(self.n_items, dtype=np.float32)
        return out

    def matches(self, terms: list[str]) -> dict[str, np.ndarray]:
        """Per field, how many of ``terms`` (distinct) each item contains (int16)."""
        out = {}
        for f, idx in self.indexes.items():
            count = np.zeros(self.n_items, dtype=np.int16)
            for t in set(terms):
                tid = idx.vocab_dict.get(t)
                if tid is None:
                    continue
                start, stop = idx.scores["indptr"][tid], idx.scores["indptr"][tid + 1]
                count[np.asarray(idx.scores["indices"][start:stop])] += 1
            out[f] = count
        return out

    def vocabulary(self) -> set[str]:
        vocab: set[str] = set()
        for idx in self.indexes.values():
            vocab.update(t for t in idx.vocab_dict if t != "")
        return vocab

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for f, idx in self.indexes.items():
            idx.save(str(folder / f), show_progress=False)
        meta = {"fields": sorted(self.indexes), "n_items": self.n_items}
        (folder / "fields.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = True) -> LexicalIndex:
        meta = json.loads((folder / "fields.json").read_text())
        indexes = {
            f: bm25s.BM25.load(str(folder / f), mmap=mmap, show_progress=False, verbosity=0)
            for f in meta["fields"]
        }
        return cls(indexes, int(meta["n_items"]))


def combine(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_f weights[f] * scores[f]`` (fields without a weight count 0)."""
    n = len(next(iter(scores.values()))) if scores else 0
    total = np.zeros(n, dtype=np.float32)
    for f, s in scores.items():
        w = float(weights.get(f, 0.0))
        if w:
            total += np.float32(w) * s
    return total
