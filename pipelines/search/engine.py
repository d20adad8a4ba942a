"""The search index and its never-empty retrieval.

:class:`SearchIndex` holds, for one catalog: the per-field BM25 indexes, the text
embedding and the items' vectors, the speller, synonyms, the category intent learned
from the query log, and each item's popularity and conversion. :meth:`SearchIndex.candidates`
answers a query with the fused top-N and every score the re-ranker reads.

The fallback chain, tried in order until some item matches (within the filters):

1. the query as typed — or, when a word is unknown to the catalog, corrected
   (``fallback = "corrected"``);
2. relaxed terms: each term also matches catalog words sharing its first
   ``relaxed_prefix`` letters (``"relaxed"``);
3. the query's category intent: items of the categories its terms get clicks in, by
   intent × popularity (``"category"``);
4. the most popular items (``"popular"``).

An item matches when its lexical score is positive or its cosine to the query is at
least ``min_cosine``. A non-empty catalog therefore never answers an empty list unless
the filters exclude every item.

A catalog of ``ann_min_items`` items or more is searched through a pool: the
``ann_pool`` best lexical matches, and the ``ann_pool`` nearest item embeddings (text, and
image where it counts) from FAISS inverted files (:mod:`pipelines.candidates.ann`). Only
the pool is scored and fused (min-max over the pool's matches), so a query never makes a
pass over a million vectors; with a pool that holds every item the answer is the exact
one. The category and popular fallbacks still read the whole catalog.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.candidates.ann import ItemIndex
from pipelines.features.item_content import item_documents
from pipelines.search import fusion
from pipelines.search.config import SearchConfig
from pipelines.search.lexical import FIELDS, LexicalIndex, combine, field_texts
from pipelines.search.query import CategoryIntent, Speller, load_synonyms
from pipelines.search.semantic import fit_embedder, load_embedder
from pipelines.search.text import STOP_WORDS, Analyzer, words

log = logging.getLogger(__name__)
FORMAT = 1
MAX_QUERY_CHARS = 500
TITLE_WORDS_KEPT = 200_000  # items whose title words a served index keeps (~1 KB each)
ITEM_COLUMNS = ("item_id", "title", "brand", "category", "price", "image_url")


@dataclass
class Candidates:
    """One query's fused candidates (best first) and the scores behind them."""

    query: str
    corrected: str | None  # the query after spelling correction, when a word changed
    fallback: str | None  # None, "corrected", "relaxed", "category" or "popular"
    terms: list[str]
    items: np.ndarray  # item rows, best first
    fused: np.ndarray
    lexical: np.ndarray
    cosine: np.ndarray
    fields: dict[str, np.ndarray]  # BM25 per field
    matches: dict[str, np.ndarray]  # distinct query terms the field holds
    intent: np.ndarray  # P(item's category | query)
    lexical_rank: np.ndarray
    semantic_rank: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Semantic:
    """One query's semantic score: its text cosine, mixed with the image cosine where the
    catalog has images and ``image_weight > 0``. ``full`` holds it for every item (exact
    mode); otherwise :meth:`at` computes it for the rows asked (pool mode)."""

    index: SearchIndex
    text: np.ndarray | None  # the query's unit text vector (None: an empty text)
    image: np.ndarray | None  # the query's unit image vector (None: no image side)
    full: np.ndarray | None = None

    def at(self, rows: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full[rows]
        idx = self.index
        if self.text is None:
            cosine = np.zeros(len(rows), np.float32)
        else:
            cosine = np.asarray(idx.vectors[rows] @ self.text, dtype=np.float32)
        if self.image is None or idx.images is None or idx.has_image is None:
            return cosine
        w = idx.cfg.image_weight
        image = np.asarray(idx.images[rows] @ self.image, dtype=np.float32)
        return np.where(idx.has_image[rows], (1 - w) * cosine + w * image, cosine).astype(
            np.float32
        )


class SearchIndex:
    def __init__(
        self,
        items: pd.DataFrame,
        cfg: SearchConfig,
        lexical: LexicalIndex,
        embedder: Any,
        vectors: np.ndarray,
        speller: Speller,
        synonyms: dict[str, tuple[str, ...]],
        intent: CategoryIntent,
        popularity: np.ndarray,
        conversion: np.ndarray,
        images: np.ndarray | None = None,
        ann: dict[str, ItemIndex] | None = None,
    ) -> None:
        self.items = items.reset_index(drop=True)
        self.item_ids = self.items["item_id"].to_numpy()
        self.cfg = cfg
        self.analyzer = Analyzer(stem=cfg.stem, stopwords=cfg.stopwords)
        self.lexical = lexical
        self.embedder = embedder
        self.vectors = vectors
        self.speller = speller
        self.synonyms = synonyms
        self.intent = intent
        self.popularity = popularity
        self.conversion = conversion
        # unit image embeddings (a zero row for an item without an image), or None
        self.images = images
        self.has_image = None if images is None else np.any(np.asarray(images) != 0, axis=1)
        # FAISS inverted files over "text" (and "images") of a large catalog: pool mode
        self.ann = ann or {}
        cats = self.items["category"].fillna("").astype(str)
        self.category_code = pd.Categorical(cats, categories=intent.categories).codes
        self.category_lower = cats.str.lower().to_numpy()
        self.price = self.items["price"].to_numpy(dtype=np.float64)
        self.title_terms = np.array(
            [len(set(t)) for t in self.analyzer.batch(self.items["title"].fillna("").astype(str))],
            dtype=np.float32,
        )
        self._titles = self.items["title"].to_numpy(dtype=object)
        self._title_words: dict[int, tuple[frozenset[str], frozenset[tuple[str, str]]]] = {}
        self._prefix_vocab: dict[str, dict[str, list[str]]] | None = None

    def title_words(self, row: int) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """The words of item ``row``'s title (unstemmed, stop words dropped) and its word
        pairs in order. Kept once asked, for up to :data:`TITLE_WORDS_KEPT` items: a served
        index meets the same items query after query."""
        got = self._title_words.get(row)
        if got is None:
            tw = [w for w in words(str(self._titles[row] or "")) if w not in STOP_WORDS]
            got = (frozenset(tw), frozenset(itertools.pairwise(tw)))
            if len(self._title_words) < TITLE_WORDS_KEPT:
                self._title_words[row] = got
        return got

    # -- building -------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        items: pd.DataFrame,
        cfg: SearchConfig,
        *,
        queries: pd.DataFrame | None = None,
        popularity: np.ndarray | None = None,
        conversion: np.ndarray | None = None,
    ) -> SearchIndex:
        """Index ``items`` (item_id, title, brand, category, description, price).

        ``queries`` (text, clicked_item_ids) teaches the category intent; ``popularity``
        and ``conversion`` (per item row) order the popular fallback and feed the ranker.
        """
        if items.empty:
            raise ValueError("search index: the catalog has no items")
        items = items.reset_index(drop=True)
        analyzer = Analyzer(stem=cfg.stem, stopwords=cfg.stopwords)
        texts = field_texts(items)
        lexical = LexicalIndex.build(texts, analyzer, k1=cfg.k1, b=cfg.b)
        docs = item_documents(items)
        embedder = fit_embedder(cfg.embedding, docs, cfg.embedding_dim, cfg.seed)
        vectors = embedder.transform(docs)
        speller = Speller.of_texts((t for f in FIELDS for t in texts[f]), cfg.max_edits)
        synonyms = load_synonyms(cfg.synonyms_file) if cfg.synonyms_file else {}
        categories = sorted(set(items["category"].fillna("").astype(str)))
        intent = CategoryIntent(categories, {})
        if queries is not None and len(queries):
            code = pd.Series(
                pd.Categorical(
                    items["category"].fillna("").astype(str), categories=categories
                ).codes,
                index=items["item_id"].to_numpy(),
            )
            clicked = [
                [int(code[i]) for i in ids if i in code.index] if ids is not None else []
                for ids in queries["clicked_item_ids"]
            ]
            intent = CategoryIntent.learn(queries["text"], clicked, categories, analyzer)
        n = len(items)
        pop = np.zeros(n) if popularity is None else np.asarray(popularity, dtype=np.float64)
        conv = np.zeros(n) if conversion is None else np.asarray(conversion, dtype=np.float64)
        log.info(
            "search index: %s items, %s fields, %s words, %s intent terms",
            f"{n:,}", len(lexical.indexes), f"{len(speller.frequency):,}", f"{len(intent.counts):,}",
        )  # fmt: skip
        images = image_matrix(items)
        ann = {}
        if cfg.ann_min_items and n >= cfg.ann_min_items:
            every = np.ones(n, dtype=bool)
            for name, v in (("text", vectors), ("images", images)):
                if v is not None:
                    ann[name] = ItemIndex.build(
                        v, every, method="ivf", lists=cfg.ann_lists, ef_search=cfg.ann_probe,
                        seed=cfg.seed,
                    )  # fmt: skip
            log.info("search index: inverted files over %s for the pool mode", ", ".join(ann))
        return cls(
            items, cfg, lexical, embedder, vectors, speller, synonyms, intent, pop, conv, images,
            ann,
        )  # fmt: skip

    def with_params(
        self, field_weights: dict[str, float], alpha: float, image_weight: float | None = None
    ) -> SearchIndex:
        """The same index with other (tuned) field weights, fusion weight and image weight."""
        other = object.__new__(SearchIndex)
        other.__dict__.update(self.__dict__)
        w = self.cfg.image_weight if image_weight is None else float(image_weight)
        other.cfg = replace(
            self.cfg, field_weights=dict(field_weights), alpha=float(alpha), image_weight=w
        )
        return other

    def with_state(
        self, intent: CategoryIntent, popularity: np.ndarray, conversion: np.ndarray
    ) -> SearchIndex:
        """The same index with the intent and item statistics of another time."""
        other = object.__new__(SearchIndex)
        other.__dict__.update(self.__dict__)
        other.intent, other.popularity, other.conversion = intent, popularity, conversion
        return other

    # -- scoring --------------------------------------------------------------------
    def embed(self, text: str) -> np.ndarray:
        return np.asarray(self.embedder.transform([text])[0], dtype=np.float32)

    def understand(self, query: str) -> tuple[str, str | None, list[str], list[str]]:
        """(text used, corrected text or None, terms, synonym terms) of a query."""
        text = " ".join(words(query[:MAX_QUERY_CHARS]))
        corrected = None
        if self.cfg.spelling:
            fixed, changed = self.speller.correct(text)
            if changed:
                corrected = text = fixed
        terms = self.analyzer.terms(text)
        syn: list[str] = []
        for w in words(text):
            for s in self.synonyms.get(w, ()):
                syn.extend(self.analyzer.terms(s))
        syn = [t for t in dict.fromkeys(syn) if t not in terms]
        return text, corrected, terms, syn

    def raw_scores(self, query: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
        """Per-field BM25 (synonyms folded in) and the semantic score over the whole
        catalog."""
        text, _, terms, syn = self.understand(query)
        fields = self._fields(terms, syn)
        full = self._exact_semantic(text, combine(fields, self.cfg.field_weights)).full
        assert full is not None
        return fields, full, terms

    def raw_parts(self, query: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """Per-field BM25, the text cosine and the image cosine (None without one) over
        the whole catalog: what tuning re-weights without scoring again."""
        text, _, terms, syn = self.understand(query)
        fields = self._fields(terms, syn)
        cosine = self._text_cosine(text)
        image = None
        if self.images is not None:
            q = self._image_query(combine(fields, self.cfg.field_weights), cosine, None)
            image = None if q is None else np.asarray(self.images @ q, dtype=np.float32)
        return fields, cosine, image

    def mix(self, cosine: np.ndarray, image_cos: np.ndarray | None, weight: float) -> np.ndarray:
        """The semantic score from its text and image parts (:meth:`_image_query`)."""
        if image_cos is None or self.has_image is None or weight <= 0:
            return cosine
        mixed = (1 - weight) * cosine + weight * image_cos
        return np.where(self.has_image, mixed, cosine).astype(np.float32)

    def _fields(self, terms: list[str], syn: list[str]) -> dict[str, np.ndarray]:
        fields = self.lexical.field_scores(terms)
        if syn and self.cfg.synonym_weight > 0:
            w = np.float32(self.cfg.synonym_weight)
            for f, s in self.lexical.field_scores(syn).items():
                fields[f] = fields[f] + w * s
        return fields

    def _text_cosine(self, text: str) -> np.ndarray:
        if not text:
            return np.zeros(len(self.items), np.float32)
        return np.asarray(self.vectors @ self.embed(text), dtype=np.float32)

    def _uses_images(self) -> bool:
        return self.images is not None and self.cfg.image_weight > 0

    def _image_query(
        self, lexical: np.ndarray, cosine: np.ndarray, rows: np.ndarray | None
    ) -> np.ndarray | None:
        """The image side's query: a text query has no image, so it stands for the mean
        image of the ``image_feedback`` items that match it best in the first pass
        (lexical score, then text cosine) — pseudo-relevance feedback. ``lexical`` and
        ``cosine`` are over ``rows`` (None: the whole catalog). None without images, or
        when nothing matches. The semantic score is ``(1 - image_weight) * text +
        image_weight * image`` for items with an image, the text cosine for the others
        (:meth:`mix`)."""
        if self.images is None or self.has_image is None:
            return None
        pos = np.flatnonzero((lexical > 0) | (cosine >= self.cfg.min_cosine))
        first = pos if rows is None else rows[pos]
        keep = self.has_image[first]
        pos, first = pos[keep], first[keep]
        if not len(first):
            return None
        key = lexical[pos] + 1e-3 * cosine[pos]
        top = first[np.lexsort((first, -key))[: self.cfg.image_feedback]]
        q = np.asarray(self.images[top], dtype=np.float32).mean(axis=0)
        norm = float(np.linalg.norm(q))
        return None if norm == 0 else q / norm

    def _exact_semantic(self, text: str, lexical: np.ndarray) -> Semantic:
        cosine = self._text_cosine(text)
        if not self._uses_images():
            return Semantic(self, None, None, cosine)
        assert self.images is not None
        q = self._image_query(lexical, cosine, None)
        image = None if q is None else np.asarray(self.images @ q, dtype=np.float32)
        return Semantic(self, None, q, self.mix(cosine, image, self.cfg.image_weight))

    def _semantic(
        self, text: str, lexical: np.ndarray, allowed: np.ndarray | None
    ) -> tuple[Semantic, np.ndarray | None]:
        """The query's semantic scorer, and the pool it is scored on (None: the whole
        catalog, when the index has no inverted files)."""
        if "text" not in self.ann:
            return self._exact_semantic(text, lexical), None
        q = self.embed(text) if text else None

        def pool(within: np.ndarray | None) -> np.ndarray:
            """The lexical top and the nearest text embeddings among ``within``."""
            hits = np.flatnonzero(lexical > 0 if within is None else (lexical > 0) & within)
            hits = hits[fusion.best(lexical[hits], hits, self.cfg.ann_pool)]
            return np.unique(np.concatenate([hits, self._nearest("text", q, within)]))

        rows = pool(allowed)
        q_image = None
        if self._uses_images():
            # the query's look comes from its best matches in the whole catalog, as in the
            # exact mode: filters narrow what is shown, not what the query means
            base = rows if allowed is None else pool(None)
            cosine = np.zeros(len(base), np.float32) if q is None else self.vectors[base] @ q
            q_image = self._image_query(lexical[base], cosine, base)
            rows = np.union1d(rows, self._nearest("images", q_image, allowed))
        return Semantic(self, q, q_image), rows

    def _nearest(self, name: str, q: np.ndarray | None, allowed: np.ndarray | None) -> np.ndarray:
        if q is None or name not in self.ann:
            return np.zeros(0, dtype=np.int64)
        found = self.ann[name].search(q[None, :], self.cfg.ann_pool, allowed)[0]
        return found[found >= 0]

    def _relaxed_terms(self, terms: list[str]) -> list[str]:
        if self._prefix_vocab is None:
            p = self.cfg.relaxed_prefix
            table: dict[str, dict[str, list[str]]] = {}
            for f, idx in self.lexical.indexes.items():
                by: dict[str, list[str]] = {}
                for t in idx.vocab_dict:
                    if len(t) >= p:
                        by.setdefault(t[:p], []).append(t)
                table[f] = by
            self._prefix_vocab = table
        p = self.cfg.relaxed_prefix
        out: list[str] = []
        for t in terms:
            if len(t) < p:
                continue
            for by in self._prefix_vocab.values():
                out.extend(by.get(t[:p], ()))
        return list(dict.fromkeys(out))

    def filter_mask(
        self,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
    ) -> np.ndarray | None:
        mask = None
        if category:
            c = category.strip().lower()
            m = (self.category_lower == c) | np.char.startswith(
                self.category_lower.astype(str), c + "/"
            )
            mask = m
        if price_min is not None:
            m = self.price >= price_min
            mask = m if mask is None else mask & m
        if price_max is not None:
            m = self.price <= price_max
            mask = m if mask is None else mask & m
        return mask

    def candidates(
        self,
        query: str,
        *,
        n: int | None = None,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
    ) -> Candidates:
        cfg = self.cfg
        n = n or cfg.candidates
        allowed = self.filter_mask(category, price_min, price_max)
        text, corrected, terms, syn = self.understand(query)
        fields = self._fields(terms, syn)
        lexical = combine(fields, cfg.field_weights)
        sem, pool = self._semantic(text, lexical, allowed)

        def scope(rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            """Lexical and semantic scores over ``rows`` (None: every item)."""
            if rows is None:
                assert sem.full is not None
                return lexical, sem.full
            return lexical[rows], sem.at(rows)

        lex_s, sem_s = scope(pool)
        fallback = "corrected" if corrected else None
        matched = (lex_s > 0) | (sem_s >= cfg.min_cosine)
        if allowed is not None:
            matched &= allowed if pool is None else allowed[pool]
        if not matched.any() and terms:
            relaxed = self._relaxed_terms(terms)
            if relaxed:
                fields = self.lexical.field_scores(relaxed)
                lexical = combine(fields, cfg.field_weights)
                if pool is not None:
                    hits = np.flatnonzero(
                        lexical > 0 if allowed is None else (lexical > 0) & allowed
                    )
                    pool = hits[fusion.best(lexical[hits], hits, cfg.ann_pool)]
                lex_s, sem_s = scope(pool)
                matched = lex_s > 0
                if allowed is not None:
                    matched &= allowed if pool is None else allowed[pool]
                fallback = "relaxed" if matched.any() else fallback
        intent_cat = self.intent.distribution(terms)
        if matched.any():
            pos = np.flatnonzero(matched)
            rows = pos if pool is None else pool[pos]
            fused = fusion.fuse(lex_s[pos], sem_s[pos], cfg.fusion, cfg.alpha, cfg.rrf_k)
        else:
            intent_all = self._intent_at(intent_cat, None)
            pop = np.log1p(self.popularity)
            base = allowed if allowed is not None else np.ones(len(self.items), dtype=bool)
            cat = base & (intent_all > 0)
            if cat.any():
                rows, fallback = np.flatnonzero(cat), "category"
                fused = intent_all[rows] * (1.0 + pop[rows])
            else:
                rows, fallback = np.flatnonzero(base), "popular"
                fused = pop[rows]
        order = fusion.best(fused, rows, n)
        rows, fused = rows[order], fused[order]
        lex_all = lexical[rows]
        cos_all = sem.full[rows] if sem.full is not None else sem.at(rows)
        return Candidates(
            query=query,
            corrected=corrected,
            fallback=fallback,
            terms=terms,
            items=rows,
            fused=fused.astype(np.float64),
            lexical=lex_all.astype(np.float64),
            cosine=cos_all.astype(np.float64),
            fields={f: s[rows].astype(np.float64) for f, s in fields.items()},
            matches={f: m[rows] for f, m in self.lexical.matches(terms).items()},
            intent=self._intent_at(intent_cat, rows),
            lexical_rank=fusion.ranks(lex_all),
            semantic_rank=fusion.ranks(cos_all),
        )

    def _intent_at(self, by_category: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """P(item's category | query) for ``rows`` (None: every item)."""
        codes = self.category_code if rows is None else self.category_code[rows]
        return np.where(codes >= 0, by_category[np.maximum(codes, 0)], 0.0)

    # -- persistence ----------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.lexical.save(out / "lexical")
        self.embedder.save(out / "embedder")
        np.save(out / "vectors.npy", self.vectors, allow_pickle=False)
        np.save(out / "popularity.npy", self.popularity, allow_pickle=False)
        np.save(out / "conversion.npy", self.conversion, allow_pickle=False)
        if self.images is not None:
            np.save(out / "images.npy", np.asarray(self.images), allow_pickle=False)
        for name, ann in self.ann.items():
            ann.save(out / f"ann_{name}.faiss")
        self.items[[c for c in ITEM_COLUMNS if c in self.items.columns]].to_parquet(
            out / "items.parquet", index=False
        )
        (out / "speller.json").write_text(json.dumps(self.speller.to_json()))
        (out / "synonyms.json").write_text(json.dumps(self.synonyms))
        (out / "intent.json").write_text(self.intent.to_json())
        (out / "index.json").write_text(
            json.dumps({"format": FORMAT, "config": self.cfg.as_dict()}, indent=1)
        )

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = True) -> SearchIndex:
        src = Path(folder)
        meta = json.loads((src / "index.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{src}: search index format {meta.get('format')}, expected {FORMAT}")
        cfg = SearchConfig(**meta["config"])
        syn = {k: tuple(v) for k, v in json.loads((src / "synonyms.json").read_text()).items()}
        items = pd.read_parquet(src / "items.parquet")
        every = np.arange(len(items), dtype=np.int64)
        ann = {
            name: ItemIndex.load(src / f"ann_{name}.faiss", every, cfg.ann_probe)
            for name in ("text", "images")
            if (src / f"ann_{name}.faiss").is_file()
        }
        return cls(
            items,
            cfg,
            LexicalIndex.load(src / "lexical", mmap=mmap),
            load_embedder(src / "embedder"),
            np.load(src / "vectors.npy", mmap_mode="r" if mmap else None, allow_pickle=False),
            Speller.from_json(json.loads((src / "speller.json").read_text())),
            syn,
            CategoryIntent.from_json((src / "intent.json").read_text()),
            np.load(src / "popularity.npy", allow_pickle=False),
            np.load(src / "conversion.npy", allow_pickle=False),
            np.load(src / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            if (src / "images.npy").is_file()
            else None,
            ann,
        )


def image_matrix(items: pd.DataFrame) -> np.ndarray | None:
    """The catalog's ``image_embedding`` column as unit rows (float32; a zero row for an
    item without one), or None when no item has one. Embeddings of another length than
    the first are refused naming the row."""
    if "image_embedding" not in items.columns:
        return None
    col = items["image_embedding"].to_numpy()
    dim = next((len(v) for v in col if v is not None and len(v)), 0)
    if not dim:
        return None
    out = np.zeros((len(col), dim), dtype=np.float32)
    for i, v in enumerate(col):
        if v is None or not len(v):
            continue
        if len(v) != dim:
            raise ValueError(
                f"items row {i + 1} (item {items['item_id'].iat[i]}), column image_embedding: "
                f"{len(v)} values, the catalog's embeddings have {dim}"
            )
        out[i] = v
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
