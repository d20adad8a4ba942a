"""Snapshots: content-hashed ids, a complete manifest, atomic publishing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipelines.data.conform import conform
from pipelines.data.snapshot import MANIFEST, Snapshot, write_snapshot
from pipelines.errors import SnapshotError
from pipelines.io import sha256_file


def tables(price: str = "9.99") -> dict[str, pa.Table]:
    users = pd.DataFrame({"user_id": ["u1", "u2"], "signup_ts": ["2025-12-01", "2025-12-02"]})
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["Mug", "Pan"],
            "category": ["Home/Kitchen", "Home/Kitchen"],
            "price": [price, "30"],
            "currency": ["EUR", "EUR"],
            "created_ts": ["2025-01-01", "2025-01-01"],
        }
    )
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i1", "i1", "i2"],
            "event_type": ["view", "purchase", "view"],
            "ts": ["2026-01-03T10:00:00Z", "2026-01-03T10:05:00Z", "2026-01-05T18:00:00Z"],
            "session_id": ["s1", "s1", "s2"],
        }
    )
    return {
        "users": conform("users", users, file="users"),
        "items": conform("items", items, file="items"),
        "events": conform("events", events, file="events"),
    }


def write(out: Path, data: dict[str, pa.Table], **kwargs: object) -> Snapshot:
    with write_snapshot(out, source="test", producer={"name": "tests"}, **kwargs) as w:  # type: ignore[arg-type]
        for name, table in data.items():
            w.write_table(name, table)
    return Snapshot.open(out)


def test_manifest_records_id_counts_checksums_and_time_range(tmp_path: Path) -> None:
    snap = write(tmp_path / "s", tables())
    m = snap.manifest
    assert m["row_counts"] == {"users": 2, "items": 2, "events": 3, "queries": 0}
    assert m["event_time"] == {"min": "2026-01-03T10:00:00Z", "max": "2026-01-05T18:00:00Z"}
    assert m["source"] == "test" and m["kind"] == "interactions"
    assert m["producer"]["name"] == "tests" and m["producer"]["shopml_version"]
    assert m["created_at"].endswith("Z")
    for name, entry in m["tables"].items():
        assert entry["sha256"] == sha256_file(tmp_path / "s" / f"{name}.parquet")
    assert len(snap.id) == 64
    snap.verify()


def test_id_depends_on_content_only(tmp_path: Path) -> None:
    a = write(tmp_path / "a", tables())
    b = write(tmp_path / "b", tables())
    c = write(tmp_path / "c", tables(price="10.99"))
    assert a.id == b.id
    assert c.id != a.id


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), write_snapshot(tmp_path / "s", source="t", producer={}) as w:
        w.write_table("users", tables()["users"])
        raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_missing_required_table_is_refused_and_nothing_published(tmp_path: Path) -> None:
    data = tables()
    del data["events"]
    with pytest.raises(SnapshotError, match="missing the required 'events' table"):
        write(tmp_path / "s", data)
    assert list(tmp_path.iterdir()) == []


def test_existing_snapshot_is_never_touched_by_a_failed_or_refused_write(tmp_path: Path) -> None:
    first = write(tmp_path / "s", tables())
    before = {p.name: sha256_file(p) for p in (tmp_path / "s").iterdir()}
    with pytest.raises(
        SnapshotError, match="already exists; choose a new --out or pass --overwrite"
    ):
        write(tmp_path / "s", tables(price="1.00"))
    with (
        pytest.raises(RuntimeError),
        write_snapshot(tmp_path / "s", source="t", producer={}, overwrite=True) as w,
    ):
        w.write_table("users", tables()["users"])
        raise RuntimeError("interrupted")
    assert {p.name: sha256_file(p) for p in (tmp_path / "s").iterdir()} == before
    assert Snapshot.open(tmp_path / "s").id == first.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_overwrite_swaps_in_the_complete_new_snapshot(tmp_path: Path) -> None:
    write(tmp_path / "s", tables())
    new = write(tmp_path / "s", tables(price="1.00"), overwrite=True)
    assert Snapshot.open(tmp_path / "s").id == new.id
    assert new.read("items").column("price")[0].as_py() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_snapshot(tmp_path: Path) -> None:
    precious = tmp_path / "work"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "important.txt").write_text("keep me")
    with pytest.raises(SnapshotError, match="exists and is not a snapshot"):
        write(precious, tables(), overwrite=True)
    assert (precious / "sub" / "important.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty", tables())
    assert Snapshot.open(tmp_path / "empty").rows("events") == 3  # an empty folder is fine


def test_a_snapshot_published_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "s"
    with (
        pytest.raises(SnapshotError, match="already exists"),
        write_snapshot(target, source="slow", producer={}) as w,
    ):
        for name, table in tables().items():
            w.write_table(name, table)
        other = write(target, tables(price="2.00"))  # another writer finishes first
    assert Snapshot.open(target).id == other.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_unwritable_target_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapshotError, match="cannot write a snapshot at"):
        write(tmp_path / "file" / "s", tables())


def test_verify_detects_altered_files(tmp_path: Path) -> None:
    snap = write(tmp_path / "s", tables())
    (tmp_path / "s" / "events.parquet").write_bytes(b"not what was written")
    with pytest.raises(SnapshotError, match=r"events.parquet: sha256 .* differs from the manifest"):
        snap.verify()


def test_open_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="does not exist"):
        Snapshot.open(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(SnapshotError, match=f"has no {MANIFEST}"):
        Snapshot.open(tmp_path / "half")
    (tmp_path / "half" / MANIFEST).write_text(json.dumps({"tables": {}}))
    with pytest.raises(SnapshotError, match="lists no 'users' table"):
        Snapshot.open(tmp_path / "half")
