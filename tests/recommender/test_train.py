"""`shopml train` end to end on a small generated shop: ranker labels, MLflow, pyfunc, CLI."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.candidates import SOURCES
from pipelines.cli import app
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, load_timeline
from pipelines.errors import ShopMLError
from pipelines.features import build_features
from pipelines.recommender.bundle import FeatureSource, Recommender, fit_generators
from pipelines.recommender.labels import Labels, ranker_rows
from pipelines.recommender.predict import RecommendRequest
from pipelines.recommender.rows import feature_names
from pipelines.registry.challenger import train_challenger
from pipelines.registry.models import CHALLENGER, MODEL_NAME, load_pyfunc, load_recommender
from pipelines.settings import load_settings
from pipelines.validation.validate import validate_snapshot
from tests.conftest import shared_data
from tests.shops import LIGHT, TrainedShop, mlflow_client, replace_table

# Every test here uses a trained model (the shared trained shop, or one of its own).
pytestmark = pytest.mark.slow


class Trained:
    """The shared trained shop, registered into this module's home."""

    def __init__(self, shop: TrainedShop, root: Path) -> None:
        self.snapshot = shop.snapshot
        self.settings = load_settings({"SHOPML_HOME": str(root / "home")})
        self.outcome = shop.register(self.settings)
        self.rec = self.outcome.result.recommender


@pytest.fixture(scope="module")
def trained(trained_shop: TrainedShop, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained(trained_shop, tmp_path_factory.mktemp("train"))


def test_registered_as_challenger_with_tags_runs_and_snapshot_input(trained: Trained) -> None:
    client = mlflow_client(trained.settings)
    version = client.get_model_version_by_alias(MODEL_NAME, CHALLENGER)
    assert int(version.version) == trained.outcome.version
    snap = Snapshot.open(trained.snapshot)
    assert version.tags["snapshot_id"] == snap.id
    assert version.tags["feature_service"] == "recommender_ranker"
    assert version.tags["training.repeatable"] == "true"  # BPR on one thread by default
    assert float(version.tags["metric.ndcg_at_10"]) == pytest.approx(
        trained.outcome.result.metrics["ndcg_at_10"], abs=1e-4
    )
    assert "champion" not in client.get_registered_model(MODEL_NAME).aliases
    parent = client.get_run(trained.outcome.run_id)
    assert parent.data.tags["shopml.snapshot_id"] == snap.id
    assert len(parent.data.tags["shopml.config_hash"]) == 16
    assert parent.data.tags["shopml.git_commit"]
    inputs = parent.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [snap.id[:36]]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    names = {r.info.run_name for r in children}
    assert names == {*SOURCES, "ranker"}
    assert {"repeat", "cooccur"} <= names
    ranker = next(r for r in children if r.info.run_name == "ranker")
    curve = client.get_metric_history(ranker.info.run_id, "validation_ndcg")
    assert len(curve) >= 2
    artifacts = {a.path for a in client.list_artifacts(ranker.info.run_id)}
    assert {"feature_importance.png", "learning_curve.png", "feature_importance.csv"} <= artifacts


def test_pyfunc_round_trip_gives_the_same_recommendations(trained: Trained) -> None:
    mlflow_client(trained.settings)
    model = load_pyfunc(f"models:/{MODEL_NAME}@{CHALLENGER}")
    active = trained.rec.ctx.user_ids[trained.rec.ctx.history.user_events > 0][:25]
    frame = pd.DataFrame({"user_id": list(active)})
    got = model.predict(frame, params={"k": 5, "explain": False})
    direct = trained.rec.recommend(RecommendRequest(list(active), 5))
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True)[["user_id", "rank", "item_id"]],
        direct[["user_id", "rank", "item_id"]],
    )
    np.testing.assert_allclose(got["score"].to_numpy(), direct["score"].to_numpy(), rtol=1e-6)
    # the CLI's loader reads the same bundle
    again = load_recommender(f"models:/{MODEL_NAME}/{trained.outcome.version}", trained.settings)
    assert again.feature_names == trained.rec.feature_names
    pd.testing.assert_frame_equal(again.recommend(RecommendRequest(list(active), 5)), direct)


