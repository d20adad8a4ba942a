"""The search model's lifecycle on a generated shop: trained before the held-out part,
registered as ``shopml-search``, evaluated against its baselines and its champion, gated,
and promoted to the serving bucket only with its own approval."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ConfigError, ShopMLError
from pipelines.evaluation.gate import Check, GateConfig
from pipelines.evaluation.search_eval import (
    ANONYMOUS,
    BM25,
    CHALLENGER,
    HYBRID,
    SearchEvalConfig,
    evaluate_search,
)
from pipelines.promotion.bucket import open_bucket
from pipelines.promotion.promote import Review, ledger_entries, promote, rollback, served_version
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL, load_search, register_search
from pipelines.search.config import SearchConfig
from pipelines.search.labels import held_out, judged, split_judged
from pipelines.search.model import SearchModel, prepare, train
from pipelines.settings import Settings, load_settings
from tests.conftest import Shop
from tests.shops import in_dag_run, mlflow_client

pytestmark = pytest.mark.slow
runner = CliRunner()
ENV = {"COLUMNS": "200"}
PASS_ALL = SearchEvalConfig(gate=GateConfig([Check("ndcg@10", min=0.0)], min_users=10))


def approval(run: str, task: str = "await_search_review") -> Review:
    return Review(
        "shopml_retrain", run, task, True, ("Approve",), "reviewer",
        "2026-12-04T10:00:00+00:00", ("reviewer",), "search ok",
    )  # fmt: skip


class Lifecycle:
    """Two search versions of the small shop: v1 (the default model), v2 (fewer rounds),
    each evaluated in its own simulated DAG run; v1 promoted."""

    def __init__(self, shop: Shop, root: Path) -> None:
        self.shop = shop
        self.settings: Settings = replace(
            load_settings({"SHOPML_HOME": str(root / "home")}), reviewers=("reviewer",)
        )
        self.model = train(shop.path, SearchConfig())
        self.v1 = register_search(self.model, settings=self.settings).version
        with in_dag_run("run-1"):
            self.eval1 = evaluate_search(
                model_uri=f"models:/{SEARCH_MODEL}/{self.v1}",
                snapshot_uri=shop.path,
                settings=self.settings,
                out_dir=root / "eval-1",
            )
        self.promoted = promote(
            version=self.v1, settings=self.settings, review=approval("run-1"), name=SEARCH_MODEL
        )
        weak = train(shop.path, SearchConfig(max_rounds=3, min_rounds=1, early_stopping_rounds=3))
        self.v2 = register_search(weak, settings=self.settings).version
        with in_dag_run("run-2"):
            self.eval2 = evaluate_search(
                model_uri=f"models:/{SEARCH_MODEL}/{self.v2}",
                snapshot_uri=shop.path,
                settings=self.settings,
                cfg=PASS_ALL,
                out_dir=root / "eval-2",
            )


@pytest.fixture(scope="module")
def life(small_shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    return Lifecycle(small_shop, tmp_path_factory.mktemp("search-life"))


def test_training_stops_before_the_held_out_queries(small_shop: Shop, life: Lifecycle) -> None:
    es = life.eval1.eval_set
    assert life.model.info["train_until"] == es.start  # the log's last 7 days are held out
    q = small_shop.queries
    assert life.model.info["query_log_rows"] == int((q["ts"] < pd.Timestamp(es.start)).sum())
    # the judged evaluation share is the same for every snapshot: a hash of the text
    j = judged(Snapshot.open(small_shop.path), life.model.index)
    train_j, test_j = split_judged(j, 0.2)
    assert {q for q in test_j.queries} == {q for q in j.queries if held_out(q, 0.2)}
    assert not set(train_j.queries) & set(test_j.queries)
    assert 0 < len(test_j.queries) < len(j.queries) / 2
    judged_keys = [k for k, s in zip(es.keys, es.source, strict=True) if s == "judged"]
    assert sorted(judged_keys) == sorted(f"judged:{q}" for q in test_j.queries)


def test_the_evaluation_scores_the_baselines_and_slices_on_the_same_queries(
    life: Lifecycle,
) -> None:
    ev = life.eval1
    assert set(ev.values) == {BM25, HYBRID, ANONYMOUS, CHALLENGER}
    for method in ev.values.values():
        assert set(method["all"]) >= {"ndcg@10", "mrr@10", "recall@10", "zero_result@10"}
    assert ev.values[CHALLENGER]["all"]["ndcg@10"] > ev.values[BM25]["all"]["ndcg@10"]
    slices = set(ev.values[CHALLENGER])
    assert {
        "log",
        "judged",
        "head",
        "tail",
        "misspelled",
        "correctly_spelled",
        "returning",
        "new",
    } <= slices
    assert any(s.startswith("category=") for s in slices)
    runs = pd.read_csv(ev.out_dir / "runs.csv")
    assert set(runs["method"]) == set(ev.values)
    # every method answered the same queries (BM25 answers nothing for some: zero results)
    listed = runs.groupby("method")["query_key"].nunique()
    assert listed[CHALLENGER] == listed[HYBRID] == len(ev.eval_set)
    zero = ev.values[BM25]["all"]["zero_result@10"]
    assert listed[BM25] == pytest.approx(len(ev.eval_set) * (1 - zero))
    metrics = json.loads((ev.out_dir / "metrics.json").read_text())
    iv = metrics["methods"][CHALLENGER]["all|ndcg@10"]
    assert iv["low"] <= iv["mean"] <= iv["high"]


def test_the_first_verdict_blesses_against_the_baselines_without_a_champion(
    life: Lifecycle,
) -> None:
    v = life.eval1.verdict
    assert v["blessed"] is True and v["champion"] is None
    assert v["model"] == {
        "uri": f"models:/{SEARCH_MODEL}/{life.v1}", "name": SEARCH_MODEL, "version": life.v1,
        "bundle_sha256": v["model"]["bundle_sha256"],
    }  # fmt: skip
    assert v["dag_run"] == "run-1"
    assert any("best baseline" in r and "pass" in r for r in v["reasons"])
    assert (life.eval1.out_dir / "verdict.sig").is_file()


def test_the_report_shows_champion_and_challenger_top_10_side_by_side(life: Lifecycle) -> None:
    page = (life.eval2.out_dir / "report.html").read_text()
    assert life.eval2.verdict["champion"]["version"] == life.v1
    assert "<th>champion</th><th>challenger</th>" in page
    some_title = str(life.model.index.items["title"].iloc[0])
    assert page.count("<ol>") >= 2 * 3  # a few sample queries, two lists each
    titles = set(life.model.index.items["title"].astype(str))
    assert sum(t in page for t in titles) >= 10, some_title
    assert "challenger − champion" in page
    assert "ndcg@10" in (life.eval2.out_dir / "summary.md").read_text()


def test_promotion_moves_the_search_pointer_and_leaves_the_recommender_alone(
    life: Lifecycle,
) -> None:
    assert life.promoted.changed and served_version(life.settings, SEARCH_MODEL) == life.v1
    bucket = open_bucket(life.settings.serving_bucket_uri, life.settings.s3_endpoint_url)
    assert bucket.get(f"{MODEL_NAME}/current.json") is None
    keys = bucket.keys(f"{SEARCH_MODEL}/versions/{life.v1}")
    rel = {k.split(f"/versions/{life.v1}/", 1)[1] for k in keys}
    assert {"manifest.json", "bundle/model.json", "bundle/ranker.txt", "report/verdict.json"} <= rel
    assert not any(r.startswith("features/") for r in rel)
    client = mlflow_client(life.settings)
    assert int(client.get_model_version_by_alias(SEARCH_MODEL, "champion").version) == life.v1
    (entry,) = ledger_entries(life.settings, SEARCH_MODEL)
    assert entry["model"] == SEARCH_MODEL and entry["approved_by"] == "reviewer"
    # the served bundle loads and answers
    served = SearchModel.load(bucket.root / f"{SEARCH_MODEL}/versions/{life.v1}/bundle")  # type: ignore[attr-defined]
    res, _ = served.search("shoes", k=5)
    assert len(res) == 5


def test_the_recommenders_approval_cannot_promote_search(life: Lifecycle) -> None:
    with pytest.raises(ShopMLError, match="approval of another model"):
        promote(
            version=life.v2, settings=life.settings, review=approval("run-2", "await_review"),
            name=SEARCH_MODEL,
        )  # fmt: skip
    with pytest.raises(ShopMLError, match="unknown model"):
        promote(version=life.v2, settings=life.settings, review=approval("run-2"), name="../x")
    with pytest.raises(ShopMLError, match="unknown model"):
        rollback(to_version=1, reason="bad", settings=life.settings, requested_by="a", name="x")
    assert served_version(life.settings, SEARCH_MODEL) == life.v1


def test_a_gate_that_fails_blocks_the_promotion(life: Lifecycle, tmp_path: Path) -> None:
    strict = SearchEvalConfig(gate=GateConfig([Check("ndcg@10", min=0.999)], min_users=10))
    with in_dag_run("run-3"):
        ev = evaluate_search(
            model_uri=f"models:/{SEARCH_MODEL}/{life.v2}", snapshot_uri=life.shop.path,
            settings=life.settings, cfg=strict, out_dir=tmp_path / "e",
        )  # fmt: skip
    assert not ev.blessed and any("fail" in r for r in ev.verdict["reasons"])
    with pytest.raises(ShopMLError, match="not blessed"):
        promote(
            version=life.v2, settings=life.settings, review=approval("run-3"), name=SEARCH_MODEL
        )
    assert served_version(life.settings, SEARCH_MODEL) == life.v1


def test_a_model_that_saw_the_held_out_queries_is_refused(life: Lifecycle, tmp_path: Path) -> None:
    end = pd.Timestamp(life.eval1.eval_set.end).timestamp()
    leaky = prepare(life.shop.path, SearchConfig(rerank=False), until=end)
    folder = leaky.save(tmp_path / "leaky")
    with pytest.raises(ShopMLError, match="has seen the held-out queries"):
        evaluate_search(
            model_uri=str(folder), snapshot_uri=life.shop.path, settings=life.settings,
            use_champion=False, log_to_mlflow=False, out_dir=tmp_path / "e",
        )  # fmt: skip
    other = prepare(life.shop.path, SearchConfig(rerank=False, judged_holdout=0.5))
    folder = other.save(tmp_path / "other-share")
    with pytest.raises(ShopMLError, match="judged_holdout"):
        evaluate_search(
            model_uri=str(folder), snapshot_uri=life.shop.path, settings=life.settings,
            use_champion=False, log_to_mlflow=False, out_dir=tmp_path / "e2",
        )  # fmt: skip


def test_the_search_gate_table_is_read_and_checked(tmp_path: Path) -> None:
    cfg_file = tmp_path / "p.toml"
    cfg_file.write_text(
        '[search_gate]\nmin_users = 7\n[[search_gate.checks]]\nmetric = "mrr@10"\nmin = 0.1\n'
    )
    cfg = SearchEvalConfig.from_toml(cfg_file)
    assert cfg.gate.min_users == 7 and [c.metric for c in cfg.gate.checks] == ["mrr@10"]
    cfg_file.write_text("[search_gate]\nmin_user = 7\n")
    with pytest.raises(ConfigError, match="min_user"):
        SearchEvalConfig.from_toml(cfg_file)
    cfg_file.write_text('[[search_gate.checks]]\nmetric = "ndcg@20"\nmin = 0.1\n')
    with pytest.raises(ConfigError, match="k=10"):
        SearchEvalConfig.from_toml(cfg_file)
    defaults = SearchEvalConfig.from_toml(None)
    assert defaults.gate.min_users == 50
    assert {c.metric for c in defaults.gate.checks} == {"ndcg@10", "mrr@10", "recall@10"}


def test_search_commands_with_registry_uris(life: Lifecycle, tmp_path: Path) -> None:
    env = {**ENV, "SHOPML_HOME": str(life.settings.home)}
    uri = f"models:/{SEARCH_MODEL}@champion"
    res = runner.invoke(
        app, ["search", "query", "running shoes", "--model", uri, "--k", "3"], env=env
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") >= 3
    out = tmp_path / "ev"
    res = runner.invoke(
        app,
        ["search", "evaluate", "--model", f"models:/{SEARCH_MODEL}/{life.v1}", "--snapshot",
         str(life.shop.path), "--no-champion", "--out", str(out)],
        env=env,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "bm25" in res.output and "hybrid" in res.output and "blessed" in res.output
    assert (out / "report.html").is_file()
    res = runner.invoke(
        app, ["search", "evaluate", "--model", f"models:/{MODEL_NAME}/1", "--snapshot",
              str(life.shop.path)], env=env,
    )  # fmt: skip
    assert res.exit_code != 0
    res = runner.invoke(
        app, ["search", "query", "x", "--model", "models:/shopml-search/99"], env=env
    )
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "shopml-search/99" in res.output
    loaded = load_search(f"models:/{SEARCH_MODEL}/{life.v1}", life.settings)
    assert loaded.info["snapshot_id"] == life.model.info["snapshot_id"]


def test_train_register_command(small_shop: Shop, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**ENV, "SHOPML_HOME": str(home)}
    res = runner.invoke(
        app,
        ["search", "train", "--snapshot", str(small_shop.path), "--out", str(tmp_path / "m"),
         "--train-until", "2026-02-01T00:00:00Z", "--register"],
        env=env,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "trained until 2026-02-01T00:00:00+00:00" in res.output
    assert "models:/shopml-search/1" in res.output
    res = runner.invoke(
        app, ["search", "train", "--snapshot", str(small_shop.path), "--train-until", "soon"],
        env=env,
    )  # fmt: skip
    assert res.exit_code != 0 and "--train-until" in res.output
