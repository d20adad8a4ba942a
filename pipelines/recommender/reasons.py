"""Reasons in words for a recommendation: which feature pushed an item up, said for the
shopper (templates filled with the item's category and brand)."""

from __future__ import annotations

import numpy as np

from pipelines.ranking.reasons import explain
from pipelines.recommender.rows import ItemSide

REASONS = {
    "als": "shoppers with similar taste engaged with it",
    "bpr": "shoppers with similar taste engaged with it",
    "itemitem": "often engaged with together with items you engaged with",
    "content": "similar to items you recently looked at",
    "popularity": "popular with shoppers like you",
    "trending": "trending this week",
    "n_sources": "several recommenders agree on it",
    "item_popularity": "a best-seller",
    "item_trending": "trending this week",
    "item_age_days": "new in the catalog",
    "brand_affinity": "from a brand you like ({brand})",
    "category_affinity": "matches your interest in {category}",
    "top_category_affinity": "matches your interest in {top_category}",
    "price_vs_user": "in your usual price range",
    "time_gap_days": "popular when you were shopping",
    "item_log_price": "priced for you",
    "item_category": "in {category}",
    "item_top_category": "in {top_category}",
}


def reason_for(feature: str, item: int, items: ItemSide) -> str | None:
    """Words for one feature's push on ``item``; None for user-only features (they
    move every candidate of a user alike, so they explain nothing about the choice)."""
    if feature.startswith("store_item_"):
        name = feature.removeprefix("store_item_")
        if name.endswith("rate"):
            return "often bought once viewed"
        return "popular right now"
    base = (
        feature.rsplit("_", 1)[0] if feature.endswith(("_score", "_rank", "_zscore")) else feature
    )
    template = REASONS.get(base)
    if template is None:
        return None
    brand = items.brand[item]
    return template.format(
        category=items.categories[items.category[item]],
        top_category=items.top_categories[items.top_category[item]],
        brand=items.brands[brand] if brand >= 0 else "",
    )


def reasons(
    contributions: np.ndarray, names: list[str], item: int, items: ItemSide, top: int = 3
) -> list[str]:
    """The ``top`` distinct reasons for ``item`` (one row of contributions)."""
    return explain(contributions, names, lambda f: reason_for(f, item, items), top=top)
