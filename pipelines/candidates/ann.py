"""Top-N retrieval through a FAISS index for the sources that score by a dot product (ALS,
BPR, content) on large catalogs.

Scoring every item for every request with numpy costs O(items) per shopper plus a
partial sort of the whole catalog per row: 50,000 items make a 100,000-request batch take
minutes. Above ``[candidates] ann_min_items`` items such a source keeps a FAISS index over
its item vectors (only the items that exist at the history's time) and asks it for each
shopper's best items; the union then scores just the candidates (a dot product each).

``ann_method = "flat"`` (default) is FAISS's exact inner-product search (blocked matrix
products with a heap per query): the same items as exact scoring, about 15x faster on 2
cores. ``"hnsw"`` is an HNSW graph (``ann_neighbours`` links, ``ann_ef_search``), truly
approximate. Measured on the ALS factors of a generated shop with 50,000 items
(docs/benchmarks.md) the graph found 77-79 % of the exact top 300 and an IVF index 45-71 %,
short of the 95 % a re-ranker's candidates need, while the flat search is exact and fast
enough; so flat is the default and HNSW an option for catalogs far larger than that.
A graph is built on one thread (the same graph every time); either index is saved with
the source.

``"ivf"`` is an inverted file (k-means cells, ``lists`` of them; a search visits the
``probe`` cells nearest the query): search uses it for unit-length text and image
embeddings of catalogs of a million items, where one exact pass over every vector costs
more than a query's whole budget (docs/search.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ItemIndex:
    """A FAISS index over item vectors for maximum-inner-product search."""

    index: object  # faiss.IndexFlatIP, IndexHNSWFlat or IndexIVFFlat (inner product)
    items: np.ndarray  # item code of each vector in the index
    ef_search: int  # hnsw: the search's candidate list; ivf: the cells a search visits

    @classmethod
    def build(
        cls, vectors: np.ndarray, exists: np.ndarray, *, method: str = "flat",
        neighbours: int = 32, ef_construction: int = 100, ef_search: int = 300,
        lists: int = 0, seed: int = 0,
    ) -> ItemIndex:  # fmt: skip
        """``lists`` (ivf): k-means cells, 0 = ``4 * sqrt(items)``; ``ef_search`` is the
        number of cells a search visits for ivf."""
        import faiss

        items = np.flatnonzero(exists).astype(np.int64)
        v = np.ascontiguousarray(vectors[items], dtype=np.float32)
        if method == "flat":
            flat = faiss.IndexFlatIP(v.shape[1])
            flat.add(v)
            return cls(flat, items, ef_search)
        if method == "ivf":
            return cls(_inverted_file(v, lists, seed), items, ef_search)
        graph = faiss.IndexHNSWFlat(v.shape[1], neighbours, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one thread: the same graph on every build
        try:
            graph.add(v)
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(graph, items, ef_search)

    @property
    def exact(self) -> bool:
        return not hasattr(self.index, "hnsw") and not hasattr(self.index, "nlist")

    def search(self, queries: np.ndarray, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """The ``n`` highest-dot-product item codes per query (approximately, for a
        graph or an inverted file), best first; -1 pads. ``allowed`` (ivf only; per item
        code, bool) keeps the search to those items."""
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32)
        n = min(n, len(self.items))
        if n <= 0 or not len(q):
            return np.full((len(q), max(n, 0)), -1, dtype=np.int64)
        if hasattr(self.index, "nlist"):
            params = faiss.SearchParametersIVF()
            params.nprobe = self.ef_search
            if allowed is not None:
                # FAISS reads the bitmap while searching: keep it referenced until then
                bits = np.packbits(allowed[self.items], bitorder="little")
                params.sel = faiss.IDSelectorBitmap(len(self.items), faiss.swig_ptr(bits))
            _, found = self.index.search(q, n, params=params)  # type: ignore[attr-defined]
        elif allowed is not None:
            raise ValueError("only an inverted-file index searches within allowed items")
        elif self.exact:
            _, found = self.index.search(q, n)  # type: ignore[attr-defined]
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, n))  # type: ignore[attr-defined]
            _, found = self.index.search(q, n, params=params)  # type: ignore[attr-defined]
        return np.where(found >= 0, self.items[np.maximum(found, 0)], -1)

    def to_bytes(self) -> np.ndarray:
        import faiss

        return np.asarray(faiss.serialize_index(self.index))  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        """The index in FAISS's own file format (no pickle)."""
        import faiss

        faiss.write_index(self.index, str(path))  # type: ignore[call-overload]

    @classmethod
    def load(cls, path: Path, items: np.ndarray, ef_search: int) -> ItemIndex:
        import faiss

        return cls(faiss.read_index(str(path)), items, ef_search)

    @classmethod
    def from_bytes(cls, data: np.ndarray, items: np.ndarray, ef_search: int) -> ItemIndex:
        import faiss

        return cls(faiss.deserialize_index(np.asarray(data, dtype=np.uint8)), items, ef_search)


def _inverted_file(v: np.ndarray, lists: int, seed: int) -> object:
    """An IVF-flat inner-product index over the rows of ``v``: k-means (seeded) on a
    sample of 40 rows per cell, then every row filed under its nearest cell."""
    import faiss

    n, dim = v.shape
    cells = lists or max(1, round(4 * np.sqrt(n)))
    cells = max(1, min(cells, n))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # a small catalog: fewer points than FAISS likes
    sample = v
    if n > 40 * cells:
        rows = np.sort(np.random.default_rng(seed).choice(n, 40 * cells, replace=False))
        sample = v[rows]
    index.train(sample)
    index.add(v)
    return index
