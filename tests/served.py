"""A served shop: the shared trained shop's recommender and a search model of the same
snapshot, each registered twice, evaluated and promoted (v1 served, v2 ready to promote),
so the serving tests have a real bucket to read, swap and tamper with."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.evaluation.gate import Check, GateConfig
from pipelines.evaluation.search_eval import SearchEvalConfig, evaluate_search
from pipelines.promotion.promote import Review, promote
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL, register_search
from pipelines.search.config import SearchConfig
from pipelines.search.model import train
from pipelines.settings import Settings, load_settings
from tests.shops import TrainedShop, in_dag_run

PERMISSIVE = EvaluateConfig(gate=GateConfig([Check("hit_rate@10", min=0.0)]))
SEARCH_PERMISSIVE = SearchEvalConfig(gate=GateConfig([Check("ndcg@10", min=0.0)], min_users=5))
TASKS = {MODEL_NAME: "await_review", SEARCH_MODEL: "await_search_review"}


def approval(run: str, model: str) -> Review:
    return Review(
        "shopml_retrain", run, TASKS[model], True, ("Approve",), "reviewer",
        "2026-12-06T10:00:00+00:00", ("reviewer",), "ok",
    )  # fmt: skip


class ServedShop:
    """Recommender v1/v2/v3 and search v1/v2 registered and evaluated (version n in DAG
    run ``run-n``, against version n - 1); v1 of both promoted into ``bucket``."""

    def __init__(self, trained: TrainedShop, root: Path) -> None:
        self.trained = trained
        self.root = root
        self.settings: Settings = replace(
            load_settings({"SHOPML_HOME": str(root / "home")}),
            reviewers=("reviewer",),
            serving_bucket_uri=(root / "bucket").as_uri(),
        )
        s = self.settings
        self.rec = [
            trained.register(s, weak=False).version,
            trained.register(s, weak=True).version,
            trained.register(s, weak=False).version,
        ]
        strong = train(trained.snapshot, SearchConfig(max_rounds=40, min_rounds=10))
        weak = train(
            trained.snapshot, SearchConfig(max_rounds=3, min_rounds=1, early_stopping_rounds=3)
        )
        self.search = [
            register_search(strong, settings=s).version,
            register_search(weak, settings=s).version,
        ]
        for n, run in enumerate(("run-1", "run-2", "run-3")):
            champion: dict[str, Any] = (
                {"use_champion": False}
                if n == 0
                else {"champion_uri": f"models:/{MODEL_NAME}/{self.rec[n - 1]}"}
            )
            with in_dag_run(run):
                evaluate(
                    model_uri=f"models:/{MODEL_NAME}/{self.rec[n]}", snapshot_uri=trained.snapshot,
                    settings=s, cfg=PERMISSIVE, **champion,
                )  # fmt: skip
                if n < len(self.search):
                    evaluate_search(
                        model_uri=f"models:/{SEARCH_MODEL}/{self.search[n]}",
                        snapshot_uri=trained.snapshot, settings=s, cfg=SEARCH_PERMISSIVE,
                        out_dir=root / f"search-eval-{n}",
                    )  # fmt: skip
            if n == 0:
                self.promote(MODEL_NAME, 0)
                self.promote(SEARCH_MODEL, 0)

    def promote(self, model: str, n: int, settings: Settings | None = None) -> None:
        version = (self.rec if model == MODEL_NAME else self.search)[n]
        promote(
            version=version, settings=settings or self.settings,
            review=approval(f"run-{n + 1}", model), name=model,
        )  # fmt: skip

    def copy(self, dst: Path) -> Settings:
        """Settings over a copy of the bucket (and the MLflow home) that a test may change."""
        shutil.copytree(self.root / "bucket", dst / "bucket")
        return replace(
            self.settings,
            serving_bucket_uri=(dst / "bucket").as_uri(),
            serving_keys_file=dst / "secrets" / "serving-keys.json",
            serving_secret_file=dst / "secrets" / "serving.key",
            serving_events_dir=dst / "events",
            privacy_key_file=dst / "secrets" / "privacy.key",
            home=dst / "serving-home",
        )
