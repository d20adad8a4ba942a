"""Run the suites with Great Expectations 1.x and build its Data Docs.

An ephemeral GX context per validation: one pandas data source, one DataFrame asset and
suite per batch, results in SUMMARY form with the batch's key column, so every failed
check lists the ids of its first 20 bad rows. The Data Docs site is written into the
snapshot's validation folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from pipelines.validation.suites import Check

SAMPLE_ROWS = 20


@dataclass
class Outcome:
    check: Check
    success: bool
    result: dict[str, Any]
    error: str | None


def _error_of(exception_info: Any) -> str | None:
    """GX reports a failed metric either directly or keyed by metric id."""
    if not exception_info:
        return None
    infos = (
        [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    )
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message") or "expectation raised an exception")
    return None


def run_checks(
    batches: dict[str, tuple[pd.DataFrame, list[str]]], checks: list[Check], docs_dir: Path
) -> list[Outcome]:
    """Validate each batch (DataFrame, key columns) against its checks; write Data Docs to ``docs_dir``."""
    # GX fingerprints every batch below this many bytes by hashing all of it (17 s for
    # 10M events); the fingerprint only names the batch, so we skip it.
    pandas_engine.HASH_THRESHOLD = 0
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    site: Any = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    ctx.add_data_docs_site("shopml", site)
    source = ctx.data_sources.add_pandas("snapshot")
    outcomes: list[Outcome] = []
    for name, (frame, key) in batches.items():
        mine = {c.id: c for c in checks if c.batch == name}
        if not mine:
            continue
        definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"shopml.{name}"))
        for check in mine.values():
            suite.add_expectation(check.expectation)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate.{name}", data=definition, suite=suite)
        )
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": SAMPLE_ROWS,
        }
        if key:
            result_format["unexpected_index_column_names"] = key
        res = vd.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        for r in res.results:
            config = r.expectation_config
            assert config is not None  # GX always echoes the configuration it ran
            check = mine[config.meta["shopml_check"]]
            outcomes.append(
                Outcome(check, bool(r.success), dict(r.result or {}), _error_of(r.exception_info))
            )
    ctx.build_data_docs(site_names=["shopml"])
    order = {c.id: i for i, c in enumerate(checks)}
    return sorted(outcomes, key=lambda o: order[o.check.id])
