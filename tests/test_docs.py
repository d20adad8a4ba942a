"""Docs stay true to the code: contract columns, planted tables, CLI options, examples."""

from __future__ import annotations

import re
from datetime import datetime

import typer.main

from pipelines.cli import app
from pipelines.data.contract import TABLES
from pipelines.data.generator.vocab import leaf_table_markdown
from pipelines.settings import load_settings
from tests.conftest import REPO


def test_data_contract_page_lists_every_column() -> None:
    page = (REPO / "docs" / "data-contract.md").read_text()
    for table, spec in TABLES.items():
        section = page.split(f"## {table} ")[1].split("\n## ")[0]
        documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
        assert documented == list(spec.names), table


def test_generator_page_embeds_the_planted_leaf_table() -> None:
    assert leaf_table_markdown() in (REPO / "docs" / "data-generator.md").read_text()


def test_generator_page_documents_every_option_with_its_default() -> None:
    page = (REPO / "docs" / "data-generator.md").read_text()
    command = typer.main.get_command(app)
    generate = command.commands["data"].commands["generate"]  # type: ignore[attr-defined]
    for param in generate.params:
        if param.name in ("help",):
            continue
        flag = f"`--{param.name.replace('_', '-')}`"
        assert flag in page, flag
        row = next(line for line in page.splitlines() if line.startswith(f"| {flag} |"))
        documented = row.split("|")[2].strip()
        default = param.default
        if isinstance(default, bool):
            assert documented == ("on" if default else "off"), row
        elif isinstance(default, int | float):
            assert documented in (f"{default:,}", f"{default:.2f}"), row
        elif isinstance(default, datetime):
            assert documented == default.strftime("%Y-%m-%d"), row


def test_readme_quickstart_and_ci() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_production_settings_example_is_valid() -> None:
    example = REPO / "infra" / "shopml.production.toml.example"
    s = load_settings({"SHOPML_ENV": "production", "SHOPML_CONFIG": str(example)})
    assert s.serving_bucket_uri.startswith("s3://") and s.online_store == "redis"


def test_validation_page_lists_every_check() -> None:
    from datetime import UTC

    from pipelines.data.contract import schema
    from pipelines.validation import suites
    from pipelines.validation.config import ValidationConfig

    now = datetime.now(UTC)
    checks = []
    for table in TABLES:
        columns = schema(table, with_embedding=table == "items").names
        checks += suites.table_checks(table, categorical=frozenset(), now=now, present=columns)
    checks += (
        suites.event_checks(ValidationConfig(), first=now, last=now) + suites.judgment_checks()
    )
    checks += suites.baseline_checks(
        ValidationConfig(),
        rows={"users": 1, "items": 1, "events": 1},
        category_partition={"values": ["a"], "weights": [1.0]},
        price_partition={"bins": [0.0, 1.0], "weights": [1.0]},
    )
    page = (REPO / "docs" / "validation.md").read_text()
    for check in checks:
        assert f"| `{check.id}` |" in page and check.why in page, check.id
    assert "`files.sha256`" in page


def test_features_page_defines_every_feature_and_service() -> None:
    from feature_store import definitions

    page = (REPO / "docs" / "features.md").read_text()
    for view in definitions.FEATURE_VIEWS:
        assert f"## {view.name}" in page
        for feature in view.features:
            assert f"`{feature.name}`" in page, f"{view.name}:{feature.name}"
    for service in definitions.FEATURE_SERVICES:
        assert f"`{service.name}`" in page


def test_recommendation_page_documents_every_feature_option_and_reason() -> None:
    import tomllib
    from dataclasses import asdict

    from pipelines.candidates import SOURCES
    from pipelines.recommender.config import TrainConfig
    from pipelines.recommender.reasons import REASONS
    from pipelines.recommender.rows import feature_names

    page = (REPO / "docs" / "recommendation.md").read_text()
    for name in feature_names(list(SOURCES), with_store=True):
        if name.startswith(SOURCES) or name.startswith("store_"):
            continue  # per-source and store columns are documented as patterns
        assert f"`{name}`" in page, name
    for pattern in (
        "`{s}_score`",
        "`{s}_rank`",
        "`{s}_zscore`",
        "`store_user_*`",
        "`store_item_*`",
    ):
        assert pattern in page
    for source in SOURCES:
        assert f"| `{source}` |" in page, source
    for reason in set(REASONS.values()):
        assert reason.split(" ({")[0].split("{")[0].strip() in page, reason
    # the config example parses and names every option with its default
    example = page.split("## Configuration")[1].split("```toml")[1].split("```")[0]
    parsed = tomllib.loads(
        example.replace("[features]                # as in docs/features.md", "")
    )
    defaults = asdict(TrainConfig())
    for table in ("train", "candidates", "ranker"):
        unset = [k for k, v in defaults[table].items() if v is None]  # TOML has no null
        assert parsed[table] == {k: v for k, v in defaults[table].items() if v is not None}
        for key in unset:
            assert f"# {key} = " in example, key  # shown commented out, with its meaning


