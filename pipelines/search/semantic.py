"""The semantic side of search: queries and items in one text-embedding space.

The default embedding is the item_content feature view's TF-IDF + SVD
(:class:`pipelines.features.item_content.TfidfEmbedder`), fitted on the catalog's
documents (title, description, category path, brand); with the ``embeddings`` extra
installed, ``embedding = "sentence"`` uses the packaged MiniLM model instead. Vectors are
L2-normalised, so the score is a cosine. Where the catalog has image embeddings, the
score is the mean of the text cosine and the image cosine to the query's best-matching
items' images (the founding design's mean of text and image similarity).

A saved TF-IDF embedding is plain arrays (vocabulary, idf, SVD components) and is
applied by :class:`SavedTfidf`: no pickles in a model bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.features.item_content import TfidfEmbedder, sentence_embeddings


class Embedder(Protocol):
    kind: str

    def transform(self, texts: list[str]) -> np.ndarray: ...


class SavedTfidf:
    """A fitted :class:`TfidfEmbedder` as arrays; ``transform`` gives the same vectors."""

    kind = "tfidf"

    def __init__(
        self, vocabulary: dict[str, int], idf: np.ndarray, components: np.ndarray | None, dim: int
    ) -> None:
        self.vocabulary = vocabulary
        self.idf = idf.astype(np.float64)
        self.components = components
        self.dim = dim
        self._analyze = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()

    @classmethod
    def of(cls, model: TfidfEmbedder) -> SavedTfidf:
        v = model.vectorizer
        vocab = {str(k): int(i) for k, i in v.vocabulary_.items()}
        comps = None if model.svd is None else model.svd.components_.astype(np.float64)
        return cls(vocab, np.asarray(v.idf_), comps, model.dim)

    def transform(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:  # a served query: the same arithmetic on dense arrays, no
            return self._one(texts[0])[None, :]  # sparse matrices to build (3x faster)
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            for j, c in self._counts(text).items():
                rows.append(r)
                cols.append(j)
                vals.append((1.0 + np.log(c)) * self.idf[j])
        m = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.idf)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1))).ravel()
        m = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m
        if self.components is None:
            dense = m.toarray()[:, : self.dim]
        else:
            dense = np.asarray(m @ self.components.T)
        if dense.shape[1] < self.dim:
            dense = np.pad(dense, ((0, 0), (0, self.dim - dense.shape[1])))
        n = np.linalg.norm(dense, axis=1, keepdims=True)
        return (dense / np.maximum(n, 1e-12)).astype(np.float32)

    def _counts(self, text: str) -> dict[int, int]:
        """Vocabulary column -> count of the text's known words and word pairs."""
        counts: dict[int, int] = {}
        for gram in self._analyze(text):
            j = self.vocabulary.get(gram)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        return counts

    def _one(self, text: str) -> np.ndarray:
        counts = self._counts(text)
        cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
        c = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        w = (1.0 + np.log(c)) * self.idf[cols]
        w = w * (1.0 / max(float(np.sqrt(np.sum(w * w))), 1e-12))
        if self.components is None:
            dense = np.zeros(max(self.dim, len(self.idf)))
            dense[cols] = w
            dense = dense[: self.dim]
        else:
            dense = self.components[:, cols] @ w
        if len(dense) < self.dim:
            dense = np.pad(dense, (0, self.dim - len(dense)))
        return (dense / max(float(np.linalg.norm(dense)), 1e-12)).astype(np.float32)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        (folder / "vocabulary.json").write_text(json.dumps(terms))
        np.save(folder / "idf.npy", self.idf, allow_pickle=False)
        if self.components is not None:
            np.save(folder / "components.npy", self.components, allow_pickle=False)
        (folder / "embedder.json").write_text(json.dumps({"kind": "tfidf", "dim": self.dim}))

    @classmethod
    def load(cls, folder: Path) -> SavedTfidf:
        meta = json.loads((folder / "embedder.json").read_text())
        terms = json.loads((folder / "vocabulary.json").read_text())
        comp = folder / "components.npy"
        return cls(
            {t: i for i, t in enumerate(terms)},
            np.load(folder / "idf.npy", allow_pickle=False),
            np.load(comp, allow_pickle=False) if comp.exists() else None,
            int(meta["dim"]),
        )


class SentenceEmbedder:
    """The packaged MiniLM sentence model (the ``embeddings`` extra); nothing to save."""

    kind = "sentence"

    def transform(self, texts: list[str]) -> np.ndarray:
        return sentence_embeddings(texts)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "embedder.json").write_text(json.dumps({"kind": "sentence"}))


def fit_embedder(kind: str, docs: list[str], dim: int, seed: int) -> SavedTfidf | SentenceEmbedder:
    if kind == "sentence":
        return SentenceEmbedder()
    return SavedTfidf.of(TfidfEmbedder(dim, seed).fit(docs))


def load_embedder(folder: Path) -> SavedTfidf | SentenceEmbedder:
    kind = json.loads((folder / "embedder.json").read_text())["kind"]
    return SentenceEmbedder() if kind == "sentence" else SavedTfidf.load(folder)
