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
    "repeat": "you buy it regularly",
    "cooccur": "often bought together with items you bought recently",
    "buy_count": "you have bought it before",
    "days_since_bought": "time to stock up again",
    "due_ratio": "time to stock up again",
    "item_repurchase_rate": "shoppers buy it again and again",
    "category_repurchase_rate": "{top_category} shoppers restock often",
}

# Reasons about the shopper's own purchases of the item: said only when they bought it.
BOUGHT_BASED = frozenset({"repeat", "buy_count", "days_since_bought", "due_ratio"})


# Reasons that speak of the shopper's own history: never said to a shopper without one.
HISTORY_BASED = frozenset(
    {
        "als",
        "bpr",
        "itemitem",
        "content",
        "brand_affinity",
        "category_affinity",
        "top_category_affinity",
        "price_vs_user",
        "time_gap_days",
        "item_log_price",
        "cooccur",
        *BOUGHT_BASED,
    }
)


def _base(feature: str) -> str:
    return (
        feature.rsplit("_", 1)[0] if feature.endswith(("_score", "_rank", "_zscore")) else feature
    )


def reason_for(
    feature: str, item: int, items: ItemSide, *, has_history: bool = True, bought: bool = False
) -> str | None:
    """Words for one feature's push on ``item``; None for user-only features (they
    move every candidate of a user alike, so they explain nothing about the choice),
    for a shopper without history for every reason that would speak of one, and for an
    item the shopper never bought for every buy-again reason."""
    if not has_history and _base(feature) in HISTORY_BASED:
        return None
    if not bought and _base(feature) in BOUGHT_BASED:
        return None
    if feature.startswith("store_item_"):
        name = feature.removeprefix("store_item_")
        if name.endswith("rate"):
            return "often bought once viewed"
        return "popular right now"
    template = REASONS.get(_base(feature))
    if template is None:
        return None
    brand = items.brand[item]
    return template.format(
        category=items.categories[items.category[item]],
        top_category=items.top_categories[items.top_category[item]],
        brand=items.brands[brand] if brand >= 0 else "",
    )


def reasons(
    contributions: np.ndarray,
    names: list[str],
    item: int,
    items: ItemSide,
    *,
    has_history: bool = True,
    bought: bool = False,
    top: int = 3,
) -> list[str]:
    """The ``top`` distinct reasons for ``item`` (one row of contributions); for a shopper
    without history (no events, no recent items) only reasons about the item and people
    like them; buy-again reasons only when they ``bought`` it."""
    return explain(
        contributions,
        names,
        lambda f: reason_for(f, item, items, has_history=has_history, bought=bought),
        top=top,
    )
