"""The ``[candidates]`` table: how the candidate sources are fitted and how many
candidates each contributes (docs/recommendation.md lists every option)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.data.contract import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES
from pipelines.errors import require_all

REPEAT_MODES = ("auto", "never", "always")

# How many candidates each source contributes before the union (390 in total by default).
DEFAULT_PER_SOURCE = {
    "als": 80,
    "bpr": 40,
    "itemitem": 80,
    "content": 40,
    "popularity": 30,
    "trending": 30,
    "repeat": 50,
    "cooccur": 40,
}
SOURCES = tuple(DEFAULT_PER_SOURCE)


@dataclass(frozen=True)
class CandidateConfig:
    """How the candidate generators are fitted and how many candidates each gives."""

    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    half_life_days: float = 60.0  # time decay of an event's confidence
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 2.0  # confidence = 1 + alpha * weight
    bpr_factors: int = 64
    bpr_iterations: int = 30
    bpr_learning_rate: float = 0.05
    bpr_regularization: float = 0.01
    ease_max_items: int = 10_000  # EASE up to this catalog size, item-kNN above
    ease_lambda: float = 300.0
    knn_neighbours: int = 100
    content_history: int = 20  # most recent items in a user's content profile
    trending_days: float = 7.0
    popularity_smoothing: float = 50.0  # pseudo-count of global popularity in group popularity
    # Buying again (pipelines/candidates/repeats.py): whether a touched item may be shown
    # again, per top-level category: auto (from its repurchase rate), never, always.
    repeats: str = "auto"
    repeat_min_rate: float = 0.02  # auto: allowed where >= this share of buyers buy again
    repeat_prior: float = 20.0  # pseudo-buyers who never bought again, in a category's rate
    repeat_categories: dict[str, str] = field(default_factory=dict)  # top category -> rule
    repeat_half_life_days: float = 90.0  # the buy-again score's decay since the last purchase
    # Basket / session co-occurrence (pipelines/candidates/cooccur.py)
    cooccur_neighbours: int = 100  # kept per item
    cooccur_history: int = 10  # a shopper's most recent items it starts from
    cooccur_next_weight: float = 0.5  # weight of next-session transitions vs same-session pairs
    # FAISS retrieval (pipelines/candidates/ann.py) for ALS, BPR and content from this many
    # items on (0: never): "flat" exact search, or an "hnsw" graph (approximate)
    ann_min_items: int = 20_000
    ann_method: str = "flat"
    ann_neighbours: int = 32
    ann_ef_construction: int = 100
    ann_ef_search: int = 300
    ann_pool: int = 300  # items asked of the graph per shopper before the seen ones are removed
    per_source: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PER_SOURCE))
    threads: int = 0  # for ALS and item-kNN; 0 = every core (both stay repeatable)
    # BPR's SGD is hogwild with several threads (run to run differences of a few percent
    # in validation nDCG); one thread makes training repeatable, 0 = every core.
    bpr_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        # A partial per_source table changes those sources only; 0 turns a source off.
        object.__setattr__(self, "per_source", {**DEFAULT_PER_SOURCE, **self.per_source})
        checks = [
            (
                set(self.event_weights) == set(EVENT_TYPES),
                f"event_weights needs exactly {sorted(EVENT_TYPES)}",
            ),
            (all(w >= 0 for w in self.event_weights.values()), "event weights must be >= 0"),
            (self.half_life_days > 0, "half_life_days must be > 0"),
            (min(self.als_factors, self.bpr_factors) >= 2, "factors must be >= 2"),
            (min(self.als_iterations, self.bpr_iterations) >= 1, "iterations must be >= 1"),
            (self.ease_lambda > 0, "ease_lambda must be > 0"),
            (self.knn_neighbours >= 1, "knn_neighbours must be >= 1"),
            (self.content_history >= 1, "content_history must be >= 1"),
            (self.trending_days > 0, "trending_days must be > 0"),
            (self.threads >= 0, "threads must be >= 0"),
            (self.bpr_threads >= 0, "bpr_threads must be >= 0"),
            (self.repeats in REPEAT_MODES, f"repeats must be one of {', '.join(REPEAT_MODES)}"),
            (
                all(v in REPEAT_MODES for v in self.repeat_categories.values()),
                f"repeat_categories values must be one of {', '.join(REPEAT_MODES)}",
            ),
            (0 <= self.repeat_min_rate <= 1, "repeat_min_rate must be in [0, 1]"),
            (self.repeat_prior >= 0, "repeat_prior must be >= 0"),
            (self.repeat_half_life_days > 0, "repeat_half_life_days must be > 0"),
            (self.cooccur_neighbours >= 1, "cooccur_neighbours must be >= 1"),
            (self.cooccur_history >= 1, "cooccur_history must be >= 1"),
            (self.cooccur_next_weight >= 0, "cooccur_next_weight must be >= 0"),
            (self.ann_min_items >= 0, "ann_min_items must be >= 0 (0: always exact)"),
            (self.ann_method in ("flat", "hnsw"), "ann_method must be flat or hnsw"),
            (self.ann_neighbours >= 4, "ann_neighbours must be >= 4"),
            (self.ann_ef_construction >= 8, "ann_ef_construction must be >= 8"),
            (self.ann_ef_search >= 8, "ann_ef_search must be >= 8"),
            (self.ann_pool >= 1, "ann_pool must be >= 1"),
            (
                set(self.per_source) <= set(SOURCES),
                f"per_source names unknown sources; known: {', '.join(SOURCES)}",
            ),
            (all(n >= 0 for n in self.per_source.values()), "per_source counts must be >= 0"),
            (sum(self.per_source.values()) >= 1, "per_source must ask for at least one candidate"),
        ]
        require_all(checks, context="candidate config")

    @property
    def repeatable(self) -> bool:
        """Whether fitting twice on the same data gives the same sources."""
        return self.bpr_threads == 1

    def weight_of_type(self) -> np.ndarray:
        """Event weight by event-type code (the order of ``contract.EVENT_TYPES``)."""
        return np.array([self.event_weights[t] for t in EVENT_TYPES], dtype=np.float32)
