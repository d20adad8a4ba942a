"""Promotion to a local bucket and to S3 (moto's server on loopback): what it proves before
it serves (the approval record, the signed verdict of this version, run and champion, an
intact bucket), the layout and checksums, idempotency, interruption, the hash-chained
ledger, rollback, and every tampering a hostile user tried."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ShopMLError
from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.evaluation.gate import Check, GateConfig
from pipelines.promotion import ledger as ledger_module
from pipelines.promotion.bucket import LocalBucket, open_bucket
from pipelines.promotion.ledger import LEDGER_FIELDS
from pipelines.promotion.promote import Review, ledger_entries, promote, rollback, verify
from pipelines.registry.models import MODEL_NAME
from pipelines.settings import Settings, load_settings
from tests.shops import TrainedShop, in_dag_run, mlflow_client

# Every test here uses a trained model (the shared trained shop, or one of its own).
pytestmark = pytest.mark.slow

PERMISSIVE = EvaluateConfig(gate=GateConfig([Check("hit_rate@10", min=0.0)]))


def review(run: str, who: str | None = "reviewer", **changes: Any) -> Review:
    """Airflow's record of an approval of ``run`` answered by ``who``."""
    base = Review(
        dag_id="shopml_retrain",
        dag_run=run,
        task_id="await_review",
        response_received=who is not None,
        chosen_options=("Approve",) if who else (),
        responded_by=who,
        responded_at="2026-12-02T10:00:00+00:00" if who else None,
        assigned=("reviewer", "alice"),
        comment="ok",
    )
    return replace(base, **changes)


class Models:
    """Versions of the shared trained shop, each evaluated in its own (simulated) DAG run:
    v1 without a champion (run-1); v2 against v1 (run-2)."""

    def __init__(self, trained: TrainedShop, root: Path) -> None:
        self.trained = trained
        self.root = root
        self.settings = replace(
            load_settings({"SHOPML_HOME": str(root / "home")}), reviewers=("reviewer", "alice")
        )
        self.v1 = self.add(run="run-1", weak=False)
        self.v2 = self.add(run="run-2", champion=self.v1)

    def add(self, *, run: str | None, champion: int | None = None, weak: bool = True) -> int:
        """Register a version and evaluate it in DAG run ``run`` (None: outside a DAG)."""
        version = self.trained.register(self.settings, weak=weak).version
        kwargs: dict[str, Any] = {"use_champion": False}
        if champion is not None:
            kwargs = {"champion_uri": f"models:/{MODEL_NAME}/{champion}"}
        uri = f"models:/{MODEL_NAME}/{version}"
        if run is None:
            evaluate(model_uri=uri, snapshot_uri=self.trained.snapshot, settings=self.settings, cfg=PERMISSIVE, **kwargs)  # fmt: skip
        else:
            with in_dag_run(run):
                evaluate(model_uri=uri, snapshot_uri=self.trained.snapshot, settings=self.settings, cfg=PERMISSIVE, **kwargs)  # fmt: skip
        return version

    def settings_with(self, bucket_uri: str, endpoint: str | None = None) -> Settings:
        return replace(self.settings, serving_bucket_uri=bucket_uri, s3_endpoint_url=endpoint)


