"""Lower packages never import higher ones, in the order of the data flow:

base (settings, errors, io, progress) <- data <- validation <- features (+ feature_store)
<- candidates <- ranking <- recommender | search <- registry <- evaluation <- promotion
<- privacy <- serving | orchestration <- cli

Packages on one level (recommender and search, serving and orchestration) do not import
each other either, and the DAG files import only ``pipelines.orchestration``. Every import
counts: at the top, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LEVELS: dict[str, int] = {
    "base": 0,
    "data": 1,
    "validation": 2,
    "features": 3,
    "candidates": 4,
    "ranking": 5,
    "recommender": 6,
    "search": 6,
    "registry": 7,
    "evaluation": 8,
    "promotion": 9,
    "privacy": 10,
    "serving": 11,
    "orchestration": 11,
    "cli": 12,
}
BASE = {"settings", "errors", "io", "progress", "keys"}
_SUB = BASE | set(LEVELS)


def package_of(module: str) -> str | None:
    """The layer package of a ShopML module name (None for anything else)."""
    parts = module.split(".")
    if parts[0] == "feature_store":  # the Feast repository: the features layer
        return "features"
    if parts[0] == "serving":
        return "serving"
    if parts[0] != "pipelines":
        return None
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    if parts[1] not in LEVELS:
        raise AssertionError(f"{module}: pipelines/{parts[1]} is in no layer; add it to LEVELS")
    return parts[1]


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source`` (relative ones resolved)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from pipelines import report` names a module too
            if name == "pipelines":
                found += [
                    (node.lineno, f"pipelines.{a.name}") for a in node.names if a.name in _SUB
                ]
    return found


def violations(module: str, source: str) -> list[str]:
    """Imports of ``module`` (its source given) that break the layering."""
    own = package_of(module)
    out = []
    for line, imported in imports_of(source, module):
        target = package_of(imported)
        if own is None or target is None or target == own:
            continue
        if LEVELS[target] > LEVELS[own]:
            out.append(f"{module}:{line} imports {imported} (a higher layer: {target} > {own})")
        elif LEVELS[target] == LEVELS[own]:
            out.append(f"{module}:{line} imports {imported} (a sibling layer: {target})")
    return out


def _modules() -> list[tuple[str, Path]]:
    out = []
    for root in ("pipelines", "feature_store", "serving"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join(parts), path))
    return out


def test_no_package_imports_a_higher_or_sibling_layer() -> None:
    problems = [
        problem for module, path in _modules() for problem in violations(module, path.read_text())
    ]
    assert problems == []


def test_every_pipelines_package_has_a_layer() -> None:
    for module, _ in _modules():
        package_of(module)


def test_dag_files_import_only_orchestration() -> None:
    for path in sorted((REPO / "dags").glob("*.py")):
        for line, imported in imports_of(path.read_text(), path.stem):
            if package_of(imported) is not None:
                assert imported.startswith("pipelines.orchestration"), f"{path.name}:{line}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("pipelines.data.snapshot", "from pipelines.evaluation import gate\n", "higher layer"),
        ("pipelines.features.build", "import pipelines.orchestration.steps\n", "higher layer"),
        ("pipelines.ranking.x", "def f():\n    from pipelines.recommender import rows\n", "higher"),
        ("pipelines.recommender.rows", "from pipelines.search import index\n", "sibling layer"),
        ("serving.app", "from pipelines.orchestration import demo\n", "sibling layer"),
        ("pipelines.data.snapshot", "from ..evaluation import gate\n", "higher layer"),
        ("pipelines.evaluation.gate", "from pipelines import io, settings\n", None),
        ("pipelines.cli.data", "from pipelines.orchestration.config import PipelineConfig\n", None),
    ],
)
def test_the_checker_sees_an_upward_import(module: str, source: str, expected: str | None) -> None:
    found = violations(module, source)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0]
