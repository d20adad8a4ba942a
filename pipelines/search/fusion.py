"""Fusing the lexical and semantic scores of one query's candidates.

- **convex** (default): ``alpha * norm(lexical) + (1 - alpha) * norm(cosine)`` with
  min-max normalisation over the candidates (Bruch, Gai and Ingber 2023, "An Analysis
  of Fusion Functions for Hybrid Retrieval": a tuned convex combination beats RRF and
  needs few labelled queries to tune);
- **rrf**: ``1 / (rrf_k + rank_lexical) + 1 / (rrf_k + rank_semantic)`` (Cormack et al.
  2009), ranks 1-based among the candidates.
"""

from __future__ import annotations

import numpy as np


def minmax(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (max - min)``; all zeros when the values are all equal."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, the highest value first; ties share the order of their positions."""
    order = np.argsort(-np.asarray(x, dtype=np.float64), kind="stable")
    out = np.empty(len(x), dtype=np.int64)
    out[order] = np.arange(1, len(x) + 1)
    return out


def best(scores: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest ``scores``, best first, ties to the lower key: the
    same as ``np.lexsort((keys, -scores))[:n]`` without sorting every score."""
    scores = np.asarray(scores)
    if len(scores) > 4 * n > 0:
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]  # the n-th highest
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)
        ties = ties[np.argsort(keys[ties], kind="stable")[: n - len(above)]]
        pick = np.concatenate([above, ties])
        return pick[np.lexsort((keys[pick], -scores[pick]))]
    return np.lexsort((keys, -scores))[:n]


def convex(lexical: np.ndarray, semantic: np.ndarray, alpha: float) -> np.ndarray:
    return alpha * minmax(lexical) + (1.0 - alpha) * minmax(semantic)


def rrf(lexical: np.ndarray, semantic: np.ndarray, k: int) -> np.ndarray:
    return 1.0 / (k + ranks(lexical)) + 1.0 / (k + ranks(semantic))


def fuse(
    lexical: np.ndarray, semantic: np.ndarray, method: str, alpha: float, k: int
) -> np.ndarray:
    if method == "rrf":
        return rrf(lexical, semantic, k)
    return convex(lexical, semantic, alpha)
