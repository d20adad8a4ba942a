"""The recommender's training settings: the ``[train]``, ``[candidates]``, ``[ranker]`` and
``[features]`` tables of a pipeline config file, and ``[evaluate] holdout_days`` (the
evaluation window training leaves unseen). docs/recommendation.md lists every option.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.candidates import CandidateConfig
from pipelines.data.contract import DEFAULT_GRADES, EVENT_TYPES
from pipelines.data.timeline import DEFAULT_HOLDOUT_DAYS
from pipelines.errors import ConfigError, require_all
from pipelines.features.config import FeatureConfig
from pipelines.ranking.lambdamart import LambdaMARTConfig
from pipelines.settings import check_tables, config_section, config_value


@dataclass(frozen=True)
class RankerConfig(LambdaMARTConfig):
    """The ``[ranker]`` table: the label window, the training sample, and LightGBM's
    parameters (inherited from :class:`LambdaMARTConfig`)."""

    label_days: float = 14.0
    grades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRADES))
    max_users: int = 10_000  # users sampled per fold for ranker training (train + validation)
    negatives_per_user: int = 50  # unlabelled candidates kept per training user
    validation_share: float = 0.2
    batch_users: int = 500

    def __post_init__(self) -> None:
        checks = [
            (self.label_days > 0, "label_days must be > 0"),
            (set(self.grades) == set(EVENT_TYPES), f"grades needs exactly {sorted(EVENT_TYPES)}"),
            (all(0 <= g <= 30 for g in self.grades.values()), "grades must be in 0..30"),
            (self.max_users >= 10, "max_users must be >= 10"),
            (self.negatives_per_user >= 1, "negatives_per_user must be >= 1"),
            (0 < self.validation_share < 1, "validation_share must be in (0, 1)"),
            *self.lambdamart_checks(),
            (self.batch_users >= 1, "batch_users must be >= 1"),
        ]
        require_all(checks, context="ranker config")


@dataclass(frozen=True)
class TrainOptions:
    """The ``[train]`` table: how many label windows the ranker learns from, and how far
    apart their starts are (``fold_step_days``; default ``[ranker] label_days``: windows
    side by side; shorter: overlapping windows, more rows from a short history)."""

    folds: int = 2
    fold_step_days: float | None = None

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ConfigError("train config: folds must be >= 1")
        if self.fold_step_days is not None and not self.fold_step_days > 0:
            raise ConfigError("train config: fold_step_days must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    train: TrainOptions = field(default_factory=TrainOptions)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # [evaluate] holdout_days: the default training time leaves the evaluation window unseen
    holdout_days: float = DEFAULT_HOLDOUT_DAYS

    def __post_init__(self) -> None:
        if not self.holdout_days > 0:
            raise ConfigError("evaluate config: holdout_days must be > 0")

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Tables ``[train]``, ``[candidates]``, ``[ranker]``, ``[features]`` and
        ``[evaluate] holdout_days``; all optional, the pipeline's other tables allowed."""
        check_tables(path)
        p = Path(path)
        return cls(
            train=config_section(TrainOptions, p, "train"),
            candidates=config_section(CandidateConfig, p, "candidates"),
            ranker=config_section(RankerConfig, p, "ranker"),
            features=config_section(FeatureConfig, p, "features"),
            holdout_days=float(
                config_value(p, "evaluate", "holdout_days", DEFAULT_HOLDOUT_DAYS, (int, float))
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`as_dict` (a plan passed between DAG tasks)."""
        return cls(
            train=TrainOptions(**d["train"]),
            candidates=CandidateConfig(**d["candidates"]),
            ranker=RankerConfig(**d["ranker"]),
            features=FeatureConfig(**d["features"]),
            holdout_days=float(d["holdout_days"]),
        )
