"""The locked environment: everything imports together, and mlflow/ never shadows MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_all_platform_dependencies_import_together() -> None:
    code = (
        "import airflow, airflow.providers.standard, mlflow, great_expectations, feast, lightgbm, implicit, "
        "pandas, pyarrow, sklearn, boto3, typer, rich, yaml, moto, hypothesis, scipy; "
        "print('VERSIONS', airflow.__version__, mlflow.__version__, great_expectations.__version__, feast.__version__, lightgbm.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    # Some libraries log to stdout on import; read only our line.
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("VERSIONS "))
    airflow_v, mlflow_v, gx_v, feast_v, lgb_v = line.split()[1:]
    assert airflow_v.startswith("3.3.")
    assert mlflow_v.startswith("3.")
    assert gx_v.startswith("1.")
    assert feast_v.startswith("0.67")
    assert lgb_v.startswith("4.")


def test_import_mlflow_from_repo_root_loads_the_library() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow, sys; print(mlflow.__file__); print(hasattr(mlflow, 'start_run'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    path, has_api = out.stdout.split()
    assert "site-packages" in path and not Path(path).is_relative_to(REPO / "mlflow")
    assert has_api == "True"


def test_mlflow_folder_holds_configuration_only() -> None:
    folder = REPO / "mlflow"
    assert folder.is_dir()
    assert not list(folder.rglob("*.py")), (
        "mlflow/ must not contain Python modules that could shadow MLflow"
    )


def test_top_level_layout() -> None:
    for name in (
        "dags",
        "pipelines",
        "feature_store",
        "mlflow",
        "infra",
        "serving",
        "benchmarks",
        "tests",
        "docs",
    ):
        assert (REPO / name).is_dir(), name
    for name in (
        "pyproject.toml",
        "README.md",
        "Makefile",
        ".ci/run",
        "requirements.lock",
        ".pre-commit-config.yaml",
    ):
        assert (REPO / name).is_file(), name
    for package in ("pipelines", "feature_store", "serving"):
        assert (REPO / package / "__init__.py").is_file(), package
