"""Validation thresholds (docs/validation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.settings import config_section


@dataclass(frozen=True)
class ValidationConfig:
    duplicate_event_max_ratio: float = 0.01
    row_count_min_ratio: float = 0.5
    row_count_max_ratio: float = 2.0
    category_kl_max: float = 0.10
    price_kl_max: float = 0.05
    price_bins: int = 10
    min_quantity: int = 1  # events.quantity below this (0, negative) fails validation
    min_value: float = 0.0  # events.value below this fails validation (money is not negative)

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate_event_max_ratio < 1:
            raise ConfigError("validation: duplicate_event_max_ratio must be in [0, 1)")
        if not 0 <= self.row_count_min_ratio <= 1 <= self.row_count_max_ratio:
            raise ConfigError("validation: need row_count_min_ratio <= 1 <= row_count_max_ratio")
        if self.category_kl_max <= 0 or self.price_kl_max <= 0:
            raise ConfigError("validation: KL thresholds must be > 0")
        if self.price_bins < 2:
            raise ConfigError("validation: price_bins must be >= 2")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> ValidationConfig:
        """Read the ``[validation]`` table of a TOML file (unknown keys are an error)."""
        return config_section(cls, path, "validation", **overrides)