def test_every_kind_of_user_gets_k_items_and_reasons(trained: Trained) -> None:
    rec = trained.rec
    never_active = rec.ctx.user_ids[rec.ctx.history.user_events == 0]
    assert len(never_active), "the generator makes shoppers who sign up late"
    some_items = list(rec.ctx.item_ids[:3])
    frame = pd.DataFrame(
        {
            "user_id": [
                rec.ctx.user_ids[np.argmax(rec.ctx.history.user_events)],
                never_active[0],
                "walk-in",
                "folded",
            ],
            "age": [None, None, 34, None],
            "gender": [None, None, "F", None],
            "recent_items": [None, None, None, some_items],
        }
    )
    from pipelines.recommender.predict import predict_frame

    out = predict_frame(rec, frame, k=7, explain=True)
    assert out.groupby("user_id").size().to_dict() == {u: 7 for u in frame["user_id"]}
    assert out["reasons"].str.len().gt(0).all()
    # items the user touched come back only where the repeat policy allows it
    allowed = set(rec.ctx.item_ids[rec.ctx.history.repeat_allowed])
    assert len(allowed) < len(rec.ctx.item_ids), "the generated shop has durables"
    folded = out[out["user_id"] == "folded"]
    assert not (set(folded["item_id"]) & set(some_items)) - allowed
    heavy = out[out["user_id"] == frame["user_id"][0]]
    seen = set(
        rec.ctx.item_ids[
            rec.ctx.history.matrix[rec.ctx.user_ids.tolist().index(frame["user_id"][0])].indices
        ]
    )
    assert not (set(heavy["item_id"]) & seen) - allowed
    vocabulary = (
        "similar",
        "popular",
        "trending",
        "interest",
        "brand",
        "price",
        "new",
        "agree",
        "together",
        "bought",
        "when you",
        "priced",
        " in ",
        "stock up",
        "regularly",
        "again",
    )
    assert any(any(v in r for v in vocabulary) for r in out["reasons"])


def test_shoppers_without_history_hear_no_reason_about_a_history(trained: Trained) -> None:
    from pipelines.recommender.reasons import HISTORY_BASED, REASONS

    rec = trained.rec
    never_active = list(rec.ctx.user_ids[rec.ctx.history.user_events == 0][:20])
    users = [*never_active, "walk-in-1", "walk-in-2"]
    out = rec.recommend(RecommendRequest(users, 10, explain=True, age=[None] * len(never_active) + [34, 61],
                                         gender=[None] * len(never_active) + ["F", "M"]))  # fmt: skip
    assert set(out["user_id"]) == set(users)
    about_history = {REASONS[k].split(" ({")[0] for k in HISTORY_BASED if k in REASONS}
    said = {r for cell in out["reasons"] for r in cell.split("; ")}
    assert said and not {r for r in said if any(r.startswith(h) for h in about_history)}, said
    # a shopper with history does hear them (the filter is not a blanket one)
    heavy = str(rec.ctx.user_ids[int(np.argmax(rec.ctx.history.user_events))])
    theirs = rec.recommend(RecommendRequest([heavy], 10, explain=True))["reasons"]
    assert any(any(r.startswith(h) for h in about_history) for c in theirs for r in c.split("; "))


def test_bundle_save_load_round_trip(trained: Trained, tmp_path: Path) -> None:
    trained.rec.save(tmp_path / "bundle")
    again = Recommender.load(tmp_path / "bundle")
    users = list(trained.rec.ctx.user_ids[:40])
    pd.testing.assert_frame_equal(
        again.recommend(RecommendRequest(users, 5, explain=True)),
        trained.rec.recommend(RecommendRequest(users, 5, explain=True)),
    )
    with pytest.raises(ShopMLError, match="not a ShopML recommender bundle"):
        Recommender.load(tmp_path)


