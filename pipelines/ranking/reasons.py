"""Reasons in words for a re-ranked result, from the features that pushed it up.

A model supplies ``reason_for(feature)``: the words for a feature's push on this result,
or None for a feature that explains nothing about the choice (e.g. one that moves every
candidate of a query alike). :func:`explain` picks the features with the largest
positive LightGBM contributions and returns their distinct reasons.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def explain(
    contributions: np.ndarray,
    names: list[str],
    reason_for: Callable[[str], str | None],
    *,
    top: int = 3,
    fallback: str = "popular overall",
) -> list[str]:
    """The ``top`` distinct reasons with the largest positive contributions (one row of
    :func:`pipelines.ranking.lambdamart.contributions`); ``[fallback]`` when none."""
    order = np.argsort(-contributions[: len(names)])
    out: list[str] = []
    for j in order:
        if contributions[j] <= 0 or len(out) >= top:
            break
        text = reason_for(names[j])
        if text and text not in out:
            out.append(text)
    return out or [fallback]
