"""Two `shopml train` runs at once on one SHOPML_HOME: each model carries its own
snapshot's features, exactly as a run alone would (each run builds its features in its
own work folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.snapshot import Snapshot
from pipelines.recommender.bundle import Recommender
from pipelines.registry.models import MODEL_NAME, bundle_path
from pipelines.settings import load_settings
from tests.shops import LIGHT_TOML, mlflow_client

pytestmark = pytest.mark.slow
SMALL = GeneratorConfig(users=800, items=200, events=20_000, days=40, judged_queries=5)


def _train(home: Path, snapshot: Path, config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOPML_HOME": str(home)}
    args = [sys.executable, "-m", "pipelines.cli", "--quiet", "train", "--snapshot", str(snapshot), "--config", str(config)]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _store_arrays(home: Path) -> dict[str, dict[str, np.ndarray]]:
    """snapshot id -> the store arrays of the model trained on it in ``home``."""
    settings = load_settings({"SHOPML_HOME": str(home)})
    out = {}
    for mv in mlflow_client(settings).search_model_versions(f"name='{MODEL_NAME}'"):
        rec = Recommender.load(bundle_path(f"models:/{MODEL_NAME}/{mv.version}", settings))
        assert rec.store is not None
        out[mv.tags["snapshot_id"]] = {
            "store_users": rec.store.users,
            "store_items": rec.store.items,
            "segment": rec.ctx.side.segment,
        }
    return out


def test_two_trainings_at_once_keep_their_own_features(tmp_path: Path) -> None:
    config = tmp_path / "light.toml"
    config.write_text(LIGHT_TOML)
    snaps = []
    for seed in (21, 22):
        generate_shop(
            GeneratorConfig(**{**SMALL.__dict__, "seed": seed}), out=tmp_path / f"shop{seed}"
        )
        snaps.append(tmp_path / f"shop{seed}")
    shared = tmp_path / "shared-home"
    running = [_train(shared, snap, config) for snap in snaps]
    for proc in running:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    for n, snap in enumerate(snaps):  # each alone, in a home of its own
        proc = _train(tmp_path / f"alone{n}", snap, config)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    together = _store_arrays(shared)
    ids = [Snapshot.open(s).id for s in snaps]
    assert set(together) == set(ids)
    for n, snapshot_id in enumerate(ids):
        (alone,) = _store_arrays(tmp_path / f"alone{n}").values()
        for name, values in alone.items():
            np.testing.assert_array_equal(together[snapshot_id][name], values, err_msg=name)
    # and the two snapshots' features do differ, so the check above could fail
    assert not np.array_equal(together[ids[0]]["segment"][:100], together[ids[1]]["segment"][:100]) or \
        together[ids[0]]["store_users"].shape != together[ids[1]]["store_users"].shape  # fmt: skip
