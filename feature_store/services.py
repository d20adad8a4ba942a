"""Which features each model reads: the field lists of the feature services, as plain tuples.

``definitions.py`` builds the Feast ``FeatureService`` objects from these tuples, and the
models name their feature columns from the same tuples, so a service lists exactly the
features its model reads. No Feast import here: a served bundle names its columns
without loading Feast.
"""

from __future__ import annotations

_WINDOWS = (1, 7, 30)  # = definitions.WINDOWS_DAYS
_ACTIVITY = tuple(f"{t}_{w}d" for w in _WINDOWS for t in ("view", "add_to_cart", "purchase"))

# The recommender's re-ranker: user and item columns (``store_user_*``, ``store_item_*``),
# the shopper's segment (a categorical column of its own) and the content vectors the
# content candidate source compares.
RECOMMENDER_USER_FEATURES = (
    "days_since_signup",
    "events_total",
    "recency_days",
    "median_purchase_price",
    "price_sensitivity",
    *_ACTIVITY,
)
RECOMMENDER_ITEM_FEATURES = (*_ACTIVITY, "cart_rate", "purchase_rate", "view_to_purchase_rate")
RECOMMENDER_RANKER: dict[str, tuple[str, ...]] = {
    "user_profile": ("segment", *RECOMMENDER_USER_FEATURES),
    "item_stats": RECOMMENDER_ITEM_FEATURES,
    "item_content": ("text_embedding", "image_embedding"),
}
