"""A search model trained on a generated shop: the re-ranker, save/load, reasons, the
commands, and the benchmark's methods on the same queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.errors import ShopMLError
from pipelines.evaluation.search_benchmark import METHODS
from pipelines.evaluation.search_benchmark import run as benchmark
from pipelines.evaluation.search_eval import evaluate_search
from pipelines.search.config import SearchConfig
from pipelines.search.model import SearchModel, run_file, train
from pipelines.search.text import words
from pipelines.settings import load_settings
from tests.conftest import Shop

runner = CliRunner()
ENV = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def model(small_shop: Shop) -> SearchModel:
    return train(small_shop.path, SearchConfig())  # labels auto: the shop's click log


def test_training_on_the_query_log_keeps_the_shoppers_profiles(model: SearchModel) -> None:
    assert model.booster is not None
    assert model.info["labels"].startswith("query log:")
    assert 0 < model.info["first_stage_ndcg_at_10"] <= 1
    assert model.info["ranker_rounds"] >= SearchConfig().min_rounds
    assert model.index.intent.counts and model.index.popularity.sum() > 0
    assert model.profiles is not None and len(model.profiles.user_row) > 100


def test_training_on_judgments_when_asked(small_shop: Shop) -> None:
    m = train(small_shop.path, SearchConfig(labels="judgments"))
    assert m.booster is not None and m.profiles is None
    assert m.info["labels"].startswith("judgments:")


def test_personal_features_reorder_for_a_shopper_with_an_affinity(model: SearchModel) -> None:
    assert model.profiles is not None
    prof = model.profiles
    # the shopper with the most events, and a query for their favourite brand's category
    u = max(prof.user_row, key=lambda k: prof.events[prof.user_row[k]])
    brand_row = prof.brand.getrow(prof.user_row[u])
    assert brand_row.nnz
    items = model.index.items
    moved = 0
    for leaf in items["category"].value_counts().index[:15]:
        text = str(leaf).split("/")[-1]
        anon, c = model.search(text, k=10)
        again, _ = model.search(text, k=10)
        pd.testing.assert_frame_equal(anon, again)  # anonymous answers are stable
        mine, _ = model.search(text, k=10, user=u)
        nobody, _ = model.search(text, k=10, user="no-such-shopper")
        pd.testing.assert_frame_equal(anon, nobody)  # unknown = anonymous
        moved += list(mine["item_id"]) != list(anon["item_id"])
        p = model.personal(u, c.items)
        assert p is not None and np.isfinite(p[:, 0]).all()
    assert moved > 0  # the known shopper's interests change some orders


def test_saved_model_answers_the_same(model: SearchModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    again = SearchModel.load(tmp_path / "m")
    title = str(model.index.items["title"].iat[0])
    for q in (title, title.lower()[:-1], "zzqq"):
        a, _ = model.search(q, k=10)
        b, _ = again.search(q, k=10)
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ShopMLError, match="not empty"):
        model.save(tmp_path / "m")


def test_results_reasons_and_paging(model: SearchModel) -> None:
    title = str(model.index.items["title"].iat[3])
    res, c = model.search(title, k=5, explain=True)
    assert len(res) == 5 and c.fallback is None
    assert list(res["rank"]) == [1, 2, 3, 4, 5]
    assert (np.diff(res["score"].to_numpy()) <= 1e-12).all()
    assert "in the title" in res["reasons"].iat[0]
    page2, _ = model.search(title, k=5, offset=5)
    assert list(page2["rank"]) == [6, 7, 8, 9, 10]
    assert not set(page2["item_id"]) & set(res["item_id"])
    with pytest.raises(ShopMLError, match="k must be"):
        model.search(title, k=0)


def test_the_learned_ranker_beats_bm25_on_held_out_queries(small_shop: Shop) -> None:
    doc, runs = benchmark(small_shop.path, SearchConfig(), folds=3)
    m = doc["metrics"]
    assert set(m) == set(METHODS) and set(runs["method"]) == set(METHODS)
    assert m["learned"]["ndcg"]["mean"] > m["bm25"]["ndcg"]["mean"]
    assert m["learned"]["ndcg_minus_bm25"]["low"] > 0  # paired interval above 0
    assert m["hybrid"]["ndcg"]["mean"] >= m["semantic"]["ndcg"]["mean"]
    assert m["learned"]["zero_result"]["mean"] == 0.0
    # every tuned method's lists come from the fold that held the query out
    tuned = runs[runs["method"] == "learned"]
    assert tuned.groupby("query")["fold"].nunique().max() == 1
    assert sorted(tuned["fold"].unique()) == [0, 1, 2]


def test_search_commands(small_shop: Shop, tmp_path: Path) -> None:
    out = tmp_path / "model"
    res = runner.invoke(
        app, ["search", "train", "--snapshot", str(small_shop.path), "--out", str(out)], env=ENV
    )
    assert res.exit_code == 0, res.output
    assert "re-ranker" in res.output and (out / "ranker.txt").is_file()
    res = runner.invoke(
        app, ["search", "train", "--snapshot", str(small_shop.path), "--out", str(out)], env=ENV
    )
    assert res.exit_code == 2 and "--overwrite" in res.output

    model = SearchModel.load(out)
    title = str(model.index.items["title"].iat[0]).lower()
    word = max(words(title), key=len)
    typo = word[0] + word[2] + word[1] + word[3:]
    res = runner.invoke(
        app, ["search", "query", "--model", str(out), typo, "--explain", "--k", "3"], env=ENV
    )
    assert res.exit_code == 0, res.output
    assert "fallback corrected" in res.output and word in res.output

    queries = tmp_path / "q.csv"
    pd.DataFrame({"query": [title, "zzqq"], "user_id": ["u1", ""]}).to_csv(queries, index=False)
    runs = tmp_path / "runs.parquet"
    res = runner.invoke(
        app,
        ["search", "run", "--model", str(out), "--queries", str(queries), "--out", str(runs)],
        env=ENV,
    )
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(runs)
    assert list(got.columns) == ["query", "user_id", "rank", "item_id", "score", "fallback"]
    assert len(got) == 20 and set(got["fallback"].dropna()) <= {"popular", "category", "relaxed"}

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["x"]}).to_csv(bad, index=False)
    res = runner.invoke(
        app,
        ["search", "run", "--model", str(out), "--queries", str(bad), "--out", str(runs)],
        env=ENV,
    )
    assert res.exit_code == 2 and "bad.csv" in res.output and "query" in res.output
    empty = tmp_path / "empty.csv"
    empty.write_text('query\nshoes\n""\n')
    res = runner.invoke(
        app,
        ["search", "run", "--model", str(out), "--queries", str(empty), "--out", str(runs)],
        env=ENV,
    )
    assert res.exit_code == 2 and "row 3, column query" in res.output
    res = runner.invoke(
        app,
        [
            "search",
            "run",
            "--model",
            str(out),
            "--queries",
            str(queries),
            "--out",
            str(tmp_path / "x.txt"),
        ],
        env=ENV,
    )
    assert res.exit_code == 2 and "--out" in res.output


def test_benchmark_command_writes_results_and_runs(small_shop: Shop, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[search]\nrerank = true\nmin_rounds = 20\n")
    res = runner.invoke(
        app,
        ["benchmark", "search", "--snapshot", str(small_shop.path), "--folds", "2", "--config", str(cfg),
         "--out", str(tmp_path / "r.json"), "--runs-out", str(tmp_path / "runs.csv")],
        env=ENV,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["config"]["min_rounds"] == 20 and doc["machine"]["cores"] >= 1
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs.columns) == ["method", "fold", "query", "rank", "item_id", "score"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nfusion = 'sum'\n")
    res = runner.invoke(
        app,
        ["benchmark", "search", "--snapshot", str(small_shop.path), "--config", str(bad)],
        env=ENV,
    )
    assert res.exit_code == 2 and "fusion must be one of" in res.output


def test_run_file_of_a_model_without_judgments(tmp_path: Path, small_shop: Shop) -> None:
    cfg = SearchConfig(rerank=False, tune=False)
    m = train(small_shop.path, cfg)
    assert m.booster is None
    q = tmp_path / "q.csv"
    pd.DataFrame({"query": ["anything at all"]}).to_csv(q, index=False)
    out = run_file(m, q, k=4)
    assert len(out) == 4 and out["user_id"].isna().all()


def test_a_shops_own_catalog_and_judgments_import_and_train(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text(
        "sku,name,maker,dept,cost\n"
        "a1,Trail running shoe,Salomon,Sports/Shoes,95\n"
        "a2,Road running shoe,Nike,Sports/Shoes,80\n"
        "a3,Leather boot,Clarks,Fashion/Shoes,120\n"
        "a4,Wireless mouse,Logitech,Electronics/Mice,25\n"
        "a5,Mouse pad,,Electronics/Accessories,9\n"
    )
    (tmp_path / "judged.csv").write_text(
        "q,sku,grade\nrunning shoe,a1,3\nrunning shoe,a2,3\nrunning shoe,a3,1\nrunning shoe,a4,0\n"
        "mouse,a4,3\nmouse,a5,2\nmouse,a1,0\nboots,a3,3\nboots,a1,1\nshoe,a2,2\nshoe,a3,2\n"
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "source: myshop\n"
        "tables:\n"
        "  items:\n    path: products.csv\n    columns:\n"
        "      item_id: sku\n      title: name\n      brand: maker\n      category: dept\n"
        "      price: cost\n      currency: {default: EUR}\n"
        "      created_ts: {default: '2024-01-01T00:00:00Z'}\n"
        "  judgments:\n    path: judged.csv\n    columns:\n"
        "      query: q\n      item_id: sku\n      relevance: grade\n"
    )
    res = runner.invoke(
        app,
        ["data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "snap")],
        env=ENV,
    )
    assert res.exit_code == 0, res.output
    assert "search snapshot" in res.output
    m = train(tmp_path / "snap", SearchConfig(min_data_in_leaf=1, min_rounds=5))
    # one of the four judged queries is in the evaluation share (a hash of its text)
    assert m.info["labels"].startswith("judgments: 3 queries") and m.booster is not None
    assert "(1 held out for evaluation)" in m.info["labels"]
    ev = evaluate_search(
        model_uri=str(m.save(tmp_path / "model")), snapshot_uri=tmp_path / "snap",
        settings=load_settings(), use_champion=False, log_to_mlflow=False, out_dir=tmp_path / "ev",
    )  # fmt: skip
    assert ev.eval_set.describe()["judged_queries"] == 1
    assert ev.eval_set.describe()["log_queries"] == 0
    assert not ev.blessed and "too few queries to judge" in ev.verdict["reasons"][0]
    first_stage = train(tmp_path / "snap", SearchConfig(rerank=False))
    out, _ = first_stage.search("running shoes", k=2, explain=True)
    assert set(out["item_id"]) == {"a1", "a2"}
    assert out["category"].iat[0] == "Sports/Shoes"  # the shop's own categories and brands kept
    # a mapping with users but no events is still refused
    mapping.write_text(
        mapping.read_text() + "  users:\n    path: judged.csv\n    columns:\n      user_id: q\n"
    )
    res = runner.invoke(
        app,
        ["data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "s2")],
        env=ENV,
    )
    assert res.exit_code == 2 and "missing table(s) ['events']" in res.output


def test_the_query_log_protocol_scores_every_method_on_held_out_days(
    small_shop: Shop, tmp_path: Path
) -> None:
    res = runner.invoke(
        app,
        ["benchmark", "search", "--snapshot", str(small_shop.path), "--protocol", "log",
         "--holdout-days", "7", "--out", str(tmp_path / "r.json"), "--runs-out", str(tmp_path / "runs.csv")],
        env=ENV,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    m = doc["metrics"]
    assert set(m) == {"bm25", "hybrid", "learned", "personal"}
    assert doc["train_queries"] > doc["test_queries"] > 20
    assert m["learned"]["ndcg"]["mean"] > m["bm25"]["ndcg"]["mean"]
    assert {"misspelled", "correctly_spelled", "returning"} <= set(doc["slices"])
    runs = pd.read_csv(tmp_path / "runs.csv")
    answered = runs.groupby("method")["query"].nunique()
    assert (answered.drop("bm25") == doc["test_queries"]).all()  # never empty
    assert m["personal"]["zero_result"]["mean"] == 0.0
    assert answered["bm25"] <= doc["test_queries"]  # plain BM25 finds nothing for some typos
    res = runner.invoke(
        app,
        ["benchmark", "search", "--snapshot", str(small_shop.path), "--protocol", "nope"],
        env=ENV,
    )
    assert res.exit_code == 2 and "--protocol" in res.output
