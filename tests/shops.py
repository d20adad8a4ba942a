"""The generated shop and light training settings the training, evaluation and promotion
tests share, and :class:`TrainedShop`: that shop trained once per test session, which
each test module registers into a home of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient

from pipelines.candidates import CandidateConfig
from pipelines.data.contract import TABLES
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.snapshot import Snapshot, write_snapshot
from pipelines.features import FeatureConfig
from pipelines.io import environ
from pipelines.recommender.config import RankerConfig, TrainConfig, TrainOptions
from pipelines.recommender.plan import (
    TrainingPlan,
    plan_training,
    prepare_features,
    train_candidates,
    train_ranker,
)
from pipelines.registry.challenger import TrainOutcome, register_challenger
from pipelines.settings import Settings, load_settings

SHOP = GeneratorConfig(users=1_500, items=300, events=40_000, seed=11, days=45, judged_queries=20)
LIGHT = TrainConfig(
    train=TrainOptions(folds=1),
    candidates=CandidateConfig(als_iterations=5, bpr_iterations=10, threads=1),
    ranker=RankerConfig(
        label_days=7.0, max_rounds=60, early_stopping_rounds=20, min_data_in_leaf=20
    ),
    features=FeatureConfig(segment_k_min=2, segment_k_max=3),
)
# LIGHT as a pipeline config file (for the DAG and its steps), with gates every model passes.
LIGHT_TOML = """
[train]
folds = 1
[candidates]
als_iterations = 5
bpr_iterations = 10
threads = 1
[ranker]
label_days = 7.0
max_rounds = 60
early_stopping_rounds = 20
min_data_in_leaf = 20
[features]
segment_k_min = 2
segment_k_max = 3
[[gate.checks]]
metric = "hit_rate@10"
min = 0.0
[search]
max_rounds = 60
min_rounds = 20
[search_gate]
min_users = 10
[[search_gate.checks]]
metric = "ndcg@10"
min = 0.0
"""
# The same candidates with a ranker stopped after 3 rounds: a second, weaker version.
WEAK = replace(LIGHT, ranker=replace(LIGHT.ranker, max_rounds=3, early_stopping_rounds=3))


class TrainedShop:
    """SHOP, validated and trained with LIGHT (work folder ``strong``) and, on the same
    candidate stage, with WEAK's ranker (``weak``); nothing registered yet."""

    def __init__(self, root: Path) -> None:
        self.snapshot = root / "shop"
        generate_shop(SHOP, out=self.snapshot)
        settings = load_settings({"SHOPML_HOME": str(root / "training-home")})
        plan = plan_training(self.snapshot, LIGHT)
        self.strong = root / "strong"
        plan.save(self.strong)
        prepare_features(plan, self.strong)
        train_candidates(work_dir=self.strong, settings=settings)
        train_ranker(work_dir=self.strong)
        self.weak = root / "weak"
        replace(plan, config=WEAK.as_dict()).save(self.weak)
        (self.weak / "stage").symlink_to(self.strong / "stage")
        train_ranker(work_dir=self.weak)
        self.plan: TrainingPlan = plan

    def register(self, settings: Settings, *, weak: bool = False) -> TrainOutcome:
        """Register the strong (or the weak) model into ``settings``' MLflow."""
        return register_challenger(work_dir=self.weak if weak else self.strong, settings=settings)


def replace_table(src: Path, dst: Path, name: str, frame: pd.DataFrame) -> None:
    """A snapshot at ``dst`` like ``src`` with table ``name`` replaced by ``frame`` (same
    schema): a new, consistent snapshot whose one table a test changed."""
    snap = Snapshot.open(src)
    with write_snapshot(dst, source="test", producer={}) as w:
        for table in TABLES:
            if snap.has(table) and table != name:
                w.write_table(table, snap.read(table))
        schema = snap.read(name).schema
        w.write_table(name, pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


def mlflow_client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient()


@contextmanager
def in_dag_run(run_id: str) -> Iterator[None]:
    """What Airflow exports to a task of DAG run ``run_id``."""
    with environ({"AIRFLOW_CTX_DAG_ID": "shopml_retrain", "AIRFLOW_CTX_DAG_RUN_ID": run_id}):
        yield
