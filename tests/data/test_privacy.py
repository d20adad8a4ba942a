"""Shoppers' privacy at import: keyed pseudonyms, erased shoppers kept out, and no direct
identifiers in a snapshot (pipelines/data/privacy.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.importers.mapping import import_mapped
from pipelines.data.importers.movielens import import_movielens_100k
from pipelines.data.privacy import (
    Privacy,
    erasure_hash,
    key_fingerprint,
    looks_like_contact,
    privacy_key,
    pseudonym,
)
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ConfigError, ContractError
from pipelines.settings import load_settings
from tests.data.test_importers import write_movielens, write_shop

runner = CliRunner()
KEY_A = b"a" * 64
KEY_B = b"b" * 64


def _files_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_same_id_same_pseudonym_across_imports_and_another_key_another(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    one = import_mapped(mapping, out=tmp_path / "one", privacy=Privacy(KEY_A, pseudonymise=True))
    two = import_mapped(mapping, out=tmp_path / "two", privacy=Privacy(KEY_A, pseudonymise=True))
    other = import_mapped(mapping, out=tmp_path / "b", privacy=Privacy(KEY_B, pseudonymise=True))
    ids = {
        name: Snapshot.open(r.path).read("users").column("user_id").to_pylist()
        for name, r in (("one", one), ("two", two), ("other", other))
    }
    assert ids["one"] == ids["two"] == [pseudonym("c1", KEY_A), pseudonym("c2", KEY_A)]
    assert all(i.startswith("p_") and len(i) == 34 for i in ids["one"])
    assert not set(ids["one"]) & set(ids["other"])
    assert one.snapshot_id == two.snapshot_id != other.snapshot_id
    snap = Snapshot.open(one.path)
    events = snap.read("events").to_pandas()
    # history still joins: every event's shopper is a stored shopper; sessions are hashed too
    assert set(events["user_id"]) <= set(ids["one"])
    assert events["session_id"].str.startswith("s_").all()
    assert events.groupby("session_id")["user_id"].nunique().max() == 1
    notes = " ".join(snap.manifest["notes"])
    assert f"key {key_fingerprint(KEY_A)}" in notes
    # the raw ids and the key are nowhere in what the import wrote
    written = _files_bytes(snap.path)
    for secret in (KEY_A, KEY_A.decode().encode(), b"c1,", b'"c1"'):
        assert secret not in written


def test_pseudonyms_are_idempotent_and_sessions_live_in_another_domain() -> None:
    p = pseudonym("c1", KEY_A)
    assert pseudonym(p, KEY_A) == p  # the events log already holds pseudonyms
    assert pseudonym("c1", KEY_A, prefix="s_")[2:] != p[2:]
    assert erasure_hash(p, KEY_A) != erasure_hash(p, KEY_B)
    assert p[2:] not in erasure_hash(p, KEY_A)


def test_movielens_sessions_built_from_user_ids_do_not_keep_them(tmp_path: Path) -> None:
    src = write_movielens(tmp_path / "ml")
    r = import_movielens_100k(src, out=tmp_path / "snap", privacy=Privacy(KEY_A, True))
    events = Snapshot.open(r.path).read("events").to_pandas()
    assert not events["session_id"].str.contains("u1-").any()
    assert set(events["user_id"]) == {pseudonym("1", KEY_A), pseudonym("2", KEY_A)}


def test_erased_shoppers_are_dropped_from_every_table_and_counted(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    gone = pseudonym("c2", KEY_A)
    privacy = Privacy(KEY_A, pseudonymise=True, erased=frozenset({erasure_hash(gone, KEY_A)}))
    r = import_mapped(mapping, out=tmp_path / "snap", privacy=privacy)
    snap = Snapshot.open(r.path)
    assert snap.read("users").column("user_id").to_pylist() == [pseudonym("c1", KEY_A)]
    assert gone not in snap.read("events").column("user_id").to_pylist()
    assert r.rows["events"] == 2 and r.rows["users"] == 1
    assert "rows of erased shoppers dropped (users 1, events 1" in " ".join(snap.manifest["notes"])
    # without pseudonyms the erasure hash is of the id as stored
    plain = Privacy(KEY_A, erased=frozenset({erasure_hash("c1", KEY_A)}))
    kept = plain.protect("events", pa.table({"user_id": ["c1", None, "c2"]}))
    assert kept.column("user_id").to_pylist() == [None, "c2"]


def test_a_privacy_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="privacy key"):
        Privacy(None, pseudonymise=True)


def _shop_with(tmp_path: Path, users_csv: str, users_block: str) -> Path:
    mapping = write_shop(tmp_path / "shop")
    (mapping.parent / "users.csv").write_text(users_csv)
    text = mapping.read_text()
    start = text.index("  users:")
    end = text.index("  items:")
    mapping.write_text(text[:start] + users_block + text[end:])
    return mapping


USERS = """  users:
    path: users.csv
{extra}    columns:
      user_id: {user_id}
      signup_ts: {{from: joined, format: "%d.%m.%Y", timezone: Europe/Berlin}}
      age: {age}
{more}"""


def test_a_direct_identifier_column_is_refused_unless_dropped(tmp_path: Path) -> None:
    csv = "customer,joined,age,E-Mail\nc1,01.07.2025,34,ann@example.com\nc2,02.07.2025,,bo@example.org\n"
    block = USERS.format(extra="", user_id="customer", age="age", more="")
    mapping = _shop_with(tmp_path, csv, block)
    with pytest.raises(ContractError) as err:
        import_mapped(mapping, out=tmp_path / "snap")
    assert "users.csv, column 'E-Mail'" in str(err.value) and "tables.users.drop" in str(err.value)
    assert "example" not in str(err.value)
    assert not (tmp_path / "snap").exists()
    dropped = USERS.format(extra="    drop: [E-Mail]\n", user_id="customer", age="age", more="")
    mapping = _shop_with(tmp_path, csv, dropped)
    r = import_mapped(mapping, out=tmp_path / "snap")
    assert b"example" not in _files_bytes(r.path)


def test_ids_made_from_e_mail_addresses_need_pseudonyms(tmp_path: Path) -> None:
    csv = "email,joined,age\nann@example.com,01.07.2025,34\nbo@example.org,02.07.2025,\n"
    events = "email;sku;action;epoch_ms;visit\nann@example.com;101;pv;1767261600000;v1\n"
    block = USERS.format(extra="", user_id="email", age="age", more="")
    mapping = _shop_with(tmp_path, csv, block)
    (mapping.parent / "events.csv").write_text(events)
    mapping.write_text(mapping.read_text().replace("user_id: customer", "user_id: email"))
    with pytest.raises(ContractError, match=r"column 'email'.*only user_id may come from one"):
        import_mapped(mapping, out=tmp_path / "snap")
    r = import_mapped(mapping, out=tmp_path / "snap", privacy=Privacy(KEY_A, pseudonymise=True))
    snap = Snapshot.open(r.path)
    assert snap.read("users").column("user_id").to_pylist() == [
        pseudonym("ann@example.com", KEY_A),
        pseudonym("bo@example.org", KEY_A),
    ]
    assert b"example" not in _files_bytes(r.path)


def test_contact_details_in_a_column_are_refused_by_row_and_column(tmp_path: Path) -> None:
    csv = "customer,joined,age,zone\nc1,01.07.2025,34,north\nc2,02.07.2025,,+49 170 1234567\n"
    block = USERS.format(extra="", user_id="customer", age="age", more="      region: zone\n")
    mapping = _shop_with(tmp_path, csv, block)
    with pytest.raises(ContractError) as err:
        import_mapped(mapping, out=tmp_path / "snap")
    message = str(err.value)
    assert "users.csv, row 2, column 'zone'" in message and "a phone number" in message
    assert "1234567" not in message


def test_demographics_are_coarsened_at_import(tmp_path: Path) -> None:
    csv = "customer,joined,age,zip\nc1,01.07.2025,34,SW1A 1AA\nc2,02.07.2025,,94043\n"
    block = USERS.format(
        extra="",
        user_id="customer",
        age="{from: age, band: 10}",
        more="      region: {from: zip, keep: 3}\n",
    )
    r = import_mapped(_shop_with(tmp_path, csv, block), out=tmp_path / "snap")
    users = Snapshot.open(r.path).read("users").to_pandas()
    assert users["age"].tolist()[0] == 30 and users["age"].isna().tolist()[1]
    assert users["region"].tolist() == ["SW1", "940"]
    wrong = USERS.format(extra="", user_id="{from: customer, band: 10}", age="age", more="")
    with pytest.raises(ConfigError, match=r"columns.user_id: `band` applies to users.age only"):
        import_mapped(_shop_with(tmp_path, csv, wrong), out=tmp_path / "x")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("ann@example.com", "an e-mail address"),
        ("+49 170 1234567", "a phone number"),
        ("(030) 1234-5678", "a phone number"),
        ("12345678", None),  # a numeric customer id
        ("2017-11-01", None),
        ("u-1234-5678", None),
        ("192.168.1.10", None),
    ],
)
def test_what_looks_like_contact_details(value: str, kind: str | None) -> None:
    assert looks_like_contact(value) == kind


def test_the_privacy_key_is_created_0600_and_refused_when_others_may_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match="no privacy key"):
        privacy_key(settings)
    key = privacy_key(settings, create=True)
    assert privacy_key(settings) == key and len(key) >= 32
    assert settings.privacy_key_file.stat().st_mode & 0o777 == 0o600
    settings.privacy_key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        privacy_key(settings)


def test_pseudonymise_defaults_by_profile_and_rejects_nonsense(tmp_path: Path) -> None:
    assert load_settings({"SHOPML_HOME": str(tmp_path)}).pseudonymise is False
    production = {
        "SHOPML_ENV": "production",
        "SHOPML_MLFLOW_TRACKING_URI": "http://mlflow",
        "SHOPML_SERVING_BUCKET_URI": "s3://b/p",
        "SHOPML_WORK_URI": "s3://w/r",
    }
    assert load_settings(production).pseudonymise is True
    assert load_settings({**production, "SHOPML_PSEUDONYMISE": "false"}).pseudonymise is False
    with pytest.raises(ConfigError, match="pseudonymise='maybe'"):
        load_settings({"SHOPML_PSEUDONYMISE": "maybe"})


def test_the_cli_pseudonymises_with_the_settings_key(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    result = runner.invoke(
        app,
        ["data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "s"), "--pseudonymise"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    key = privacy_key(load_settings())
    ids = Snapshot.open(tmp_path / "s").read("users").column("user_id").to_pylist()
    assert ids == [pseudonym("c1", key), pseudonym("c2", key)]
    assert key.decode() not in result.output and "pseudonymised" in result.output
    plain = runner.invoke(
        app, ["data", "import", "csv", "--mapping", str(mapping), "--out", str(tmp_path / "p")]
    )
    assert plain.exit_code == 0, plain.output
    assert Snapshot.open(tmp_path / "p").read("users").column("user_id").to_pylist() == ["c1", "c2"]