@pytest.fixture(scope="module")
def models(trained_shop: TrainedShop, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(trained_shop, tmp_path_factory.mktemp("promote"))


def _champion(settings: Settings) -> int | None:
    try:
        return int(
            mlflow_client(settings).get_model_version_by_alias(MODEL_NAME, "champion").version
        )
    except Exception:
        return None


def _pointer(bucket: Any) -> dict[str, Any]:
    return dict(json.loads(bucket.get(f"{MODEL_NAME}/current.json")))


def _check_layout(bucket: Any, version: int, settings: Settings) -> dict[str, Any]:
    keys = bucket.keys(f"{MODEL_NAME}/versions/{version}")
    base = f"{MODEL_NAME}/versions/{version}/"
    rel = {k.removeprefix(base) for k in keys}
    assert {
        "manifest.json",
        "feature_service.json",
        "features/users.parquet",
        "features/items.parquet",
        "report/verdict.json",
        "report/report.html",
        "report/summary.md",
        "bundle/recommender.json",
        "bundle/ranker.txt",
    } <= rel
    manifest = json.loads(bucket.get(base + "manifest.json"))
    assert set(manifest["files"]) == rel - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(bucket.get(base + name)).hexdigest() == digest, name
    verdict = bucket.get(base + "report/verdict.json")
    assert manifest["verdict_sha256"] == hashlib.sha256(verdict).hexdigest()
    assert json.loads(verdict)["model"]["version"] == version
    return manifest


def _promote_two(models: Models, settings: Settings) -> None:
    assert promote(version=models.v1, settings=settings, review=review("run-1")).changed
    assert promote(version=models.v2, settings=settings, review=review("run-2", "alice")).changed


# ----------------------------------------------------------------------------- proofs


def test_a_promotion_needs_an_assigned_reviewers_approval(models: Models, tmp_path: Path) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    cases = {
        # the forged-XCom attack: await_review marked success, no answer in Airflow's record
        "has no answer from a reviewer": review("run-1", None),
        "answered \\['Reject'\\], not Approve": review("run-1", chosen_options=("Reject",)),
        "'mallory', who is not assigned": review("run-1", "mallory"),
        "'bob', who is not a configured reviewer": review("run-1", "bob", assigned=("bob",)),
    }
    for message, record in cases.items():
        with pytest.raises(ShopMLError, match=message):
            promote(version=models.v1, settings=settings, review=record)
    # tags anyone with registry access can set change nothing
    client = mlflow_client(settings)
    client.set_model_version_tag(MODEL_NAME, str(models.v1), "review.approved_by", "mallory")
    with pytest.raises(ShopMLError, match="has no answer"):
        promote(version=models.v1, settings=settings, review=review("run-1", None))
    assert not (tmp_path / "bucket").exists()


def test_forged_edited_or_foreign_verdicts_do_not_bless(models: Models, tmp_path: Path) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    client = mlflow_client(settings)
    v1_tags = client.get_model_version(MODEL_NAME, str(models.v1)).tags
    # never evaluated, tags forged: blessed, and another version's evaluation
    forged = models.trained.register(settings).version
    client.set_model_version_tag(MODEL_NAME, str(forged), "eval.blessed", "true")
    with pytest.raises(ShopMLError, match=f"version {forged} has no evaluation"):
        promote(version=forged, settings=settings, review=review("run-1"))
    client.set_model_version_tag(
        MODEL_NAME, str(forged), "eval.artifacts", v1_tags["eval.artifacts"]
    )
    with pytest.raises(ShopMLError, match=f"judges {MODEL_NAME} version {models.v1}, not"):
        promote(version=forged, settings=settings, review=review("run-1"))
    # the approval of another run
    with pytest.raises(ShopMLError, match="written by DAG run 'run-1', but the approval belongs"):
        promote(version=models.v1, settings=settings, review=review("run-9"))
    # evaluated outside a DAG run: no approval can promote on it
    loose = models.add(run=None)
    with pytest.raises(ShopMLError, match="written by DAG run None"):
        promote(version=loose, settings=settings, review=review("run-1"))
    # a verdict edited in MLflow (blessed flipped on, or any byte) fails its signature
    edited = models.add(run="run-e")
    tags = client.get_model_version(MODEL_NAME, str(edited)).tags
    run_id, path = tags["eval.artifacts"].removeprefix("runs:/").split("/", 1)
    local = Path(client.download_artifacts(run_id, f"{path}/verdict.json", str(tmp_path)))
    body = json.loads(local.read_text())
    body["reasons"] = ["looks great"]
    local.write_text(json.dumps(body))
    client.log_artifact(run_id, str(local), artifact_path=path)
    with pytest.raises(ShopMLError, match="its signature does not hold"):
        promote(version=edited, settings=settings, review=review("run-e"))
    assert not (tmp_path / "bucket").exists()


def test_stale_or_championless_verdicts_are_refused_once_a_champion_is_served(
    models: Models, tmp_path: Path
) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    _promote_two(models, settings)  # v2 is served
    # `shopml evaluate --no-champion` re-blessing a version while a champion is served
    alone = models.add(run="run-3")
    with pytest.raises(ShopMLError, match=f"judged without a champion while version {models.v2}"):
        promote(version=alone, settings=settings, review=review("run-3"))
    # judged against v1, but v2 is served now
    stale = models.add(run="run-4", champion=models.v1)
    with pytest.raises(ShopMLError, match=f"judged against version {models.v1}, but version {models.v2} is served"):  # fmt: skip
        promote(version=stale, settings=settings, review=review("run-4"))
    assert [e["version"] for e in ledger_entries(settings, MODEL_NAME)] == [models.v1, models.v2]


# ----------------------------------------------------------------------------- serving


def test_promote_local_then_idempotent_interrupted_and_rollback(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    bucket = open_bucket(settings.serving_bucket_uri)
    first = promote(version=models.v1, settings=settings, review=review("run-1"))
    assert first.changed and first.previous is None
    manifest = _check_layout(bucket, models.v1, settings)
    current = _pointer(bucket)
    assert current["version"] == models.v1
    assert _champion(settings) == models.v1
    (line,) = ledger_entries(settings, MODEL_NAME)
    assert line["action"] == "promote" and line["version"] == models.v1
    assert (line["approved_by"], line["approved_at"], line["dag_run"]) == (
        "reviewer",
        "2026-12-02T10:00:00+00:00",
        "run-1",
    )
    assert line["previous_version"] is None and line["prev_sha256"] is None and line["seq"] == 1
    assert line["snapshot_id"] == manifest["snapshot_id"] != ""
    assert line["report_sha256"] == manifest["files"]["report/report.html"]
    raw = bucket.get(f"{MODEL_NAME}/ledger/00000001.json")
    assert current["ledger_head"] == hashlib.sha256(raw).hexdigest()

    # a retried promotion of the served version changes nothing
    before = bucket.get(f"{MODEL_NAME}/current.json")
    again = promote(version=models.v1, settings=settings, review=review("run-1"))
    assert not again.changed and again.previous is None
    assert bucket.get(f"{MODEL_NAME}/current.json") == before
    assert len(ledger_entries(settings, MODEL_NAME)) == 1

    # interrupted after some files of v2: no manifest, the pointer still on v1
    real_put = LocalBucket.put
    calls = {"n": 0}

    def failing_put(self: LocalBucket, key: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real_put(self, key, data)

    monkeypatch.setattr(LocalBucket, "put", failing_put)
    with pytest.raises(OSError, match="simulated"):
        promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    monkeypatch.setattr(LocalBucket, "put", real_put)
    assert bucket.get(f"{MODEL_NAME}/versions/{models.v2}/manifest.json") is None
    assert _pointer(bucket)["version"] == models.v1
    assert _champion(settings) == models.v1
    assert len(ledger_entries(settings, MODEL_NAME)) == 1
    assert verify(settings, MODEL_NAME).ok
    # the retry completes it
    second = promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    assert second.changed and second.previous == models.v1
    _check_layout(bucket, models.v2, settings)
    assert _pointer(bucket)["version"] == models.v2
    assert _champion(settings) == models.v2
    entries = ledger_entries(settings, MODEL_NAME)
    assert [e["version"] for e in entries] == [models.v1, models.v2]
    assert all(set(e) <= set(LEDGER_FIELDS) for e in entries)
    assert entries[1]["prev_sha256"] == hashlib.sha256(raw).hexdigest()
    again = promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    assert not again.changed and again.previous == models.v1  # the true previous version

    # rollback re-points serving and the alias, and records the authenticated requester
    back = rollback(
        to_version=models.v1, reason="CTR dropped", settings=settings, requested_by="bob"
    )
    assert back.previous == models.v2 and _pointer(bucket)["version"] == models.v1
    last = ledger_entries(settings, MODEL_NAME)[-1]
    assert (last["action"], last["version"], last["previous_version"]) == (
        "rollback",
        models.v1,
        models.v2,
    )
    assert (last["reason"], last["requested_by"]) == ("CTR dropped", "bob")
    with pytest.raises(ShopMLError, match="already the served version"):
        rollback(to_version=models.v1, reason="again", settings=settings, requested_by="bob")
    with pytest.raises(ShopMLError, match="version 99 was never promoted"):
        rollback(to_version=99, reason="typo", settings=settings, requested_by="bob")
    with pytest.raises(ShopMLError, match="authenticated login"):
        rollback(to_version=models.v2, reason="anon", settings=settings, requested_by="")
    assert len(ledger_entries(settings, MODEL_NAME)) == 3
    assert verify(settings, MODEL_NAME).ok


def test_an_unfinished_promotion_is_reported_and_finished_by_its_rerun(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    bucket = open_bucket(settings.serving_bucket_uri)
    promote(version=models.v1, settings=settings, review=review("run-1"))
    real_put = LocalBucket.put

    def no_pointer(self: LocalBucket, key: str, data: bytes) -> None:
        if key.endswith("current.json"):
            raise OSError("connection lost (simulated)")
        real_put(self, key, data)

    monkeypatch.setattr(LocalBucket, "put", no_pointer)
    with pytest.raises(OSError, match="simulated"):
        promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    monkeypatch.setattr(LocalBucket, "put", real_put)
    state = verify(settings, MODEL_NAME)
    assert [p.kind for p in state.problems] == ["unfinished"]
    assert "did not finish; it still serves version" in state.problems[0].message
    done = promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    assert done.changed and _pointer(bucket)["version"] == models.v2
    assert len(ledger_entries(settings, MODEL_NAME)) == 2 and verify(settings, MODEL_NAME).ok


# ----------------------------------------------------------------------------- tampering


def _tamper_cases(model: str, v1: int, v2: int) -> dict[str, tuple[Any, str]]:
    """name -> (edit of the bucket folder, the text the failure must name)."""

    def edit_file(root: Path) -> None:
        path = root / model / "versions" / str(v1) / "feature_service.json"
        path.write_text(path.read_text().replace("recommender_ranker", "anything"))

    def edit_and_rehash(root: Path) -> None:
        edit_file(root)
        manifest_path = root / model / "versions" / str(v1) / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        data = (root / model / "versions" / str(v1) / "feature_service.json").read_bytes()
        manifest["files"]["feature_service.json"] = hashlib.sha256(data).hexdigest()
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def edit_served(root: Path) -> None:
        path = root / model / "versions" / str(v2) / "bundle" / "ranker.txt"
        path.write_bytes(path.read_bytes() + b"\n")

    def edit_entry(root: Path) -> None:
        path = root / model / "ledger" / "00000001.json"
        entry = json.loads(path.read_text())
        entry["approved_by"] = "ceo"
        path.write_text(json.dumps(entry, sort_keys=True) + "\n")

    def truncate_entry(root: Path) -> None:
        path = root / model / "ledger" / "00000002.json"
        path.write_bytes(path.read_bytes()[:40])

    def delete_entry(root: Path) -> None:
        (root / model / "ledger" / "00000002.json").unlink()

    def delete_ledger(root: Path) -> None:
        shutil.rmtree(root / model / "ledger")

    def pointer(text: str) -> Any:
        return lambda root: (root / model / "current.json").write_text(text)

    def pointer_elsewhere(root: Path) -> None:
        path = root / model / "current.json"
        body = json.loads(path.read_text())
        body["version"] = v1
        path.write_text(json.dumps(body))

    def pointer_unknown(root: Path) -> None:
        path = root / model / "current.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))

    def add_file(root: Path) -> None:
        (root / model / "versions" / str(v1) / "bundle" / "extra.bin").write_bytes(b"x")

    return {
        "a file edited": (edit_file, f"versions/{v1}/feature_service.json: sha256 differs"),
        "a file edited, manifest re-hashed": (edit_and_rehash, f"versions/{v1}/manifest.json: differs from the manifest the ledger recorded"),
        "the served bundle edited": (edit_served, f"versions/{v2}/bundle/ranker.txt: sha256 differs"),
        "a file added": (add_file, f"versions/{v1}/bundle/extra.bin: not listed"),
        "a ledger entry edited": (edit_entry, "ledger/00000002.json: prev_sha256"),
        "a ledger entry cut": (truncate_entry, "ledger/00000002.json: not valid JSON"),
        "the head entry deleted": (delete_entry, "current.json: names ledger entry 2"),
        "the ledger deleted": (delete_ledger, "ledger: empty or deleted while"),
        "the pointer not JSON": (pointer("{\"version\": 2"), "current.json: not valid JSON"),
        "the pointer's version not a number": (pointer('{"version": "x", "ledger_seq": 2}'), "current.json: version 'x' is not a positive number"),
        "the pointer moved to another version": (pointer_elsewhere, f"current.json: serves version {v1}, the ledger serves version {v2}"),
        "the pointer at a version never promoted": (pointer_unknown, "current.json: serves version 99"),
    }  # fmt: skip


def test_every_bucket_edit_is_detected_and_refused(models: Models, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    _promote_two(models, models.settings_with(clean.as_uri()))
    cases = _tamper_cases(MODEL_NAME, models.v1, models.v2)
    for n, (name, (edit, named)) in enumerate(cases.items()):
        root = tmp_path / f"case{n}"
        shutil.copytree(clean, root)
        edit(root)
        settings = models.settings_with(root.as_uri())
        state = verify(settings, MODEL_NAME)
        assert state.damaged, name
        assert any(named in p.message for p in state.damaged), (name, state.problems)
        before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        with pytest.raises(ShopMLError, match=r"refused: .*; nothing was changed"):
            rollback(to_version=models.v1, reason="drill", settings=settings, requested_by="bob")
        if name in ("a file edited", "a file added"):
            # an old version's files are checked when it would be served again (the
            # rollback above) and by `promotions verify`; promotion checks every manifest
            assert not promote(version=models.v2, settings=settings, review=review("run-2", "alice")).changed  # fmt: skip
        else:
            with pytest.raises(ShopMLError, match="refused"):
                promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before, name


def test_a_damaged_or_deleted_ledger_is_never_read_as_empty(models: Models, tmp_path: Path) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    _promote_two(models, settings)
    shutil.rmtree(tmp_path / "bucket" / MODEL_NAME / "ledger")
    with pytest.raises(ShopMLError, match=r"empty or deleted while .*current\.json serves"):
        ledger_entries(settings, MODEL_NAME)
    (tmp_path / "bucket" / MODEL_NAME / "current.json").unlink()
    # the pointer gone too: the promoted versions are still there to say so
    problems = [p.message for p in verify(settings, MODEL_NAME).damaged]
    assert any("a complete version the ledger never recorded" in m for m in problems)


# ----------------------------------------------------------------------------- S3


def test_promote_to_s3_served_by_moto(models: Models, s3: str) -> None:
    import boto3

    settings = models.settings_with("s3://serving/shopml", s3)
    _promote_two(models, settings)
    bucket = open_bucket(settings.serving_bucket_uri, s3)
    _check_layout(bucket, models.v2, settings)
    raw = (
        boto3.client("s3", endpoint_url=s3)
        .get_object(Bucket="serving", Key=f"shopml/{MODEL_NAME}/current.json")["Body"]
        .read()
    )
    assert json.loads(raw)["version"] == models.v2
    assert not promote(
        version=models.v2, settings=settings, review=review("run-2", "alice")
    ).changed
    assert [e["approved_by"] for e in ledger_entries(settings, MODEL_NAME)] == ["reviewer", "alice"]
    assert verify(settings, MODEL_NAME).ok


@pytest.mark.parametrize("where", ["s3", "local"])
def test_writers_racing_to_append_keep_every_entry(where: str, s3: str, tmp_path: Path) -> None:
    uri = "s3://serving/race" if where == "s3" else (tmp_path / "bucket").as_uri()
    bucket = open_bucket(uri, s3)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            ledger_module.append(bucket, "m", {"action": "promote", "version": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = ledger_module.read_ledger(bucket, "m")  # the chain verifies
    assert [e.seq for e in entries] == list(range(1, 9))
    assert sorted(e.version for e in entries) == list(range(1, 9))


@pytest.mark.parametrize("fails_at", ["a bundle file", "current.json"])
def test_s3_failing_mid_promotion_serves_nothing_new_and_the_rerun_finishes(
    models: Models, s3: str, monkeypatch: pytest.MonkeyPatch, fails_at: str
) -> None:
    from botocore.exceptions import EndpointConnectionError

    from pipelines.errors import ServiceUnavailableError
    from pipelines.promotion.bucket import S3Bucket

    settings = models.settings_with(f"s3://serving/outage-{len(fails_at)}", s3)
    assert promote(version=models.v1, settings=settings, review=review("run-1")).changed
    put = S3Bucket.put

    def unreachable(self: S3Bucket, key: str, data: bytes) -> None:
        hit = key.endswith("current.json") if fails_at == "current.json" else "/bundle/" in key
        if hit:
            raise EndpointConnectionError(endpoint_url=s3)
        put(self, key, data)

    monkeypatch.setattr(S3Bucket, "put", unreachable)
    with pytest.raises(ServiceUnavailableError, match=r"promoting shopml-recommender: the serving bucket s3://serving/outage-\w+ failed \(Could not connect"):  # fmt: skip
        promote(version=models.v2, settings=settings, review=review("run-2", "alice"))
    bucket = open_bucket(settings.serving_bucket_uri, s3)
    assert _pointer(bucket)["version"] == models.v1  # what is served did not change
    assert _champion(settings) == models.v1  # nor the alias
    monkeypatch.setattr(S3Bucket, "put", put)  # S3 is back: the task's retry
    assert promote(version=models.v2, settings=settings, review=review("run-2", "alice")).changed
    assert _pointer(bucket)["version"] == models.v2 and _champion(settings) == models.v2
    assert [e["version"] for e in ledger_entries(settings, MODEL_NAME)] == [models.v1, models.v2]
    assert verify(settings, MODEL_NAME).ok
