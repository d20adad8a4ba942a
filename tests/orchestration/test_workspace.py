"""A run's work storage on S3 (moto's server on loopback): parts are published whole or not
at all, checked on the way back, and a failed step publishes nothing."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from pipelines.errors import ShopMLError
from pipelines.orchestration.workspace import opened, run_uri
from pipelines.settings import Settings, load_settings


def _settings(tmp_path: Path, s3: str, home: str) -> Settings:
    return load_settings(
        {
            "SHOPML_HOME": str(tmp_path / home),
            "SHOPML_WORK_URI": "s3://work/runs",
            "SHOPML_S3_ENDPOINT_URL": s3,
        }
    )


def _fetch(uri: str, settings: Settings, part: str) -> None:
    with opened(uri, settings, reads=[part]):
        pass


def _publish_nothing(uri: str, settings: Settings, part: str) -> None:
    with opened(uri, settings, writes=[part]):
        pass


def test_parts_travel_between_workers_whole_and_checked(tmp_path: Path, s3: str) -> None:
    a, b = _settings(tmp_path, s3, "worker-a"), _settings(tmp_path, s3, "worker-b")
    uri = run_uri(a, "manual__2026-12-07T10:00:00+00:00")
    assert uri == "s3://work/runs/manual__2026-12-07T10_00_00_00_00"
    with opened(uri, a, writes=["plan.json", "stage"]) as folder:
        (folder / "plan.json").write_text('{"until": 1}')
        (folder / "stage" / "nested").mkdir(parents=True)
        (folder / "stage" / "nested" / "x.bin").write_bytes(b"\x00" * 3_000_000)
        (folder / "stage" / "y.txt").write_text("y")
        (folder / "not-published.txt").write_text("scratch")
    assert not list((a.home / "scratch").iterdir())  # the worker's scratch is cleaned

    with opened(uri, b, reads=["plan.json", "stage"]) as folder:
        assert (folder / "plan.json").read_text() == '{"until": 1}'
        assert (folder / "stage" / "nested" / "x.bin").stat().st_size == 3_000_000
        assert (folder / "stage" / "y.txt").read_text() == "y"
        assert not (folder / "not-published.txt").exists()

    # a step that fails publishes nothing: the earlier part stays as it was
    with pytest.raises(RuntimeError), opened(uri, b, reads=["stage"], writes=["stage"]) as folder:
        (folder / "stage" / "y.txt").write_text("half-done")
        raise RuntimeError("worker lost")
    with opened(uri, a, reads=["stage"]) as folder:
        assert (folder / "stage" / "y.txt").read_text() == "y"


def test_missing_tampered_and_unindexed_parts_are_refused(tmp_path: Path, s3: str) -> None:
    settings = _settings(tmp_path, s3, "w")
    uri = run_uri(settings, "r1")
    with pytest.raises(ShopMLError, match=r"part 'ranker' is missing; the step that writes it"):
        _fetch(uri, settings, "ranker")
    client = boto3.client("s3", endpoint_url=s3)
    # files of a step killed before its index was written are never read
    client.put_object(Bucket="work", Key="runs/r1/ranker/model.txt", Body=b"half")
    with pytest.raises(ShopMLError, match="part 'ranker' is missing"):
        _fetch(uri, settings, "ranker")
    with opened(uri, settings, writes=["ranker"]) as folder:
        (folder / "ranker").mkdir()
        (folder / "ranker" / "model.txt").write_text("trained")
    client.put_object(Bucket="work", Key="runs/r1/ranker/model.txt", Body=b"edited")
    with pytest.raises(ShopMLError, match=r"ranker/model.txt does not match the sha256"):
        _fetch(uri, settings, "ranker")
    with pytest.raises(ShopMLError, match="the step did not write 'features'"):
        _publish_nothing(uri, settings, "features")
    with pytest.raises(ShopMLError, match=r"work part '../x': a relative path"):
        _fetch(uri, settings, "../x")


def test_local_work_is_the_run_folder_in_place(tmp_path: Path) -> None:
    settings = load_settings({"SHOPML_HOME": str(tmp_path / "h")})
    uri = run_uri(settings, "scheduled__1")
    with opened(uri, settings, reads=["plan.json"], writes=["stage"]) as folder:
        assert folder == tmp_path / "h" / "runs" / "scheduled__1"
        (folder / "stage").mkdir()
    assert (tmp_path / "h" / "runs" / "scheduled__1" / "stage").is_dir()
    assert not (tmp_path / "h" / "scratch").exists()
