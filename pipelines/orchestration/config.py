"""The pipeline config file: one TOML file with a table per stage, read in one place.

Tables (all optional; docs/operations.md): ``[validation]`` (thresholds of the validation
suites), ``[features]``, ``[train]``, ``[candidates]``, ``[ranker]``, ``[evaluate]``,
``[gate]``, ``[search]`` and ``[search_gate]`` (the search branch). ``[evaluate] holdout_days`` is read by training too: the default training
time is the start of the evaluation window. An unknown table or key is an error naming
it, so a typo is never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.evaluation.evaluate import EvaluateConfig
from pipelines.evaluation.search_eval import SearchEvalConfig
from pipelines.recommender.config import TrainConfig
from pipelines.settings import check_tables
from pipelines.validation.config import ValidationConfig


@dataclass(frozen=True)
class PipelineConfig:
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    search: SearchEvalConfig = field(default_factory=SearchEvalConfig)

    @classmethod
    def from_toml(cls, path: str | Path | None) -> PipelineConfig:
        """The file's settings (``None`` or an empty path: every default)."""
        if not path:
            return cls()
        check_tables(path)
        return cls(
            validation=ValidationConfig.from_toml(path),
            train=TrainConfig.from_toml(path),
            evaluate=EvaluateConfig.from_toml(path),
            search=SearchEvalConfig.from_toml(path),
        )