def test_evaluation_page_defines_every_metric_and_gate_option() -> None:
    import tomllib
    from dataclasses import asdict, fields

    from pipelines.evaluation.evalset import EvalConfig
    from pipelines.evaluation.evaluate import EvaluateConfig
    from pipelines.evaluation.gate import Check
    from pipelines.ranking.metrics import BEYOND_ACCURACY, METRICS

    page = (REPO / "docs" / "evaluation.md").read_text()
    for metric in (*METRICS, *BEYOND_ACCURACY):
        section = page.split(f"### `{metric}@k`")[1].split("###")[0]
        assert "Range" in section and "Source" in section, metric
    for f in fields(Check):
        assert f"| `{f.name}` |" in page, f.name
    for slice_name in ("all", "new_users", "returning_users", "segment=<s>", "cold_items"):
        assert f"| `{slice_name}` |" in page, slice_name
    # the configuration example is the defaults, every option named
    example = page.split("## Configuration")[1].split("```toml")[1].split("```")[0]
    parsed = tomllib.loads(example)
    assert parsed["evaluate"] == asdict(EvalConfig())
    defaults = EvaluateConfig()
    assert [Check(**c) for c in parsed["gate"]["checks"]] == defaults.gate.checks
    sizes = {k: v for k, v in defaults.gate.as_dict().items() if k != "checks"}
    assert {k: v for k, v in parsed["gate"].items() if k != "checks"} == sizes


def test_operations_page_names_every_command_and_ledger_field() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.promotion.ledger import LEDGER_FIELDS

    page = (REPO / "docs" / "operations.md").read_text()
    for field in LEDGER_FIELDS:
        assert f"`{field}`" in page, field
    for command in (
        ["dags", "trigger"], ["dags", "announce"], ["review", "list"], ["review", "approve"], ["review", "reject"],
        ["rollback"], ["promotions", "log"], ["promotions", "verify"], ["promote"],
    ):  # fmt: skip
        assert "shopml " + " ".join(command) in page, command
        assert CliRunner().invoke(app, [*command, "--help"]).exit_code == 0, command
    for target in ("make demo", "make up", "make down"):
        assert target in page
    makefile = (REPO / "Makefile").read_text()
    assert "\nup: setup" in makefile and "\ndown: setup" in makefile


def test_search_page_documents_every_option_feature_and_fallback() -> None:
    import tomllib
    from dataclasses import asdict

    from pipelines.search.config import SearchConfig
    from pipelines.search.ranker import FEATURES

    page = (REPO / "docs" / "search.md").read_text()
    for name in FEATURES:
        assert f"`{name}`" in page, name
    for fallback in ("corrected", "relaxed", "category", "popular"):
        assert f"| `{fallback}` |" in page, fallback
    example = page.split("## Configuration")[1].split("```toml")[1].split("```")[0]
    parsed = tomllib.loads(example)["search"]
    defaults = asdict(SearchConfig())
    unset = [k for k, v in defaults.items() if v is None]
    assert parsed == {k: v for k, v in defaults.items() if v is not None}
    for key in unset:
        assert f"# {key} = " in example, key


def test_search_page_shows_the_search_gate_defaults() -> None:
    import tomllib

    from pipelines.evaluation.gate import Check
    from pipelines.evaluation.search_eval import SearchEvalConfig

    page = (REPO / "docs" / "search.md").read_text()
    example = page.split("## Lifecycle")[1].split("```toml")[1].split("```")[0]
    parsed = tomllib.loads(example.replace("\n  ", "\n"))["search_gate"]
    gate = SearchEvalConfig().gate
    assert parsed["min_users"] == gate.min_users
    assert [Check(**c) for c in parsed["checks"]] == gate.checks
