"""Feature tables for the Feast feature store (docs/features.md).

``build_features`` computes ``user_profile``, ``item_stats`` and ``item_content`` from a
validated snapshot; ``get_training_frame`` joins them to labels point-in-time;
``materialize`` and ``get_online`` serve the latest values.
"""

from pipelines.features.build import FeatureBuild, build_features
from pipelines.features.config import FeatureConfig

__all__ = ["FeatureBuild", "FeatureConfig", "build_features"]
