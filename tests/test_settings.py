"""Settings are chosen once from the environment; all local state sits under one home."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.settings import load_settings


def test_embedded_defaults_live_under_the_home(tmp_path: Path) -> None:
    s = load_settings({}, cwd=tmp_path)
    home = tmp_path / ".shopml"
    assert s.env == "embedded" and s.home == home
    assert s.snapshots_dir == home / "snapshots"
    assert s.airflow_home == home / "airflow"
    assert s.feature_store_dir == home / "feature_store"
    assert s.mlflow_tracking_uri == f"sqlite:///{home}/mlflow/mlflow.db"
    assert s.mlflow_artifact_root == (home / "mlflow" / "artifacts").as_uri()
    assert s.serving_bucket_uri == (home / "bucket").as_uri()
    assert s.online_store == "sqlite"


def test_home_and_values_from_environment_and_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "shopml.toml"
    cfg.write_text(
        'serving_bucket_uri = "s3://shop/models"\ns3_endpoint_url = "http://127.0.0.1:9000"\n'
    )
    env = {
        "SHOPML_HOME": "state",
        "SHOPML_CONFIG": str(cfg),
        "SHOPML_S3_ENDPOINT_URL": "http://minio:9000",
    }
    s = load_settings(env, cwd=tmp_path)
    assert s.home == tmp_path / "state"
    assert s.serving_bucket_uri == "s3://shop/models"
    assert s.s3_endpoint_url == "http://minio:9000"  # the environment wins over the file
    assert s.config_file == cfg


def test_production_needs_explicit_service_uris(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match="SHOPML_ENV=production needs SHOPML_MLFLOW_TRACKING_URI, "
        "SHOPML_SERVING_BUCKET_URI, SHOPML_WORK_URI",
    ):
        load_settings({"SHOPML_ENV": "production"}, cwd=tmp_path)
    s = load_settings(
        {
            "SHOPML_ENV": "production",
            "SHOPML_MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "SHOPML_SERVING_BUCKET_URI": "s3://b/p",
            "SHOPML_WORK_URI": "s3://b/work/",
        },
        cwd=tmp_path,
    )
    assert s.online_store == "redis"
    assert s.work_uri == "s3://b/work"
    # Feast's registry beside the promoted models: every worker and the serving API share it
    assert s.feature_registry_uri == "s3://b/p/feast/registry.db"


def test_the_feast_registry_is_local_embedded_and_refuses_what_feast_cannot_read(
    tmp_path: Path,
) -> None:
    s = load_settings({"SHOPML_HOME": str(tmp_path / "h")}, cwd=tmp_path)
    assert s.feast_registry == str(tmp_path / "h" / "feature_store" / "registry.db")
    given = load_settings({"SHOPML_FEATURE_REGISTRY_URI": (tmp_path / "r.db").as_uri()}, cwd=tmp_path)  # fmt: skip
    assert given.feature_registry_uri == str(tmp_path / "r.db")
    for bad in ("http://x/registry.db", "s3://bucket-only", "s3:///key", "gs://b/registry.db", "file://relative/r.db"):  # fmt: skip
        with pytest.raises(ConfigError, match="feature_registry_uri="):
            load_settings({"SHOPML_FEATURE_REGISTRY_URI": bad}, cwd=tmp_path)


def test_work_uri_defaults_under_home_and_refuses_what_workers_cannot_share(
    tmp_path: Path,
) -> None:
    s = load_settings({"SHOPML_HOME": str(tmp_path / "h")}, cwd=tmp_path)
    assert s.work_uri == (tmp_path / "h" / "runs").as_uri()
    for bad in ("runs", "http://x/y", "s3:///no-bucket", "file://relative/path"):
        with pytest.raises(ConfigError, match="work_uri="):
            load_settings({"SHOPML_WORK_URI": bad}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOPML_ENV": "staging"}, "SHOPML_ENV='staging' is not a profile"),
        ({"SHOPML_CONFIG": "missing.toml"}, "which is not a file"),
        ({"SHOPML_ONLINE_STORE": "memcached"}, "online_store='memcached'"),
        ({"SHOPML_SERVING_PRECOMPUTED_SHOPPERS": "-1"}, "serving_precomputed_shoppers='-1'"),
        ({"SHOPML_SERVING_PRECOMPUTED_SHOPPERS": "many"}, "between 0 \\(off\\)"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, cwd=tmp_path)


def test_unknown_keys_in_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('mlflow_uri = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) mlflow_uri"):
        load_settings({"SHOPML_CONFIG": str(cfg)}, cwd=tmp_path)


def test_stage_settings_from_a_toml_section(tmp_path: Path) -> None:
    from pipelines.features.config import FeatureConfig
    from pipelines.validation.config import ValidationConfig

    cfg = tmp_path / "shopml.toml"
    cfg.write_text(
        "[features]\nhalf_life_days = 7.0\nhistory_days = 3\n\n[validation]\ncategory_kl_max = 0.3\n"
    )
    features = FeatureConfig.from_toml(cfg, history_days=5, every_days=None)
    assert (features.half_life_days, features.history_days, features.every_days) == (7.0, 5, 1.0)
    assert ValidationConfig.from_toml(cfg).category_kl_max == 0.3
    cfg.write_text("[validation]\ncategory_kl = 0.3\n")
    with pytest.raises(ConfigError, match=r"unknown \[validation\] setting\(s\) \['category_kl'\]"):
        ValidationConfig.from_toml(cfg)
    with pytest.raises(ConfigError, match="duplicate_event_max_ratio must be in"):
        ValidationConfig(duplicate_event_max_ratio=1.5)


def test_passwords_in_uris_are_redacted_wherever_settings_are_shown() -> None:
    from pipelines.settings import redact

    s = load_settings(
        {
            "SHOPML_REDIS_URL": "redis://:p4ss@cache:6379/0",
            "SHOPML_AIRFLOW_API_URL": "https://svc:t0ken@airflow.internal",
            "SHOPML_MLFLOW_TRACKING_URI": "postgresql+psycopg2://ml:s3cr3t@db:5432/mlflow",
        }
    )
    shown = " ".join(s.describe().values())
    assert "p4ss" not in shown and "t0ken" not in shown and "s3cr3t" not in shown
    assert s.describe()["redis_url"] == "redis://:***@cache:6379/0"
    assert redact("postgresql+psycopg2://ml:s3cr3t@db/x") == "postgresql+psycopg2://ml:***@db/x"
    assert redact("s3://bucket/key:with@sign") == "s3://bucket/key:with@sign"  # no user info
    assert redact("http://host/path") == "http://host/path"


def test_reviewers_from_a_comma_list_or_a_toml_list(tmp_path: Path) -> None:
    assert load_settings({"SHOPML_REVIEWERS": " alice, bob ,alice"}).reviewers == ("alice", "bob")
    cfg = tmp_path / "s.toml"
    cfg.write_text('reviewers = ["carol"]\n')
    assert load_settings({"SHOPML_CONFIG": str(cfg)}).reviewers == ("carol",)
    with pytest.raises(ConfigError, match="name at least one"):
        load_settings({"SHOPML_REVIEWERS": " , "})


def test_the_cli_finds_the_stack_this_home_started(tmp_path: Path) -> None:
    env = {"SHOPML_HOME": str(tmp_path / "home")}
    assert load_settings(env).airflow_api_url == "http://localhost:8080"
    assert (
        load_settings({**env, "SHOPML_AIRFLOW_PORT": "8095"}).airflow_api_url
        == "http://localhost:8095"
    )
    (tmp_path / "home" / "airflow").mkdir(parents=True)
    (tmp_path / "home" / "airflow" / "stack.json").write_text(
        '{"url": "http://localhost:8123", "pgids": {}}'
    )
    assert load_settings(env).airflow_api_url == "http://localhost:8123"
    assert (
        load_settings({**env, "SHOPML_AIRFLOW_API_URL": "https://af"}).airflow_api_url
        == "https://af"
    )
