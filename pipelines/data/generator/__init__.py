"""Synthetic shop data with planted, documented structure (docs/data-generator.md)."""

from pipelines.data.generator.shop import GENERATOR_VERSION, GenerateResult, generate_shop
from pipelines.data.generator.world import GeneratorConfig, World, build_world

__all__ = [
    "GENERATOR_VERSION",
    "GenerateResult",
    "GeneratorConfig",
    "World",
    "build_world",
    "generate_shop",
]