def _later_snapshot(src: Path, dst: Path, cutoff: datetime) -> None:
    """``src`` with every event from ``cutoff`` on turned into a purchase, plus extra
    purchases after ``cutoff``: the labels change, the past does not."""
    snap = Snapshot.open(src)
    events = snap.read("events").to_pandas()
    late = events["ts"] >= pd.Timestamp(cutoff)
    events.loc[late, "event_type"] = "purchase"
    extra = (
        events[late]
        .head(500)
        .assign(
            event_id=lambda d: "x" + d["event_id"].astype(str),
            ts=lambda d: d["ts"] + pd.Timedelta(minutes=1),
        )
    )
    replace_table(src, dst, "events", pd.concat([events, extra], ignore_index=True))


def test_ranker_rows_do_not_see_label_events(trained: Trained, tmp_path: Path) -> None:
    as_of = trained.outcome.until
    cutoff = as_of - timedelta(days=7)
    later = tmp_path / "later"
    _later_snapshot(trained.snapshot, later, cutoff)
    validate_snapshot(snapshot_uri=later)

    def rows(snapshot: Path, home: Path) -> tuple[np.ndarray, np.ndarray]:
        settings = load_settings({"SHOPML_HOME": str(home)})
        fcfg = replace(LIGHT.features, history_days=8)
        build_features(
            snapshot_uri=snapshot, out_dir=settings.feature_store_dir, cfg=fcfg, as_of=as_of
        )
        tl = load_timeline(Snapshot.open(snapshot))
        c = cutoff.timestamp()
        ctx, store, gens = fit_generators(
            tl, slice(0, tl.before(c)), c, LIGHT.candidates, FeatureSource(settings)
        )
        from pipelines.recommender.bundle import item_side

        genders = np.sort(tl.users["gender"].dropna().astype(str).unique())
        rec = Recommender(ctx, item_side(tl), genders, store, gens)
        labels = Labels.from_events(
            tl, slice(tl.before(c), tl.before(as_of.timestamp())), LIGHT.ranker.grades
        )
        users = labels.users()[:150]
        data = ranker_rows(rec, users, labels, 50, 10)
        return data.x, data.y

    x1, y1 = rows(trained.snapshot, tmp_path / "h1")
    x2, y2 = rows(later, tmp_path / "h2")
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(y1, y2), "the later snapshot changes the labels"
    assert y2.max() == 3 and (y2 > 0).sum() >= (y1 > 0).sum()


def test_labels_take_the_strongest_next_interaction(trained: Trained) -> None:
    tl = load_timeline(Snapshot.open(trained.snapshot))
    labels = Labels.from_events(tl, slice(0, len(tl.ts)), LIGHT.ranker.grades)
    frame = pd.DataFrame({"u": tl.user, "i": tl.item, "t": tl.etype})
    grade_of = np.array(
        [LIGHT.ranker.grades[t] for t in ("view", "add_to_cart", "purchase", "search_click")]
    )
    expected = frame.assign(g=grade_of[frame["t"]]).groupby(["u", "i"])["g"].max()
    sample = expected.sample(200, random_state=0)
    got = labels.of(
        sample.index.get_level_values(0).to_numpy(), sample.index.get_level_values(1).to_numpy()
    )
    np.testing.assert_array_equal(got, sample.to_numpy())
    assert labels.of(np.array([0]), np.array([tl.n_items - 1]))[0] in (0, *grade_of)


def test_feature_names_cover_every_source() -> None:
    names = feature_names(["als", "bpr"], with_store=True)
    assert {"als_score", "als_rank", "als_zscore", "bpr_score"} <= set(names)
    assert any(n.startswith("store_user_") for n in names)
    assert len(names) == len(set(names))


