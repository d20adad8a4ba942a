"""Validation: a clean snapshot is accepted; each kind of corruption fails its own check."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.snapshot import MANIFEST, Snapshot, build_manifest
from pipelines.errors import ShopMLError
from pipelines.validation.config import ValidationConfig
from pipelines.validation.validate import read_status, require_accepted, validate_snapshot

CFG = GeneratorConfig(users=600, items=200, events=20_000, seed=3, days=30, judged_queries=40)
NOW = datetime(2026, 6, 1, tzinfo=UTC)  # after the generated period, fixed so tests do not age
runner = CliRunner()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("val") / "clean"
    generate_shop(CFG, out=path)
    return path


def copy_of(clean: Path, tmp_path: Path) -> Path:
    target = tmp_path / "snap"
    shutil.copytree(clean, target, ignore=shutil.ignore_patterns("validation"))
    return target


def rewrite(
    snapshot: Path,
    table: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    types: dict[str, pa.DataType] | None = None,
) -> None:
    """Corrupt one table the way a broken export would, keeping the manifest consistent with it
    (so the corruption, not a checksum, is what validation has to find)."""
    path = snapshot / f"{table}.parquet"
    schema = pq.read_schema(path)
    frame = change(pq.read_table(path).to_pandas())
    types = types or {}
    loose = pa.schema(
        [
            pa.field(c, types.get(c, schema.field(c).type if c in schema.names else None))
            for c in frame.columns
        ]
    )
    pq.write_table(
        pa.Table.from_pandas(frame, schema=loose, preserve_index=False), path, compression="zstd"
    )
    old = json.loads((snapshot / MANIFEST).read_text())
    manifest = build_manifest(
        snapshot, source=old["source"], producer=old["producer"], notes=old["notes"], allow_empty=()
    )
    (snapshot / MANIFEST).write_text(json.dumps(manifest, indent=2))


def failed(report: object) -> dict[str, object]:
    return {c.id: c for c in report.failed}  # type: ignore[attr-defined]


def test_clean_snapshot_is_accepted_with_docs_and_results(clean: Path) -> None:
    report = validate_snapshot(snapshot_uri=clean, now=NOW)
    assert report.accepted, [c.summary for c in report.failed]
    assert len(report.checks) > 40
    status = read_status(Snapshot.open(clean))
    assert status is not None and status["status"] == "accepted"
    result = json.loads((clean / "validation" / "result.json").read_text())
    assert result["status"] == "accepted" and result["data_docs"] == "data_docs/index.html"
    docs = clean / "validation" / "data_docs"
    assert "shopml.events" in (docs / "index.html").read_text()
    assert list(docs.glob("validations/**/*.html"))
    require_accepted(Snapshot.open(clean))


def test_null_ids_fail_not_null_with_counts(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    rewrite(snap, "events", lambda df: df.assign(user_id=df["user_id"].where(df.index % 100 != 7)))
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert not report.accepted
    check = failed(report)["events.user_id.not_null"]
    assert check.unexpected_count == 200  # rows 7, 107, ... of 20,000
    assert check.summary == "events.user_id: 200 rows have no value (1.00%)"
    assert len(check.sample_rows) == 20 and all(r["user_id"] is None for r in check.sample_rows)


def test_unknown_ids_fail_referential_integrity(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    ghosts = np.array([f"ghost{i % 37}" for i in range(1_204)], dtype=object)
    rewrite(
        snap,
        "events",
        lambda df: df.assign(item_id=np.concatenate([ghosts, df["item_id"].to_numpy()[1_204:]])),
    )
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    check = failed(report)["events.item_id.known"]
    assert check.unexpected_count == 1_204
    assert check.summary.startswith(
        "events.item_id: 1,204 rows reference 37 unknown items, e.g. 'ghost"
    )
    assert set(failed(report)) == {"events.item_id.known"}


def test_negative_prices(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    rewrite(snap, "items", lambda df: df.assign(price=np.where(df.index < 3, -5.0, df["price"])))
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    check = failed(report)["items.price.positive"]
    assert check.unexpected_count == 3
    assert check.summary == "items.price: 3 rows break 'price is > 0', e.g. -5.0"
    assert [r["price"] for r in check.sample_rows] == [-5.0, -5.0, -5.0]


def test_future_timestamps(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    future = pd.Timestamp(NOW + timedelta(days=30))
    rewrite(snap, "events", lambda df: df.assign(ts=df["ts"].where(df.index >= 10, future)))
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert set(failed(report)) == {"events.ts.not_future"}
    check = failed(report)["events.ts.not_future"]
    assert check.unexpected_count == 10
    assert check.summary.startswith("events.ts: 10 rows are in the future, e.g. '2026-07-01")


def test_duplicated_events_above_the_bound(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)

    def duplicate(df: pd.DataFrame) -> pd.DataFrame:
        copies = df.iloc[:600].assign(
            event_id=[f"dup{i}" for i in range(600)]
        )  # 3% repeated under new ids
        return pd.concat([df, copies], ignore_index=True)

    rewrite(snap, "events", duplicate)
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert set(failed(report)) == {"events.duplicates"}
    check = failed(report)["events.duplicates"]
    assert check.unexpected_count == 1_200  # every copy counts: both rows of each of the 600 pairs
    assert "1,200 rows" in check.summary and "at most 1.0% of events share" in check.summary
    # 0.4% copies = 0.8% of rows in a pair: within the 1% bound.
    few = copy_of(clean, tmp_path / "few")
    rewrite(
        few,
        "events",
        lambda df: pd.concat(
            [df, df.iloc[:80].assign(event_id=[f"d{i}" for i in range(80)])], ignore_index=True
        ),
    )
    assert "events.duplicates" not in failed(validate_snapshot(snapshot_uri=few, now=NOW))
    # Within the bound it passes.
    relaxed = validate_snapshot(
        snapshot_uri=snap, now=NOW, cfg=ValidationConfig(duplicate_event_max_ratio=0.10)
    )
    assert relaxed.accepted


def test_drifted_category_mix_against_the_baseline(clean: Path, tmp_path: Path) -> None:
    validate_snapshot(snapshot_uri=clean, now=NOW)
    same = copy_of(clean, tmp_path / "a")
    steady = validate_snapshot(snapshot_uri=same, baseline_uri=clean, now=NOW)
    assert steady.accepted, [c.summary for c in steady.failed]
    assert steady.report["baseline"]["new_user_share"] == 0.0

    snap = copy_of(clean, tmp_path / "b")
    items = pd.read_parquet(clean / "items.parquet")
    phones = items.loc[items["category"] == "Electronics/Phones", "item_id"].to_numpy()
    rewrite(
        snap,
        "events",
        lambda df: df.assign(
            item_id=np.where(df.index % 2 == 0, phones[df.index % len(phones)], df["item_id"])
        ),
    )
    report = validate_snapshot(snapshot_uri=snap, baseline_uri=clean, now=NOW)
    check = failed(report)["events.category_mix_drift"]
    assert check.observed_value > 0.1
    assert "largest shifts: Electronics/Phones" in check.summary
    assert "events.duplicates" not in failed(report)


def test_missing_column_and_wrong_type(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path / "a")
    rewrite(snap, "items", lambda df: df.drop(columns=["brand"]))
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert set(failed(report)) == {"items.columns"}
    assert "expected 'brand', found 'price'" in failed(report)["items.columns"].summary

    snap = copy_of(clean, tmp_path / "b")
    as_numbers = {"session_id": pa.int64()}
    rewrite(
        snap,
        "events",
        lambda df: df.assign(session_id=df["session_id"].str[1:].astype("int64")),
        as_numbers,
    )
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert set(failed(report)) == {"events.session_id.type"}
    assert (
        failed(report)["events.session_id.type"].summary
        == "events.session_id: stored as int64, not the contract type"
    )


def test_row_count_and_price_drift_against_the_baseline(clean: Path, tmp_path: Path) -> None:
    validate_snapshot(snapshot_uri=clean, now=NOW)
    snap = copy_of(clean, tmp_path)
    rewrite(snap, "events", lambda df: df.iloc[: len(df) // 4])
    rewrite(snap, "items", lambda df: df.assign(price=df["price"] * 1.5))
    report = validate_snapshot(snapshot_uri=snap, baseline_uri=clean, now=NOW)
    assert {"events.row_count_vs_baseline", "items.price_drift"} <= set(failed(report))
    rows = failed(report)["events.row_count_vs_baseline"]
    assert rows.observed_value == 5_000
    assert rows.summary == "events: 5,000 rows; row count within x0.5-x2 of the baseline's 20,000"
    assert "median price" in failed(report)["items.price_drift"].summary


def test_judgment_failures_come_with_sample_rows(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path / "a")
    rewrite(
        snap,
        "judgments",
        lambda df: df.assign(item_id=np.where(np.arange(len(df)) < 5, "gone", df["item_id"])),
    )
    unknown = failed(validate_snapshot(snapshot_uri=snap, now=NOW))["judgments.item_id.known"]
    assert unknown.unexpected_count == 5
    assert len(unknown.sample_rows) == 5
    assert {r["item_id"] for r in unknown.sample_rows} == {"gone"} and all(
        r["query"] for r in unknown.sample_rows
    )

    snap = copy_of(clean, tmp_path / "b")
    rewrite(snap, "judgments", lambda df: pd.concat([df, df.iloc[10:13]], ignore_index=True))
    dup = failed(validate_snapshot(snapshot_uri=snap, now=NOW))["judgments.key.unique"]
    assert dup.unexpected_count == 6  # three pairs
    assert len(dup.sample_rows) == 6


def test_truncated_file_is_quarantined(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    data = (snap / "events.parquet").read_bytes()
    (snap / "events.parquet").write_bytes(data[: len(data) // 2])
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    assert [c.id for c in report.failed] == ["files.sha256"]
    assert (
        "events.parquet: sha256" in report.failed[0].summary
        and "truncated" in report.failed[0].summary
    )
    with pytest.raises(ShopMLError, match="is quarantined"):
        require_accepted(Snapshot.open(snap))


def test_unvalidated_snapshots_are_refused(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)
    with pytest.raises(ShopMLError, match="has not been validated; run `shopml validate"):
        require_accepted(Snapshot.open(snap))


def test_cli_exit_codes_and_summary(clean: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["validate", str(clean)])
    assert ok.exit_code == 0, ok.output
    assert "accepted" in ok.output
    snap = copy_of(clean, tmp_path)
    rewrite(snap, "items", lambda df: df.assign(price=np.where(df.index < 2, 0.0, df["price"])))
    bad = runner.invoke(app, ["validate", str(snap)])
    assert bad.exit_code == 1
    text = " ".join(bad.output.split())
    assert "quarantined" in text and "items.price: 2 rows break 'price is > 0'" in text


def test_zero_or_negative_quantities_and_negative_values(clean: Path, tmp_path: Path) -> None:
    snap = copy_of(clean, tmp_path)

    def broken(events: pd.DataFrame) -> pd.DataFrame:
        events = events.copy()
        events.loc[events.index[:3], "quantity"] = [0, -2, 1]
        events.loc[events.index[3:5], "value"] = [-9.5, 3.0]
        return events

    rewrite(snap, "events", broken, types={"quantity": pa.int32(), "value": pa.float64()})
    report = validate_snapshot(snapshot_uri=snap, now=NOW)
    bad = failed(report)
    assert bad["events.quantity.positive"].unexpected_count == 2
    assert bad["events.value.not_negative"].unexpected_count == 1
    # configurable: zero quantities allowed, refunds allowed
    loose = ValidationConfig(min_quantity=-5, min_value=-100.0)
    assert validate_snapshot(snapshot_uri=snap, now=NOW, cfg=loose).accepted


def test_an_accepted_snapshot_edited_afterwards_is_refused(clean: Path, tmp_path: Path) -> None:
    from pipelines.data.describe import describe_snapshot
    from pipelines.errors import ShopMLError
    from pipelines.features import FeatureConfig, build_features

    snap = tmp_path / "accepted"
    shutil.copytree(clean, snap, ignore=shutil.ignore_patterns("validation"))
    assert validate_snapshot(snapshot_uri=snap, now=NOW).accepted
    events = pq.read_table(snap / "events.parquet")
    pq.write_table(events.slice(100), snap / "events.parquet")  # 100 events gone, manifest kept
    with pytest.raises(ShopMLError, match=r"changed after it was accepted: .*events\.parquet"):
        require_accepted(Snapshot.open(snap))
    with pytest.raises(ShopMLError, match="changed after it was accepted"):
        build_features(snapshot_uri=snap, out_dir=tmp_path / "fs", cfg=FeatureConfig())
    assert describe_snapshot(snap)["integrity"].startswith("ALTERED")
