"""Every command meets a path that loops, a table cut short and a folder where a file
belongs with one message and exit code 2 (1 where the command's answer is "no": a
quarantined snapshot), never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.generator import GeneratorConfig, generate_shop

runner = CliRunner()
TINY = GeneratorConfig(users=200, items=120, events=4_000, days=20, judged_queries=5, seed=5)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    loop = root / "loop"
    loop.symlink_to(root / "loop")  # a link to itself
    folder = root / "a-folder"
    folder.mkdir()
    shop = root / "shop"
    generate_shop(TINY, out=shop)
    cut = root / "cut"
    shutil.copytree(shop, cut)
    events = cut / "events.parquet"
    events.write_bytes(events.read_bytes()[: events.stat().st_size // 3])
    return {"loop": loop, "folder": folder, "cut": cut, "shop": shop}


def _commands(p: dict[str, Path], bad: Path) -> list[list[str]]:
    return [
        ["data", "import", "movielens-100k", str(bad), "--out", str(p["folder"].parent / "o1")],
        ["data", "import", "csv", "--mapping", str(bad)],
        ["data", "import", "judgments", str(bad), "--out", str(p["folder"].parent / "o2")],
        ["data", "describe", str(bad)],
        ["validate", str(bad)],
        ["validate", str(p["shop"]), "--config", str(bad)],
        ["features", "build", str(bad)],
        ["train", "--snapshot", str(bad)],
        ["train", "--snapshot", str(p["shop"]), "--config", str(bad)],
        ["evaluate", "--model", str(bad), "--snapshot", str(p["shop"])],
        ["evaluate", "--model", "models:/shopml-recommender/1", "--snapshot", str(bad)],
        ["recommend", "--model", str(bad), "--users", str(bad), "--out", str(p["folder"].parent / "r.csv")],
        ["search", "train", "--snapshot", str(bad), "--out", str(p["folder"].parent / "s1")],
        ["search", "query", "--model", str(bad), "shoes"],
        ["search", "run", "--model", str(bad), "--queries", str(bad), "--out", str(p["folder"].parent / "s.csv")],
        ["benchmark", "search", "--snapshot", str(bad)],
        ["data", "import", "events-log", str(bad), "--base", str(p["shop"]), "--out", str(p["folder"].parent / "e1")],
        ["data", "import", "events-log", str(p["folder"]), "--base", str(bad), "--out", str(p["folder"].parent / "e2")],
    ] + ([["data", "generate", "--out", str(bad)]] if bad.is_symlink() else [])  # fmt: skip
    # (an empty folder is a fine --out for `data generate`)


@pytest.mark.parametrize("kind", ["loop", "folder"])
def test_a_looping_link_or_a_folder_for_a_file_is_one_message(
    paths: dict[str, Path], kind: str
) -> None:
    for args in _commands(paths, paths[kind]):
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 2, (args, res.output, res.exception)
        assert "Traceback" not in res.output and "error:" in res.output, (args, res.output)
        assert str(paths[kind]) in "".join(res.output.split()), (args, res.output)  # names it


def test_a_table_cut_short_is_one_message(paths: dict[str, Path]) -> None:
    cut = str(paths["cut"])
    for args in (
        ["data", "describe", cut],
        ["features", "build", cut],
        ["train", "--snapshot", cut],
    ):
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 2, (args, res.output, res.exception)
        assert "error:" in res.output and "Traceback" not in res.output, (args, res.output)
        if args[0] == "data" or args[0] == "train":
            assert "events.parquet" in res.output, (args, res.output)
    res = runner.invoke(app, ["validate", cut], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "quarantined" in res.output  # validation's answer is "no"
