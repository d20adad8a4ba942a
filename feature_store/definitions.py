"""ShopML's Feast objects: entities, sources, feature views and one feature service per model.

Declarative only, as in Feast's own repo template: importing this module reads no
settings and touches no files. Source paths are relative to the feature store folder
(``$SHOPML_HOME/feature_store``), which ``pipelines.features.store`` passes to Feast as
the repo path; ``pipelines.features`` writes the parquet files they name. docs/features.md
defines every feature.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Int32, Int64, String

from feature_store.services import RECOMMENDER_RANKER

WINDOWS_DAYS = (1, 7, 30)  # = pipelines.features.config.WINDOWS_DAYS (a test keeps them equal)
EVENT_TYPES = ("view", "add_to_cart", "purchase", "search_click")
NO_AGE_LIMIT = timedelta(0)  # Feast: a ttl of 0 means a row never expires


def _activity() -> list[Field]:
    return [Field(name=f"{t}_{w}d", dtype=Int32) for w in WINDOWS_DAYS for t in EVENT_TYPES]


# --- Entities: the shopper and the product, keyed by their snapshot ids.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="a shopper (users.user_id)",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="a product (items.item_id)",
)

# --- user_profile: one row per user per grid time t, from events before t.
user_profile_source = FileSource(
    name="user_profile_source", path="data/user_profile.parquet", timestamp_field="event_timestamp"
)
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=NO_AGE_LIMIT,
    schema=[
        Field(name="age", dtype=Float32),
        Field(name="gender", dtype=String),
        Field(name="region", dtype=String),
        Field(name="days_since_signup", dtype=Float32),
        Field(name="events_total", dtype=Int64),
        Field(name="recency_days", dtype=Float32),
        Field(name="top_categories", dtype=Array(String)),
        Field(name="top_category_weights", dtype=Array(Float32)),
        Field(name="top_brands", dtype=Array(String)),
        Field(name="top_brand_weights", dtype=Array(Float32)),
        Field(name="median_purchase_price", dtype=Float32),
        Field(name="price_sensitivity", dtype=Float32),
        Field(name="segment", dtype=Int64),
        *_activity(),
    ],
    source=user_profile_source,
    online=True,
    description="demographics, interest tags, price band, activity, recency and segment of a shopper",
)

# --- item_stats: one row per item per grid time t, from events before t.
item_stats_source = FileSource(
    name="item_stats_source", path="data/item_stats.parquet", timestamp_field="event_timestamp"
)
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=NO_AGE_LIMIT,
    schema=[
        *_activity(),
        Field(name="cart_rate", dtype=Float32),
        Field(name="purchase_rate", dtype=Float32),
        Field(name="view_to_purchase_rate", dtype=Float32),
        Field(name="price", dtype=Float32),
        Field(name="category", dtype=String),
        Field(name="brand", dtype=String),
        Field(name="item_age_days", dtype=Float32),
    ],
    source=item_stats_source,
    online=True,
    description="popularity, smoothed conversion rates, price, category, brand and age of an item",
)

# --- item_content: one row per item at its creation time.
item_content_source = FileSource(
    name="item_content_source", path="data/item_content.parquet", timestamp_field="event_timestamp"
)
item_content = FeatureView(
    name="item_content",
    entities=[item],
    ttl=NO_AGE_LIMIT,
    schema=[
        Field(name="text_embedding", dtype=Array(Float32)),
        Field(name="image_embedding", dtype=Array(Float32)),
        Field(name="has_image", dtype=Bool),
    ],
    source=item_content_source,
    online=True,
    description="text embedding of title and description, and the catalog's image embedding",
)

# --- Feature services: exactly the features each model uses.
recommender_ranker = FeatureService(
    name="recommender_ranker",
    features=[user_profile[list(RECOMMENDER_RANKER["user_profile"])],
              item_stats[list(RECOMMENDER_RANKER["item_stats"])],
              item_content[list(RECOMMENDER_RANKER["item_content"])]],
    description="the LightGBM re-ranker of recommendations: exactly the features it reads",
)  # fmt: skip
search_ranker = FeatureService(
    name="search_ranker",
    features=[
        user_profile[
            [
                "top_categories",
                "top_category_weights",
                "top_brands",
                "top_brand_weights",
                "median_purchase_price",
                "price_sensitivity",
                "segment",
            ]
        ],
        item_stats,
        item_content[["text_embedding"]],
    ],
    description="the search re-ranker: the shopper's interest tags against each result",
)
cold_start = FeatureService(
    name="cold_start",
    features=[user_profile[["age", "gender", "region", "segment", "events_total"]]],
    description="demographic fallbacks for shoppers without history",
)

ENTITIES = [user, item]
FEATURE_VIEWS = [user_profile, item_stats, item_content]
FEATURE_SERVICES = [recommender_ranker, search_ranker, cold_start]
OBJECTS: list[Any] = [
    *ENTITIES,
    user_profile_source,
    item_stats_source,
    item_content_source,
    *FEATURE_VIEWS,
    *FEATURE_SERVICES,
]
