"""The ``[search]`` table of a pipeline config file (docs/search.md lists every option)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import require_all
from pipelines.ranking.lambdamart import LambdaMARTConfig
from pipelines.search.lexical import FIELDS
from pipelines.settings import check_tables, config_section

DEFAULT_FIELD_WEIGHTS = {"title": 1.0, "brand": 0.7, "category": 0.5, "description": 0.3}
FUSIONS = ("convex", "rrf")
EMBEDDINGS = ("tfidf", "sentence")
LABELS = ("auto", "judgments", "queries")


@dataclass(frozen=True)
class SearchConfig(LambdaMARTConfig):
    """Retrieval, query understanding and the re-ranker (LightGBM parameters inherited)."""

    # Lexical: BM25 per field, combined with these weights (tuned on data when tune = true)
    field_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FIELD_WEIGHTS))
    k1: float = 1.5
    b: float = 0.75
    stem: bool = True
    stopwords: bool = True
    # Semantic: the text embedding queries and items share
    embedding: str = "tfidf"
    embedding_dim: int = 128
    min_cosine: float = 0.25  # an item this close to the query counts as a match
    # Images (where the catalog has image_embedding): the semantic score is
    # (1 - image_weight) * text cosine + image_weight * image cosine
    image_weight: float = 0.25  # tune = true also tries 0 (images off)
    image_feedback: int = 10  # best first-pass matches whose mean image stands for the query
    # Fusion of the two (scores min-max normalised over the candidates)
    fusion: str = "convex"
    alpha: float = 0.7  # convex: weight of the lexical score (tuned on data when tune = true)
    rrf_k: int = 60
    candidates: int = 200  # fused top-N the re-ranker sees
    # Large catalogs: from this many items (0: never) a query scores a pool instead of
    # every item — the lexical top ann_pool, and the ann_pool nearest text (and image)
    # embeddings from a FAISS inverted file of ann_lists cells (0: 4 x sqrt(items)), of
    # which a search visits ann_probe
    ann_min_items: int = 200_000
    ann_pool: int = 1000
    ann_lists: int = 0
    ann_probe: int = 64
    tune: bool = True  # tune field weights and alpha on the training labels
    # Query understanding
    spelling: bool = True
    max_edits: int = 2
    synonyms_file: str | None = None
    synonym_weight: float = 0.5
    relaxed_prefix: int = 4  # relaxed terms: catalog words sharing this many first letters
    # Held out for the evaluation (`shopml search evaluate`, the retrain DAG's gate)
    holdout_days: float = 7.0  # the query log's last days: training stops before them
    judged_holdout: float = 0.2  # share of judged queries (picked by a hash of the text)
    # Re-ranker
    rerank: bool = True
    labels: str = "auto"  # judgments | queries (the click log) | auto: the log when it has enough
    min_logged_queries: int = 50  # auto: clicked queries the log needs to be used
    folds: int = 5  # query-grouped cross-validation folds of `shopml benchmark search`
    validation_share: float = 0.2
    seed: int = 0
    # LambdaMART, for a few hundred labelled queries
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    min_rounds: int = 100
    refit: bool = True  # then train on the validation queries too

    def __post_init__(self) -> None:
        checks = [
            (set(self.field_weights) <= set(FIELDS), f"field_weights takes fields of {FIELDS}"),
            (all(w >= 0 for w in self.field_weights.values()), "field_weights must be >= 0"),
            (any(w > 0 for w in self.field_weights.values()), "one field weight must be > 0"),
            (self.k1 > 0, "k1 must be > 0"),
            (0 <= self.b <= 1, "b must be in [0, 1]"),
            (self.embedding in EMBEDDINGS, f"embedding must be one of {EMBEDDINGS}"),
            (self.embedding_dim >= 2, "embedding_dim must be >= 2"),
            (-1 <= self.min_cosine <= 1, "min_cosine must be in [-1, 1]"),
            (0 <= self.image_weight <= 1, "image_weight must be in [0, 1]"),
            (self.image_feedback >= 1, "image_feedback must be >= 1"),
            (self.fusion in FUSIONS, f"fusion must be one of {FUSIONS}"),
            (0 <= self.alpha <= 1, "alpha must be in [0, 1]"),
            (self.rrf_k >= 1, "rrf_k must be >= 1"),
            (self.candidates >= 10, "candidates must be >= 10"),
            (self.ann_min_items >= 0, "ann_min_items must be >= 0 (0: never)"),
            (self.ann_pool >= self.candidates, "ann_pool must be >= candidates"),
            (self.ann_lists >= 0, "ann_lists must be >= 0 (0: 4 x sqrt(items))"),
            (self.ann_probe >= 1, "ann_probe must be >= 1"),
            (self.max_edits in (1, 2), "max_edits must be 1 or 2"),
            (0 <= self.synonym_weight <= 1, "synonym_weight must be in [0, 1]"),
            (self.relaxed_prefix >= 2, "relaxed_prefix must be >= 2"),
            (self.folds >= 2, "folds must be >= 2"),
            (self.holdout_days > 0, "holdout_days must be > 0"),
            (0 <= self.judged_holdout < 1, "judged_holdout must be in [0, 1)"),
            (self.labels in LABELS, f"labels must be one of {LABELS}"),
            (self.min_logged_queries >= 2, "min_logged_queries must be >= 2"),
            (0 < self.validation_share < 1, "validation_share must be in (0, 1)"),
            *self.lambdamart_checks(),
        ]
        require_all(checks, context="search config")

    @classmethod
    def from_toml(cls, path: str | Path | None, **overrides: Any) -> SearchConfig:
        if path is None:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        check_tables(path)
        return config_section(cls, Path(path), "search", **overrides)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
