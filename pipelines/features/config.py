"""Feature parameters (docs/features.md explains each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.data.contract import DEFAULT_EVENT_WEIGHTS
from pipelines.errors import require_all
from pipelines.settings import config_section

# Activity and popularity windows. Fixed, because the Feast feature views declare one
# column per window and event type (feature_store/definitions.py).
WINDOWS_DAYS = (1, 7, 30)


@dataclass(frozen=True)
class FeatureConfig:
    """How features are computed.

    Feature rows are computed at a grid of times: ``as_of`` and every ``every_days``
    before it, back ``history_days``. A training label at time t is joined to the
    latest row at or before t, so its features only ever see events before t.
    """

    history_days: int = 14
    every_days: float = 1.0
    half_life_days: float = 14.0
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    top_k_tags: int = 3
    conversion_prior_strength: float = 20.0
    segment_k_min: int = 3
    segment_k_max: int = 8
    segment_sample: int = 5_000
    text_dim: int = 32
    text_model: str = "auto"  # auto | tfidf | sentence
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.history_days >= 0, "history_days must be >= 0"),
            (self.every_days > 0, "every_days must be > 0"),
            (self.half_life_days > 0, "half_life_days must be > 0"),
            (
                set(self.event_weights) == set(DEFAULT_EVENT_WEIGHTS),
                f"event_weights needs exactly {sorted(DEFAULT_EVENT_WEIGHTS)}",
            ),
            (self.top_k_tags >= 1, "top_k_tags must be >= 1"),
            (
                2 <= self.segment_k_min <= self.segment_k_max,
                "need 2 <= segment_k_min <= segment_k_max",
            ),
            (self.text_dim >= 2, "text_dim must be >= 2"),
            (
                self.text_model in ("auto", "tfidf", "sentence"),
                "text_model must be auto, tfidf or sentence",
            ),
        ]
        require_all(checks, context="feature config")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> FeatureConfig:
        """Read the ``[features]`` table of a TOML file (unknown keys are an error)."""
        return config_section(cls, path, "features", **overrides)
