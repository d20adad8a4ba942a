"""``shopml privacy forget`` and ``audit`` on a validated, featurised, served-from shop:
the shopper is gone from the snapshot, the feature tables, the online store, the events
spool, reports and logs; the ledger holds a keyed hash, not the id; a re-import leaves
them out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.importers.mapping import import_mapped
from pipelines.data.privacy import Privacy, erasure_hash, privacy_key
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ConfigError
from pipelines.features.store import online_users
from pipelines.privacy import erasures
from pipelines.privacy.audit import audit
from pipelines.privacy.forget import forget
from pipelines.promotion.bucket import open_bucket
from pipelines.promotion.ledger import LedgerError
from pipelines.settings import load_settings
from pipelines.validation.validate import read_status
from tests.data.test_importers import write_shop

runner = CliRunner()
SHOP = GeneratorConfig(users=300, items=120, events=6_000, seed=3, days=30, judged_queries=10)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, str]:
    """A validated shop with features built and materialised, a spool line, a report and a
    log line naming its most active shopper (returned)."""
    settings = load_settings()
    folder = settings.snapshots_dir / "shop"
    generate_shop(SHOP, out=folder)
    _ok("validate", str(folder))
    _ok("features", "build", str(folder))
    _ok("features", "materialize")
    events = Snapshot.open(folder).read("events").to_pandas()
    user = str(events["user_id"].value_counts().index[0])
    spool = settings.serving_events_dir
    spool.mkdir(parents=True)
    lines = [
        {"type": "purchase", "user_id": user, "item_id": "i1", "ts": "2026-01-01T00:00:00Z"},
        {"type": "view", "user_id": "someone-else", "item_id": "i2", "ts": "2026-01-01T00:00:00Z"},
    ]
    (spool / "events-20260101T000000000000-999999.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines)
    )
    (settings.home / "evaluations" / "report-1").mkdir(parents=True)
    (settings.home / "evaluations" / "report-1" / "summary.md").write_text("nothing personal\n")
    (settings.home / "serving").mkdir(exist_ok=True)
    (settings.home / "serving" / "serve.log").write_text(
        f"GET /v1/recommendations/{user} failed\nGET /v1/recommendations/{user}x ok\n"
    )
    return folder, user


def test_forget_removes_the_shopper_everywhere_and_audit_proves_it(
    shop: tuple[Path, str],
) -> None:
    folder, user = shop
    settings = load_settings()
    before = Snapshot.open(folder)
    old_tables = {t: before.read(t).to_pandas() for t in ("users", "events", "queries", "items")}
    found = runner.invoke(app, ["privacy", "audit", user])
    assert found.exit_code == 1, found.output
    for store in ("snapshots", "feature store", "online store", "serving events", "serving"):
        assert store in found.output, store

    out = _ok(
        "privacy", "forget", user, "--reason", "GDPR Art. 17 request #1", "--requested-by", "dpo"
    )
    assert "erasure request 1 completed (ledger entry 2)" in out

    # the audit finds nothing anywhere; a longer id that only starts with it is kept
    clean = runner.invoke(app, ["privacy", "audit", user])
    assert clean.exit_code == 0, clean.output
    assert "0 location(s) with traces" in clean.output
    assert f"{user}x ok" in (settings.home / "serving" / "serve.log").read_text()
    assert online_users([user], settings) == 0

    # the snapshot: a new content hash, only the shopper's rows gone, and it validates
    after = Snapshot.open(folder)
    assert after.id != before.id
    assert after.manifest["producer"]["erasure"] == {"request": 1, "replaces": before.id}
    status = read_status(after)
    assert status is not None and status["snapshot_id"] == after.id
    assert status["status"] == "accepted"
    for table, old in old_tables.items():
        new = after.read(table).to_pandas()
        expected = old[old["user_id"] != user] if "user_id" in old.columns else old
        pd.testing.assert_frame_equal(
            new.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
        )
    assert len(old_tables["events"]) > len(after.read("events"))

    # the spool keeps the other shopper's line
    spool = next(settings.serving_events_dir.glob("events-*.jsonl")).read_text()
    assert user not in spool and "someone-else" in spool

    # the ledger: a keyed hash of the id, who and why; never the id
    bucket = open_bucket(settings.serving_bucket_uri)
    entries = erasures.read(bucket)
    assert [e.body["action"] for e in entries] == ["requested", "completed"]
    key = privacy_key(settings)
    assert erasure_hash(user, key) in entries[0].body["users"]
    assert entries[0].body["requested_by"] == "dpo"
    assert entries[0].body["reason"] == "GDPR Art. 17 request #1"
    assert entries[1].body["stores"]["snapshots"] > 0
    assert entries[1].body["stores"]["online_store"] > 0
    raw = b"".join(bucket.get(k) or b"" for k in bucket.keys("privacy"))
    assert user.encode() not in raw


def test_a_re_import_of_the_original_files_leaves_the_erased_shopper_out(
    tmp_path: Path,
) -> None:
    mapping = write_shop(tmp_path / "files")
    settings = load_settings()
    _ok("data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "first"))
    forget(["c1"], reason="request #2", requested_by="dpo", settings=settings)
    _ok("data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "again"))
    again = Snapshot.open(tmp_path / "again")
    assert "c1" not in again.read("users").column("user_id").to_pylist()
    assert "c1" not in again.read("events").column("user_id").to_pylist()
    assert any("erased shoppers dropped" in n for n in again.manifest["notes"])
    # also when pseudonymised: the erasure list covers both forms of the id
    key = privacy_key(settings)
    erased = erasures.erased_hashes(erasures.read(open_bucket(settings.serving_bucket_uri)))
    pseudo = import_mapped(
        mapping, out=tmp_path / "pseudo", privacy=Privacy(key, pseudonymise=True, erased=erased)
    )
    assert pseudo.rows["users"] == 1


def test_an_edited_erasure_ledger_is_refused(tmp_path: Path) -> None:
    settings = load_settings()
    forget(["u-1"], reason="request #3", requested_by="dpo", settings=settings)
    bucket = open_bucket(settings.serving_bucket_uri)
    first = bucket.keys("privacy/erasures")[0]
    body = json.loads(bucket.get(first) or b"{}")
    body["users"] = []
    bucket.put(first, (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode())
    with pytest.raises(LedgerError):
        erasures.read(bucket)


def test_forget_needs_a_reason_and_sane_ids() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match="--reason"):
        forget(["u1"], reason=" ", requested_by="x", settings=settings)
    with pytest.raises(ConfigError, match="USER_ID"):
        forget(["x" * 129], reason="r", requested_by="x", settings=settings)
    result = runner.invoke(app, ["privacy", "forget", "u1"])
    assert result.exit_code == 2 and "--reason" in result.output


def test_audit_of_a_clean_home_needs_no_key(tmp_path: Path) -> None:
    report = audit(["nobody"], load_settings())
    assert report.clean and report.forms == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_runs_in_a_remote_work_storage_that_hold_the_shopper_are_removed(
    s3: str, tmp_path: Path
) -> None:
    from pipelines.privacy.forget import _remote_runs

    work = open_bucket("s3://work/runs", s3)
    table = tmp_path / "rows.parquet"
    pd.DataFrame({"user_id": ["u1", "u7"], "item_id": ["i1", "i2"]}).to_parquet(table)
    other = tmp_path / "other.parquet"
    pd.DataFrame({"user_id": ["u12", "u7"], "item_id": ["i1", "i2"]}).to_parquet(other)
    work.put_file("run-a/stage/rows.parquet", table)
    work.put("run-a/plan.json", b'{"snapshot": "s"}')
    work.put_file("run-b/stage/rows.parquet", other)
    assert _remote_runs(work, ["u1"]) == 1
    assert work.keys("run-a") == [] and work.keys("run-b") == ["run-b/stage/rows.parquet"]
    assert _remote_runs(work, ["u1"]) == 0
