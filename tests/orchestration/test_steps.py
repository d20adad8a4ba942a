"""The retrain DAG's steps without Airflow: the payload they pass, the reviewer's answer they
accept, and every step in order on a generated shop, configured by one pipeline file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.data.generator import generate_shop
from pipelines.errors import ShopMLError
from pipelines.orchestration.airflow_api import review_from_hitl
from pipelines.orchestration.config import PipelineConfig
from pipelines.orchestration.steps import (
    PromotionResult,
    RunPayload,
    candidates_step,
    evaluate_step,
    features_step,
    materialize_step,
    notify_step,
    promote_step,
    ranker_step,
    register_step,
    validate_step,
    work_folder,
)
from pipelines.promotion.bucket import open_bucket
from pipelines.promotion.promote import Review, ledger_entries, served_version
from pipelines.registry.models import MODEL_NAME
from pipelines.settings import load_settings
from tests.shops import LIGHT_TOML, SHOP
from tests.validation.test_validate import rewrite

# LIGHT as a pipeline file (tests/shops.py), plus a validation threshold.
PIPELINE = "[validation]\ncategory_kl_max = 0.3\n" + LIGHT_TOML

HITL = {
    "task_instance": {"dag_id": "shopml_retrain", "dag_run_id": "manual__1", "task_id": "await_review"},
    "assigned_users": [{"id": "reviewer", "name": "reviewer"}],
    "response_received": True,
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "reviewer", "name": "Rita Reviewer"},
    "responded_at": "2026-12-02T10:00:00+00:00",
    "params_input": {"comment": "looks right"},
}  # fmt: skip


def _review(detail: object, run: str = "manual__1") -> Review:
    return review_from_hitl(detail, dag_id="shopml_retrain", run_id=run, task_id="await_review")


def test_the_payload_round_trips_through_xcom_and_refuses_strangers() -> None:
    run = RunPayload(
        work_uri="file:///w", snapshot="/s", snapshot_id="abc", until="2026-01-01T00:00:00"
    )
    back = RunPayload.from_xcom(json.loads(json.dumps(run.to_xcom())))
    assert back == run
    with pytest.raises(ShopMLError, match=r"unknown payload field\(s\) \['versoin'\]"):
        RunPayload.from_xcom({**run.to_xcom(), "versoin": 3})
    with pytest.raises(ShopMLError, match="expected the previous task's payload"):
        RunPayload.from_xcom(None)
    with pytest.raises(ShopMLError, match="no model version in this run yet"):
        _ = run.registered_version


def test_the_approval_record_is_read_from_airflows_hitl_detail() -> None:
    review = _review(HITL)
    assert review == Review(
        dag_id="shopml_retrain",
        dag_run="manual__1",
        task_id="await_review",
        response_received=True,
        chosen_options=("Approve",),
        responded_by="reviewer",  # the login (user id), not the display name
        responded_at="2026-12-02T10:00:00+00:00",
        assigned=("reviewer",),
        comment="looks right",
    )
    # marked success without an answer: Airflow's record says so
    pending = _review({**HITL, "response_received": False, "responded_by_user": None,
                       "chosen_options": None, "responded_at": None, "params_input": None})  # fmt: skip
    assert (pending.response_received, pending.responded_by, pending.chosen_options) == (
        False,
        None,
        (),
    )


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        (None, "returned no approval record"),
        ("Approve", "returned no approval record"),
        ({**HITL, "task_instance": {**HITL["task_instance"], "dag_run_id": "other"}}, "is for"),
        ({**HITL, "task_instance": {}}, "is for"),
    ],
)
def test_an_approval_record_of_another_task_or_run_is_refused(detail: object, message: str) -> None:
    with pytest.raises(ShopMLError, match=message):
        _review(detail)


def test_the_pipeline_file_reaches_every_stage(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE + "\n[evaluate]\nholdout_days = 5\n")
    cfg = PipelineConfig.from_toml(path)
    assert cfg.validation.category_kl_max == 0.3
    assert (cfg.train.train.folds, cfg.train.ranker.max_rounds) == (1, 60)
    assert cfg.train.holdout_days == cfg.evaluate.evaluate.holdout_days == 5.0
    assert [c.metric for c in cfg.evaluate.gate.checks] == ["hit_rate@10"]
    assert PipelineConfig.from_toml(None) == PipelineConfig() == PipelineConfig.from_toml("")
    path.write_text("[validation]\ncategory_kl = 0.3\n")
    with pytest.raises(ShopMLError, match=r"unknown \[validation\] setting\(s\) \['category_kl'\]"):
        PipelineConfig.from_toml(path)


def test_the_embedded_run_works_in_its_folder_with_its_own_copy_of_the_config(
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "shop"
    generate_shop(SHOP, out=snapshot)
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE)
    run = validate_step(snapshot=str(snapshot), config=str(config), dag_run_id="manual__1")
    settings = load_settings()
    folder = settings.home / "runs" / "manual__1"
    assert run.work_uri == folder.as_uri() and work_folder(settings, "manual__1") == folder
    assert (folder / "plan.json").is_file() and run.config == str(config)
    assert (folder / "config.toml").read_text() == config.read_text()
    assert not (folder / "snapshot").exists()  # one machine: the snapshot is read in place
    assert run.snapshot == str(snapshot)


@pytest.mark.slow
def test_every_step_on_another_worker_trains_evaluates_and_promotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: str
) -> None:
    """Each step runs with a home of its own, as on Celery workers of different hosts: the
    payload carries the run's work URI on S3, never a local folder, and the snapshot and
    config file are gone from disk after validation (only the run's copies remain)."""
    snapshot = tmp_path / "shop"
    generate_shop(SHOP, out=snapshot)
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE)
    shared = tmp_path / "services"  # what every worker reaches over the network
    shared.mkdir()
    for key, value in {
        "SHOPML_WORK_URI": "s3://work/runs",
        "SHOPML_SERVING_BUCKET_URI": "s3://serving/shopml",
        "SHOPML_S3_ENDPOINT_URL": s3,
        "SHOPML_MLFLOW_TRACKING_URI": f"sqlite:///{shared / 'mlflow.db'}",
        "SHOPML_MLFLOW_ARTIFACT_ROOT": (shared / "artifacts").as_uri(),
        "SHOPML_SIGNING_KEY_FILE": str(shared / "signing.key"),
    }.items():
        monkeypatch.setenv(key, value)
    homes: list[Path] = []

    def on_worker() -> None:
        homes.append(tmp_path / f"worker-{len(homes)}")
        monkeypatch.setenv("SHOPML_HOME", str(homes[-1]))

    # what Airflow gives every task of run manual__1; the approval record is its HITL detail
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "shopml_retrain")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__1")
    record = {"detail": HITL}

    class FakeAirflow:
        def review(self, run_id: str) -> Review:
            return _review(record["detail"], run_id)

    monkeypatch.setattr("pipelines.orchestration.steps.service_client", lambda _: FakeAirflow())
    on_worker()
    run = validate_step(snapshot=str(snapshot), config=str(config), dag_run_id="manual__1")
    result = json.loads((snapshot / "validation" / "result.json").read_text())
    assert result["status"] == "accepted" and result["config"]["category_kl_max"] == 0.3
    assert run.work_uri == "s3://work/runs/manual__1" and run.snapshot == str(snapshot)
    keep = tmp_path / "kept"
    snapshot.rename(keep)  # no later step may read the snapshot or config from this disk
    config.unlink()

    on_worker()
    run = features_step(run)
    assert run.features_seconds > 0
    on_worker()
    run = materialize_step(run)
    users = pd.read_parquet(keep / "users.parquet")
    signed_up = int((users["signup_ts"] < pd.Timestamp(run.until)).sum())
    assert run.online_rows["user_profile"] == signed_up  # everyone known at the training time
    on_worker()
    run = candidates_step(run)
    on_worker()
    run = ranker_step(run)
    assert run.validation_ndcg is not None and 0 < run.validation_ndcg <= 1
    on_worker()
    run = register_step(run)
    assert run.version == 1 and run.model_uri == f"models:/{MODEL_NAME}/1"
    on_worker()
    run = evaluate_step(run)
    assert run.blessed is True  # the file's permissive gate
    assert "Report: s3://work/runs/manual__1/evaluation/report.html" in run.summary
    assert len(run.eval_set_hash) == 64
    assert all(not any((h / "scratch").iterdir()) for h in homes)  # scratch cleaned each time
    parts = open_bucket("s3://work/runs/manual__1", s3).keys("_parts")
    assert parts == [
        f"_parts/{p}.json"
        for p in (
            "config.toml",
            "evaluation",
            "features",
            "plan.json",
            "ranker",
            "snapshot",
            "stage",
        )
    ]

    # through XCom and back, as Airflow passes it to the next task
    run = RunPayload.from_xcom(json.loads(json.dumps(run.to_xcom())))
    on_worker()
    settings = load_settings()
    # await_review marked success without an answer: nothing is promoted
    record["detail"] = {**HITL, "response_received": False, "responded_by_user": None}
    with pytest.raises(ShopMLError, match="has no answer from a reviewer"):
        promote_step(run, "manual__1")
    assert served_version(settings, MODEL_NAME) is None
    record["detail"] = HITL
    promoted = promote_step(run, "manual__1")
    assert promoted == PromotionResult(
        version=1, previous=None, changed=True, approved_by="reviewer"
    )
    assert served_version(settings, MODEL_NAME) == 1
    (line,) = ledger_entries(settings, MODEL_NAME)
    assert (line["approved_by"], line["comment"], line["dag_run"]) == (
        "reviewer",
        "looks right",
        "manual__1",
    )
    assert notify_step(PromotionResult.from_xcom(promoted.to_xcom())) == (
        "shopml-recommender version 1 is now served (previous: None; approved by reviewer)"
    )


def test_a_quarantined_snapshot_stops_the_run_at_validation(tmp_path: Path) -> None:
    snapshot = tmp_path / "shop"
    generate_shop(SHOP, out=snapshot)

    def negative_price(items: pd.DataFrame) -> pd.DataFrame:
        return items.assign(price=items["price"].where(items.index > 0, -1.0))

    rewrite(snapshot, "items", negative_price)  # the validation tests' broken export
    with pytest.raises(ShopMLError, match=r"quarantined, e\.g\. items\.price"):
        validate_step(snapshot=str(snapshot), config=None, dag_run_id="manual__2")
    assert not (load_settings().home / "runs" / "manual__2").exists()
