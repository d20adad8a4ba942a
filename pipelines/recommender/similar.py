"""Items similar to one item: content similarity blended with co-occurrence.

Content similarity is the cosine of the bundle's content vectors, which hold each item's
unit text embedding and, where the catalog has one, its unit image embedding, side by
side and scaled by 1/√2 — so for two items with images the cosine is the founding
design's mean of text similarity and image similarity. Co-occurrence is the basket
relation of the co-occurrence source (sessions that hold both, normalised like a cosine,
0..1). The score is ``(1 - w) * content + w * co-occurrence`` with ``w =
cooccurrence_weight``; an item nobody bought together with the asked one scores by content
alone (its co-occurrence is 0). The asked item and items absent at the bundle's time are
never listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.errors import ShopMLError
from pipelines.recommender.bundle import Recommender

COOCCURRENCE_WEIGHT = 0.5


class UnknownItemError(ShopMLError):
    """An item id the bundle does not know."""


@dataclass(frozen=True)
class SimilarRequest:
    item_id: str
    k: int = 10
    explain: bool = False
    cooccurrence_weight: float = COOCCURRENCE_WEIGHT

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ShopMLError(f"k must be >= 1, not {self.k}")
        if not 0 <= self.cooccurrence_weight <= 1:
            raise ShopMLError("cooccurrence_weight must be in [0, 1]")


def similar_items(rec: Recommender, request: SimilarRequest) -> pd.DataFrame:
    """rank, item_id, score, content, cooccurrence, title, category[, reasons]."""
    ids = rec.ctx.item_ids
    where = np.flatnonzero(ids == request.item_id)
    if not len(where):
        raise UnknownItemError(f"unknown item {request.item_id!r}")
    i = int(where[0])
    n = len(ids)
    content = np.zeros(n, dtype=np.float32)
    vectors = rec.ctx.side.content
    if vectors is not None and np.any(vectors[i]):
        content = np.asarray(vectors @ vectors[i], dtype=np.float32)
    together = np.zeros(n, dtype=np.float32)
    gen = rec.generators.get("cooccur")
    relation = getattr(gen, "relation", None)
    if isinstance(relation, sp.csr_matrix) and relation.shape[0] > i:
        row = relation.getrow(i)
        together[row.indices] = np.clip(row.data, 0.0, 1.0)
    w = request.cooccurrence_weight
    score = (1 - w) * content + w * together
    allowed = rec.ctx.history.item_exists.copy()
    allowed[i] = False
    rows = np.flatnonzero(allowed)
    top = rows[np.lexsort((rows, -score[rows]))[: request.k]]
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "item_id": ids[top].astype(str),
            "score": score[top].astype(np.float64),
            "content": content[top].astype(np.float64),
            "cooccurrence": together[top].astype(np.float64),
            "title": [rec.items.title(int(j)) for j in top],
            "category": rec.items.categories[rec.items.category[top]],
        }
    )
    if request.explain:
        out["reasons"] = [
            _reason(c, t) for c, t in zip(out["content"], out["cooccurrence"], strict=True)
        ]
    return out


def _reason(content: float, together: float) -> str:
    parts = []
    if content > 0:
        parts.append(f"similar in text and look ({content:.2f})")
    if together > 0:
        parts.append(f"often in the same baskets ({together:.2f})")
    return "; ".join(parts) or "listed to fill the list"