def test_cli_recommend(trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_HOME", str(trained.settings.home))
    users = tmp_path / "users.csv"
    users.write_text(
        "user_id,age,gender,recent_items\nu0001,,,\nnobody,41,M,\nfolded,,,i0001|i0002\n"
    )
    out = tmp_path / "recs.parquet"
    runner = CliRunner()

    def recommend(model: str, users_file: Path, *extra: str) -> Any:
        args = ["recommend", "--model", model, "--users", str(users_file), "--out", str(out)]
        return runner.invoke(app, [*args, *extra])

    challenger = f"models:/{MODEL_NAME}@{CHALLENGER}"
    result = recommend(challenger, users, "--k", "4", "--explain")
    assert result.exit_code == 0, result.output
    recs = pd.read_parquet(out)
    assert list(recs.columns) == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "title",
        "category",
        "reasons",
    ]
    assert recs["title"].str.len().gt(0).all()  # people read titles, not ids
    assert recs.groupby("user_id").size().to_dict() == {"u0001": 4, "nobody": 4, "folded": 4}
    # rich wraps long lines at the terminal width: compare with the line breaks undone
    assert "without history: cold-start path" in " ".join(result.output.split())

    bad = tmp_path / "bad.csv"
    bad.write_text("customer\nx\n")
    result = recommend(challenger, bad)
    assert result.exit_code == 2
    assert "needs a user_id column" in result.output
    result = recommend(f"models:/{MODEL_NAME}@nope", users)
    assert result.exit_code == 2
    assert "cannot load model" in result.output


def test_train_refuses_a_quarantined_snapshot(trained: Trained, tmp_path: Path) -> None:
    items = Snapshot.open(trained.snapshot).read("items").to_pandas()
    items.loc[0, "price"] = -5.0
    replace_table(trained.snapshot, tmp_path / "bad", "items", items)
    settings = load_settings({"SHOPML_HOME": str(tmp_path / "home")})
    with pytest.raises(ShopMLError, match="quarantined"):
        train_challenger(tmp_path / "bad", settings=settings, cfg=LIGHT)
    assert not (settings.home / "mlflow").exists(), "nothing is logged for a refused snapshot"


def test_train_needs_enough_history(trained: Trained) -> None:
    too_early = datetime.fromtimestamp(
        load_timeline(Snapshot.open(trained.snapshot)).ts[0] + 3 * DAY, tz=UTC
    )
    with pytest.raises(ShopMLError, match="too few for 1 label window"):
        train_challenger(trained.snapshot, settings=trained.settings, cfg=LIGHT, until=too_early)


@pytest.mark.real_data
def test_train_on_the_movielens_import(tmp_path: Path) -> None:
    from pipelines.data.importers.movielens import import_movielens_100k

    import_movielens_100k(shared_data("movielens-100k"), out=tmp_path / "ml")
    settings = load_settings({"SHOPML_HOME": str(tmp_path / "home")})
    outcome = train_challenger(
        tmp_path / "ml",
        settings=settings,
        cfg=replace(LIGHT, ranker=replace(LIGHT.ranker, label_days=30.0)),
    )
    assert outcome.version == 1
    recs = outcome.result.recommender.recommend(RecommendRequest(["1", "2", "unknown"], 10))
    assert recs.groupby("user_id").size().to_dict() == {"1": 10, "2": 10, "unknown": 10}


def test_label_windows_side_by_side_or_overlapping(trained_shop: TrainedShop) -> None:
    from dataclasses import replace

    from pipelines.recommender.config import TrainOptions
    from pipelines.recommender.plan import plan_training

    side = plan_training(trained_shop.snapshot, replace(LIGHT, train=TrainOptions(folds=3)))
    now = side.until.timestamp()
    assert [round((now - c) / DAY, 6) for c in side.cutoffs] == [7.0, 14.0, 21.0]
    overlap = plan_training(
        trained_shop.snapshot, replace(LIGHT, train=TrainOptions(folds=3, fold_step_days=2.0))
    )
    assert [round((now - c) / DAY, 6) for c in overlap.cutoffs] == [7.0, 9.0, 11.0]
    assert overlap.history_days < side.history_days
