"""`shopml evaluate` on a small generated shop: the frozen set, scores, verdict, report, MLflow."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.contract import DEFAULT_GRADES
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import snapshot_end
from pipelines.errors import ShopMLError
from pipelines.evaluation.evalset import EvalConfig, freeze_eval_set
from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.evaluation.scoring import category_groups, intervals, popularity_lists
from pipelines.io import sha256_file
from pipelines.ranking.metrics import ranking_metrics
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.challenger import train_challenger
from pipelines.registry.models import MODEL_NAME, load_recommender
from pipelines.settings import load_settings
from tests.conftest import shared_data
from tests.shops import LIGHT, TrainedShop, mlflow_client

# Every test here uses a trained model (the shared trained shop, or one of its own).
pytestmark = pytest.mark.slow


class Shop:
    """The shared trained shop, its strong model registered as version 1 in this home."""

    def __init__(self, trained: TrainedShop, root: Path) -> None:
        self.trained = trained
        self.snapshot = trained.snapshot
        self.settings = load_settings({"SHOPML_HOME": str(root / "home")})
        self.first = trained.register(self.settings)


@pytest.fixture(scope="module")
def shop(trained_shop: TrainedShop, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return Shop(trained_shop, tmp_path_factory.mktemp("evaluate"))


def _copy(shop: Shop, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(shop.snapshot, target, ignore=shutil.ignore_patterns("evaluation"))
    return target


def test_training_holds_out_the_evaluation_window(shop: Shop) -> None:
    end = snapshot_end(Snapshot.open(shop.snapshot))
    assert shop.first.until == end - timedelta(days=EvalConfig().holdout_days)


def test_eval_set_is_the_windows_new_graded_interactions(shop: Shop, tmp_path: Path) -> None:
    snapshot = _copy(shop, tmp_path)
    es = freeze_eval_set(snapshot, EvalConfig(repeats="excluded"))
    end = snapshot_end(Snapshot.open(snapshot))
    start = end - timedelta(days=7)
    assert (es.start, es.end) == (start, end)
    ev = pd.read_parquet(snapshot / "events.parquet")
    before = ev[ev["ts"] < pd.Timestamp(start)]
    inside = ev[(ev["ts"] >= pd.Timestamp(start)) & (ev["ts"] < pd.Timestamp(end))]
    inside = inside.assign(relevance=inside["event_type"].map(DEFAULT_GRADES))
    expected = inside.groupby(["user_id", "item_id"], as_index=False)["relevance"].max()
    seen = set(zip(before["user_id"], before["item_id"], strict=True))
    expected = expected[
        [p not in seen for p in zip(expected["user_id"], expected["item_id"], strict=True)]
    ]
    got = es.truth.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    want = expected.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert set(es.users["user_id"]) == set(want["user_id"])
    new = ~es.users["user_id"].isin(before["user_id"])
    assert (es.users["new"].to_numpy() == new.to_numpy()).all()
    assert (es.users.loc[es.users["new"], "segment"] == -1).all()
    touched = before.groupby("item_id")["user_id"].nunique()
    items = es.items.set_index("item_id")
    assert (items["history_users"] == touched.reindex(items.index, fill_value=0)).all()
    assert (items["cold"] == (items["history_users"] == 0)).all()
    # frozen: the second call reads the same rows under the same hash
    again = freeze_eval_set(snapshot, EvalConfig(repeats="excluded"))
    assert again.hash == es.hash
    pd.testing.assert_frame_equal(again.truth, es.truth)
    with pytest.raises(ShopMLError, match="repeats 'excluded'"):
        freeze_eval_set(snapshot, EvalConfig(repeats="allowed"))


def test_repeats_decide_whether_a_rebought_item_is_a_hit(shop: Shop, tmp_path: Path) -> None:
    """allowed: an item bought before and again in the window is in the truth; excluded:
    never; auto: only where the candidates' repeat policy allows it (and then the
    buy-again baseline finds it)."""
    sets = {
        mode: freeze_eval_set(_copy(shop, tmp_path / mode), EvalConfig(repeats=mode))
        for mode in ("allowed", "excluded", "auto")
    }
    pairs = {
        m: set(zip(es.truth["user_id"], es.truth["item_id"], strict=True)) for m, es in sets.items()
    }
    seen = sets["allowed"].seen
    seen_pairs = set(zip(seen["user_id"], seen["item_id"], strict=True))
    again = pairs["allowed"] & seen_pairs
    assert again, "the generated shop has shoppers who buy an item again"
    assert not pairs["excluded"] & seen_pairs
    assert pairs["allowed"] - again == pairs["excluded"]
    auto = sets["auto"]
    allowed = set(auto.seen.loc[auto.seen["allowed"], "item_id"])
    assert 0 < len(allowed) < auto.items.shape[0], "consumables allowed, durables not"
    assert {p for p in pairs["auto"] & seen_pairs} == {p for p in again if p[1] in allowed}
    assert auto.describe()["repeats"]["repeats"] == "auto"
    # a re-bought item is a hit for a list that shows it
    from pipelines.evaluation.scoring import buy_again_lists, popularity_lists, score_lists

    cfg = EvalConfig(repeats="auto")
    lists = buy_again_lists(auto, 10)
    first = lists.groupby("user_id").head(1)
    regulars = auto.seen[auto.seen["allowed"] & (auto.seen["buys"] >= 2)]
    top = regulars.sort_values(["user_id", "buys", "last_ts"], ascending=[True, False, False])
    top = top.groupby("user_id").head(1).set_index("user_id")["item_id"]
    assert (first.set_index("user_id")["item_id"].reindex(top.index) == top).all()
    assert (
        score_lists(lists, auto, cfg, label="b").values["all"]["ndcg@10"]
        > score_lists(popularity_lists(auto, 10), auto, cfg, label="p").values["all"]["ndcg@10"]
    )


def test_a_changed_eval_set_or_other_settings_are_refused(shop: Shop, tmp_path: Path) -> None:
    snapshot = _copy(shop, tmp_path)
    es = freeze_eval_set(snapshot, EvalConfig())
    with pytest.raises(
        ShopMLError, match=r"frozen with other settings: holdout_days 7.0 \(asked 10.0\)"
    ):
        freeze_eval_set(snapshot, EvalConfig(holdout_days=10))
    # scoring settings (k, bootstrap, ...) do not change the rows: allowed
    assert freeze_eval_set(snapshot, EvalConfig(k=[3, 10], bootstrap=200)).hash == es.hash
    es.truth.iloc[1:].to_parquet(es.folder / "truth.parquet", index=False)
    with pytest.raises(ShopMLError, match=r"changed after it was frozen \(truth.parquet differs"):
        freeze_eval_set(snapshot, EvalConfig())


def test_a_sample_of_max_users_is_seeded(shop: Shop, tmp_path: Path) -> None:
    a = freeze_eval_set(_copy(shop, tmp_path / "a"), EvalConfig(max_users=50))
    b = freeze_eval_set(_copy(shop, tmp_path / "b"), EvalConfig(max_users=50))
    assert len(a.users) == 50
    assert a.users["user_id"].tolist() == b.users["user_id"].tolist()
    assert a.hash == b.hash
    assert set(a.truth["user_id"]) == set(a.users["user_id"])


def test_popularity_baseline_ranks_by_shoppers_and_skips_seen_items(
    shop: Shop, tmp_path: Path
) -> None:
    es = freeze_eval_set(_copy(shop, tmp_path), EvalConfig())
    lists = popularity_lists(es, 10)
    assert lists.groupby("user_id").size().eq(10).all()
    banned = es.seen[~es.seen["allowed"]]
    never = set(zip(banned["user_id"], banned["item_id"], strict=True))
    assert not any(p in never for p in zip(lists["user_id"], lists["item_id"], strict=True))
    new_user = es.users.loc[es.users["new"], "user_id"].iloc[0]
    available = es.items[es.items["available"]].sort_values(
        ["history_users", "item_id"], ascending=[False, True]
    )
    assert (
        lists.loc[lists["user_id"] == new_user, "item_id"].tolist()
        == available["item_id"].head(10).tolist()
    )


def test_evaluate_without_a_champion(shop: Shop) -> None:
    result = evaluate(
        model_uri=f"models:/{MODEL_NAME}@challenger",
        snapshot_uri=shop.snapshot,
        settings=shop.settings,
    )
    es = result.eval_set
    assert result.champion is None
    assert result.judgement.notes[0].startswith("no champion yet")
    assert {o.kind for o in result.judgement.outcomes} <= {"value", "baseline"}
    # the scores are the metric functions on the model's own lists
    rec = load_recommender(f"models:/{MODEL_NAME}/1", shop.settings)
    users = es.users
    lists = rec.recommend(
        RecommendRequest(
            users["user_id"].tolist(),
            20,
            age=users["age"].tolist(),
            gender=users["gender"].tolist(),
            region=users["region"].tolist(),
        )
    )
    assert result.challenger.values["all"]["ndcg@10"] == pytest.approx(
        ranking_metrics(lists, es.truth, 10)["ndcg"]
    )
    assert result.challenger.values["all"]["recall@20"] == pytest.approx(
        ranking_metrics(lists, es.truth, 20)["recall"]
    )
    iv = json.loads((result.out_dir / "metrics.json").read_text())["challenger"]["intervals"][
        "all"
    ]["ndcg@10"]
    assert iv["low"] < result.challenger.values["all"]["ndcg@10"] < iv["high"]
    verdict = json.loads((result.out_dir / "verdict.json").read_text())
    assert verdict["blessed"] == result.blessed
    assert verdict["eval_set"]["hash"] == es.hash
    assert verdict["reasons"] == [o.reason for o in result.judgement.outcomes]
    assert verdict["files"]["report.html"] == sha256_file(result.out_dir / "report.html")
    # logged to the challenger's run and tagged on its version
    client = mlflow_client(shop.settings)
    version = client.get_model_version(MODEL_NAME, "1")
    assert result.run_id == version.run_id == shop.first.run_id
    assert version.tags["eval.eval_set_hash"] == es.hash
    assert version.tags["eval.blessed"] == str(result.blessed).lower()
    assert version.tags["eval.champion_version"] == "none"
    assert version.tags["eval.verdict_sha256"] == sha256_file(result.out_dir / "verdict.json")
    run = client.get_run(shop.first.run_id)
    assert run.data.metrics["eval_ndcg_at_10"] == pytest.approx(
        result.challenger.values["all"]["ndcg@10"]
    )
    logged = {
        f.path for f in client.list_artifacts(shop.first.run_id, f"evaluation/{es.hash[:12]}")
    }
    assert {
        f"evaluation/{es.hash[:12]}/{n}"
        for n in ("report.html", "summary.md", "verdict.json", "metrics.json")
    } <= logged


def test_evaluate_against_the_champion_on_the_same_rows(shop: Shop) -> None:
    client = mlflow_client(shop.settings)
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    second = shop.trained.register(shop.settings, weak=True)
    result = evaluate(
        model_uri=f"models:/{MODEL_NAME}@challenger",
        snapshot_uri=shop.snapshot,
        settings=shop.settings,
    )
    assert result.champion is not None and result.champion.version == 1
    assert result.challenger.version == second.version
    assert result.challenger.eval_set_hash == result.champion.eval_set_hash == result.eval_set.hash
    assert list(result.challenger.slices["all"].index) == list(result.champion.slices["all"].index)
    changes = [o for o in result.judgement.outcomes if o.kind == "change"]
    assert changes and all(" vs champion " in o.reason for o in changes)
    ndcg = next(o for o in changes if o.metric == "ndcg@10")
    c, ch = result.challenger.values["all"]["ndcg@10"], result.champion.values["all"]["ndcg@10"]
    assert (ndcg.value, ndcg.reference) == (pytest.approx(c), pytest.approx(ch))
    assert ndcg.passed == ((c - ch) / ch >= -0.01)
    doc = json.loads((result.out_dir / "metrics.json").read_text())
    diff = doc["difference_intervals"]["all"]["ndcg@10"]
    assert diff["mean"] == pytest.approx(c - ch)
    assert diff["low"] <= c - ch <= diff["high"]
    summary = (result.out_dir / "summary.md").read_text()
    assert f"Champion: `models:/{MODEL_NAME}/1`" in summary
    assert ndcg.reason in summary
    tags = client.get_model_version(MODEL_NAME, str(second.version)).tags
    assert tags["eval.champion_version"] == "1"
    # scores from another evaluation set cannot be compared
    other = replace(result.champion, eval_set_hash="0" * 64)
    with pytest.raises(ShopMLError, match="different evaluation sets"):
        intervals(result.challenger, EvalConfig(), other)


def test_the_report_is_one_html_page_with_its_plots(shop: Shop, tmp_path: Path) -> None:
    result = evaluate(
        model_uri=f"models:/{MODEL_NAME}/1",
        snapshot_uri=shop.snapshot,
        settings=shop.settings,
        use_champion=False,
        out_dir=tmp_path / "out",
        log_to_mlflow=False,
    )
    page = (tmp_path / "out" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # metric bars, slice deltas, distributions
    for data in images:
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[1] > 500 and pixels.std() > 0  # a real picture, not blank
    assert 'src="http' not in page and "<script" not in page  # self-contained
    for o in result.judgement.outcomes:
        assert o.reason.replace("'", "&#x27;") in page
    assert result.eval_set.hash[:16] in page
    for name in result.challenger.slices:
        assert f"<td>{name}</td>" in page


def test_a_model_that_saw_the_window_is_refused(shop: Shop, tmp_path: Path) -> None:
    rec = load_recommender(f"models:/{MODEL_NAME}/1", shop.settings)
    rec.ctx.history.now = snapshot_end(Snapshot.open(shop.snapshot)).timestamp()
    rec.save(tmp_path / "bundle")
    with pytest.raises(ShopMLError, match="has seen the held-out interactions"):
        evaluate(
            model_uri=str(tmp_path / "bundle"),
            snapshot_uri=shop.snapshot,
            settings=shop.settings,
            use_champion=False,
        )


def test_cli_evaluate_exit_codes_and_reasons(shop: Shop, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"SHOPML_HOME": str(shop.settings.home), "COLUMNS": "200"}
    args = ["evaluate", "--model", f"models:/{MODEL_NAME}/1", "--snapshot", str(shop.snapshot)]
    strict = tmp_path / "strict.toml"
    strict.write_text('[[gate.checks]]\nmetric = "ndcg@10"\nmin = 0.99\n')
    res = runner.invoke(
        app,
        [*args, "--no-champion", "--no-log", "--config", str(strict), "--out", str(tmp_path / "a")],
        env=env,
    )
    assert res.exit_code == 1, res.output
    assert "NOT BLESSED" in res.output and "needs ≥ 0.990: fail" in res.output
    loose = tmp_path / "loose.toml"
    loose.write_text('[[gate.checks]]\nmetric = "hit_rate@10"\nmin = 0.01\n')
    res = runner.invoke(
        app,
        [
            *args,
            "--champion",
            f"models:/{MODEL_NAME}/2",
            "--no-log",
            "--config",
            str(loose),
            "--out",
            str(tmp_path / "b"),
        ],
        env=env,
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "verdict.json").read_text())["champion"]["version"] == 2
    res = runner.invoke(app, [*args, "--champion", "x", "--no-champion"], env=env)
    assert res.exit_code == 2 and "exclude each other" in res.output
    res = runner.invoke(
        app,
        ["evaluate", "--model", f"models:/{MODEL_NAME}/9", "--snapshot", str(shop.snapshot)],
        env=env,
    )
    assert res.exit_code == 2 and "cannot resolve model" in res.output


@pytest.mark.real_data
def test_evaluate_the_movielens_import_with_and_without_a_champion(tmp_path: Path) -> None:
    from pipelines.data.importers.movielens import import_movielens_100k

    import_movielens_100k(shared_data("movielens-100k"), out=tmp_path / "ml")
    settings = load_settings({"SHOPML_HOME": str(tmp_path / "home")})
    window = EvalConfig(holdout_days=28, bootstrap=200)
    cfg = replace(LIGHT, ranker=replace(LIGHT.ranker, label_days=30.0), holdout_days=28)
    first = train_challenger(tmp_path / "ml", settings=settings, cfg=cfg)
    assert first.until == datetime(1998, 3, 26, tzinfo=UTC)  # 28 days before 1998-04-23
    gate = EvaluateConfig(evaluate=window)
    alone = evaluate(model_uri=first.uri, snapshot_uri=tmp_path / "ml", settings=settings, cfg=gate)
    assert len(alone.eval_set.users) > 200 and alone.champion is None
    assert (
        alone.challenger.values["all"]["ndcg@10"] > alone.popularity.values["all"]["ndcg@10"] * 0.5
    )
    mlflow_client(settings).set_registered_model_alias(MODEL_NAME, "champion", "1")
    second = train_challenger(
        tmp_path / "ml",
        settings=settings,
        cfg=replace(cfg, ranker=replace(cfg.ranker, max_rounds=3)),
    )
    both = evaluate(model_uri=second.uri, snapshot_uri=tmp_path / "ml", settings=settings, cfg=gate)
    assert both.champion is not None and both.champion.version == 1
    assert both.eval_set.hash == alone.eval_set.hash
    assert both.champion.values["all"] == pytest.approx(alone.challenger.values["all"], nan_ok=True)
    assert np.isfinite(both.challenger.values["all"]["ild@10"])


def test_category_slices_use_the_shallowest_level_that_splits_the_catalog() -> None:
    shop = pd.Series(["Home/Kitchen/Pans", "Home/Bath", "Beauty/Skin"], index=["a", "b", "c"])
    assert category_groups(shop).tolist() == ["Home", "Home", "Beauty"]
    movies = pd.Series(["Movies/Drama", "Movies/Comedy", "Movies/Drama"])
    assert category_groups(movies).tolist() == ["Movies/Drama", "Movies/Comedy", "Movies/Drama"]
    assert category_groups(pd.Series(["Only", "Only"])).tolist() == ["Only", "Only"]


def test_a_quarantined_snapshot_is_not_scored(shop: Shop, tmp_path: Path) -> None:
    snapshot = _copy(shop, tmp_path)
    status = snapshot / "validation" / "status.json"
    doc = json.loads(status.read_text())
    status.write_text(json.dumps({**doc, "status": "quarantined", "summary": ["prices < 0"]}))
    with pytest.raises(ShopMLError, match="is quarantined: prices < 0"):
        evaluate(
            model_uri=f"models:/{MODEL_NAME}/1",
            snapshot_uri=snapshot,
            settings=shop.settings,
            use_champion=False,
        )
    assert not (snapshot / "evaluation").exists()
