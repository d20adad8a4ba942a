"""Reference distributions from the previous accepted snapshot, for the drift checks.

Both partitions are smoothed (half a count added to every bin, and to the tails), so a
category or price range the baseline never saw is unlikely rather than impossible and
the KL divergence stays finite; a real shift still shows as a large divergence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def category_partition(baseline_counts: pd.Series, current: pd.Index) -> dict[str, Any]:
    """Categorical partition over the baseline's and the current categories."""
    values = sorted(set(baseline_counts.index.astype(str)) | set(current.astype(str)))
    counts = baseline_counts.rename(index=str).reindex(values, fill_value=0).astype(float) + 0.5
    return {"values": values, "weights": (counts / counts.sum()).tolist()}


def price_partition(baseline_prices: np.ndarray, bins: int) -> dict[str, Any]:
    """Numeric partition: baseline price quantiles as bin edges, with tail weights."""
    edges = np.unique(np.quantile(baseline_prices, np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) < 2:  # one price everywhere (e.g. an import without prices): one narrow bin
        edges = np.array([edges[0] * 0.999, edges[0] * 1.001])
    hist = np.histogram(baseline_prices, bins=edges)[0].astype(float) + 0.5
    total = hist.sum() + 1.0  # + the two tails' half counts
    return {
        "bins": edges.tolist(),
        "weights": (hist / total).tolist(),
        "tail_weights": [0.5 / total, 0.5 / total],
    }


def largest_shifts(
    before: pd.Series, after: pd.Series, n: int = 3
) -> list[tuple[str, float, float]]:
    """The categories whose share moved most: (name, share before, share after)."""
    b = before / max(before.sum(), 1)
    a = after / max(after.sum(), 1)
    both = pd.concat([b.rename("before"), a.rename("after")], axis=1).fillna(0.0)
    both["move"] = (both["after"] - both["before"]).abs()
    top = both.sort_values("move", ascending=False).head(n)
    return [(str(name), float(r.before), float(r.after)) for name, r in top.iterrows()]
