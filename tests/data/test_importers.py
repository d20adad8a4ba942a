"""Importers: MovieLens, mapped CSV/parquet, judgments; bad input is refused with its location."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.importers.judgments import import_judgments
from pipelines.data.importers.mapping import import_mapped, load_mapping
from pipelines.data.importers.movielens import import_movielens_100k
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ConfigError, ContractError
from pipelines.io import sha256_file
from tests.conftest import REPO, shared_data

runner = CliRunner()

# ----------------------------------------------------------------------------- MovieLens


def write_movielens(folder: Path, *, ratings: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        ratings
        or "1\t10\t5\t881250949\n1\t20\t3\t881250999\n2\t10\t1\t891717742\n2\t30\t4\t878887116\n"
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))

    def flags(*on: str) -> str:
        return "|".join("1" if g in on else "0" for g in genres)

    rows = [
        f"10|Café Society (1995)|01-Jan-1995||http://x|{flags('Comedy', 'Film-Noir')}",
        f"20|Drama Two (1996)|01-Jan-1996||http://x|{flags('Drama')}",
        f"30|Comedy Three (1998)|01-Jan-1998||http://x|{flags('Comedy', 'Drama')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    return folder


def test_movielens_mapping(tmp_path: Path) -> None:
    src = write_movielens(tmp_path / "ml")
    r = import_movielens_100k(src, out=tmp_path / "snap")
    assert r.rows == {"users": 2, "items": 3, "events": 4, "queries": 0}
    snap = Snapshot.open(r.path)
    ev = snap.read("events").to_pandas().set_index("event_id")
    assert ev.loc["r1", "event_type"] == "purchase" and ev.loc["r1", "value"] == 5.0
    assert ev.loc["r2", "event_type"] == "add_to_cart"
    assert ev.loc["r3", "event_type"] == "view"
    assert ev.loc["r1", "session_id"] == "u1-19971204"
    assert ev.loc["r1", "ts"] == pd.Timestamp(881250949, unit="s", tz="UTC")
    users = snap.read("users").to_pandas().set_index("user_id")
    assert (
        users.loc["2", "region"] == "94043"
        and users.loc["2", "gender"] == "F"
        and users.loc["2", "age"] == 53
    )
    assert users.loc["2", "signup_ts"] == pd.Timestamp(
        878887116, unit="s", tz="UTC"
    )  # first rating
    items = snap.read("items").to_pandas().set_index("item_id")
    assert items.loc["10", "title"] == "Café Society (1995)"  # Latin-1 decoded
    # Most specific genre: Film-Noir (1 film) over Comedy (2 films); Drama+Comedy tie -> u.genre order.
    assert items.loc["10", "category"] == "Movies/Film-Noir"
    assert items.loc["30", "category"] == "Movies/Comedy"
    assert "Genres: Comedy, Film-Noir" in items.loc["10", "description"]
    assert items.loc["10", "currency"] == "XXX" and items.loc["10", "price"] == 1.0


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        (
            "1\t10\t5\t881250949\n1\t20\t7\t881250999\n",
            r"u.data, row 2, column 'rating': 7 is not a rating 1-5",
        ),
        (
            "1\t10\t5\t881250949\n1\t20\t4\t99999999999999\n",
            r"u.data, row 2, column 'ts': 99999999999999 is not a unix time",
        ),
        (
            "1\t10\t5\t881250949\n1\tx\t4\t881250999\n",
            r"u.data, row 2, column 'item': 'x' is not a whole number",
        ),
    ],
)
def test_movielens_bad_ratings_name_file_row_column(
    tmp_path: Path, ratings: str, message: str
) -> None:
    src = write_movielens(tmp_path / "ml", ratings=ratings)
    with pytest.raises(ContractError, match=message):
        import_movielens_100k(src, out=tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


@pytest.mark.real_data
def test_movielens_100k_real_counts(tmp_path: Path) -> None:
    r = import_movielens_100k(shared_data("movielens-100k"), out=tmp_path / "ml")
    assert r.rows["events"] == 100_000
    assert r.rows["users"] == 943
    assert r.rows["items"] == 1_682
    ev = Snapshot.open(r.path).read("events", columns=["value"]).to_pandas()
    assert ev["value"].mean() == pytest.approx(3.52986)  # the published mean rating


# ----------------------------------------------------------------------------- mapped CSV / parquet

MAPPING = """
source: test-shop
tables:
  users:
    path: users.csv
    columns:
      user_id: customer
      signup_ts: {from: joined, format: "%d.%m.%Y", timezone: Europe/Berlin}
      age: age
  items:
    path: items.parquet
    columns:
      item_id: sku
      title: name
      category: {from: cat, replace: {" > ": "/"}}
      price: {from: price, strip: "€ "}
      currency: {default: EUR}
      created_ts: {default: "2025-01-01T00:00:00Z"}
  events:
    path: events.csv
    delimiter: ";"
    columns:
      event_id: {generate: row, prefix: "ev"}
      user_id: customer
      item_id: sku
      event_type: {from: action, values: {pv: view, cart: add_to_cart, buy: purchase}}
      ts: {from: epoch_ms, unit: ms}
      session_id: visit
  queries:
    path: queries.csv
    columns:
      query_id: qid
      ts: {from: at}
      text: q
      clicked_item_ids: {from: clicks, split: "|"}
"""


def write_shop(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.csv").write_text("customer,joined,age\nc1,01.07.2025,34\nc2,02.07.2025,\n")
    pq.write_table(
        pa.table(
            {
                "sku": [101, 102],
                "name": ["Mug", "Pan"],
                "cat": ["Home > Kitchen", "Home > Kitchen"],
                "price": ["€ 9.50", "€ 30"],
            }
        ),
        folder / "items.parquet",
    )
    (folder / "events.csv").write_text(
        "customer;sku;action;epoch_ms;visit\nc1;101;pv;1767261600000;v1\nc1;101;cart;1767261660000;v1\nc2;102;buy;1767261700000;v2\n"
    )
    (folder / "queries.csv").write_text(
        "qid,at,q,clicks\nq1,2026-01-01T10:00:00Z,mug,101|102\nq2,2026-01-01T11:00:00Z,pan,\n"
    )
    mapping = folder / "mapping.yaml"
    mapping.write_text(MAPPING)
    return mapping


def test_mapping_renames_casts_parses_maps_and_fills(tmp_path: Path) -> None:
    r = import_mapped(write_shop(tmp_path / "shop"), out=tmp_path / "snap")
    snap = Snapshot.open(r.path)
    assert snap.manifest["source"] == "csv:test-shop"
    users = snap.read("users").to_pandas()
    # 01.07.2025 00:00 in Berlin (UTC+2) is 2025-06-30 22:00 UTC.
    assert users["signup_ts"][0] == pd.Timestamp("2025-06-30T22:00:00Z")
    assert users["age"].isna().tolist() == [False, True]
    items = snap.read("items").to_pandas()
    assert items["item_id"].tolist() == ["101", "102"]  # integer SKUs become string ids
    assert items["category"].tolist() == ["Home/Kitchen", "Home/Kitchen"]
    assert items["price"].tolist() == [9.5, 30.0] and set(items["currency"]) == {"EUR"}
    ev = snap.read("events").to_pandas()
    assert ev["event_id"].tolist() == ["ev1", "ev2", "ev3"]
    assert ev["event_type"].tolist() == ["view", "add_to_cart", "purchase"]
    assert ev["ts"][0] == pd.Timestamp("2026-01-01T10:00:00Z")
    q = snap.read("queries").to_pandas()
    assert [list(c) for c in q["clicked_item_ids"]] == [["101", "102"], []]


BAD_INPUTS = {
    "missing column": (
        "users.csv",
        "customer,age\nc1,34\n",
        "users.csv, column 'joined': source column not found (mapped to 'signup_ts')",
    ),
    "wrong type": (
        "users.csv",
        "customer,joined,age\nc1,01.07.2025,34\nc2,02.07.2025,thirty\n",
        "users.csv, row 2, column 'age': 'thirty' is not a number",
    ),
    "unparseable timestamp": (
        "users.csv",
        "customer,joined,age\nc1,01.07.2025,34\nc2,2025-07-02,40\n",
        "users.csv, row 2, column 'signup_ts': '2025-07-02' is not a timestamp in format '%d.%m.%Y'",
    ),
    "duplicate ids": (
        "users.csv",
        "customer,joined,age\nc1,01.07.2025,34\nc2,02.07.2025,40\nc1,03.07.2025,41\n",
        "users.csv, row 3, column 'user_id': duplicate user_id 'c1' (first at row 1",
    ),
    "unknown event type": (
        "events.csv",
        "customer;sku;action;epoch_ms;visit\nc1;101;pv;1767261600000;v1\nc1;101;wishlist;1767261660000;v1\n",
        "events.csv, row 2, column 'event_type': 'wishlist' is not an event type",
    ),
    "empty file": ("events.csv", "", "events.csv: file is empty (no header row and no data)"),
    "header only": (
        "events.csv",
        "customer;sku;action;epoch_ms;visit\n",
        "events.csv: no data rows",
    ),
    "wrong encoding": (
        "users.csv",
        "customer,joined,age\nc1,01.07.2025,34\nJos\xe9,02.07.2025,40\n",
        "users.csv, row 2: not valid utf-8 text (byte 0xe9 in field 1 of line 3); if the file is Latin-1, declare `encoding: latin-1`",
    ),
    "ragged row": (
        "users.csv",
        "customer,joined,age\nc1,01.07.2025,34\nc2,02.07.2025,40,extra\n",
        "users.csv, row 2: 4 fields where the header has fewer (line 3)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_message_exit_2_and_nothing_written(
    tmp_path: Path, case: str
) -> None:
    mapping = write_shop(tmp_path / "shop")
    file, content, message = BAD_INPUTS[case]
    target = tmp_path / "shop" / file
    if case == "wrong encoding":
        target.write_bytes(content.encode("latin-1"))
    else:
        target.write_text(content)
    existing = tmp_path / "existing"
    import_mapped(write_shop(tmp_path / "good"), out=existing)
    before = {p.name: sha256_file(p) for p in existing.iterdir()}

    for out in (tmp_path / "new", existing):
        args = ["data", "import", "csv", "--mapping", str(mapping), "--out", str(out)]
        result = runner.invoke(app, [*args, "--overwrite"] if out == existing else args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "new").exists()
    assert {p.name: sha256_file(p) for p in existing.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "no temporary folders left"
    )


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    users = tmp_path / "shop" / "users.csv"
    users.write_bytes(b"\xef\xbb\xbf" + users.read_bytes())
    r = import_mapped(mapping, out=tmp_path / "snap")
    assert r.rows["users"] == 2


def test_mapping_mistakes_are_reported_with_their_key(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    text = mapping.read_text()
    cases = {
        "stirp": (
            text.replace("strip:", "stirp:"),
            r"tables.items.columns.price: unknown key\(s\) \['stirp'\]",
        ),
        "table": (text.replace("  queries:", "  orders:"), r"tables.orders: not a contract table"),
        "column": (
            text.replace("      age: age", "      birth_year: age"),
            r"tables.users.columns.birth_year: not a column of 'users'",
        ),
        "users": (text.replace("  users:", "  judgments:"), "not a column of 'judgments'"),
    }
    for content, message in cases.values():
        mapping.write_text(content)
        with pytest.raises(ConfigError, match=message):
            load_mapping(mapping)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("      age: age", "      age: {from: age, unit: minutes}"),
            r"`unit` must be one of s, ms, us, ns",
        ),
        (("timezone: Europe/Berlin", "timezone: Mars/Olympus"), r"unknown timezone 'Mars/Olympus'"),
        (
            (
                "  items:\n    path: items.parquet",
                "  items:\n    path: items.parquet\n    null_values: NA",
            ),
            r"null_values: must be a list of texts",
        ),
        (("      title: name", "      title: {from: 5}"), r"`from` must be text, got 5"),
        (
            ("source: test-shop", "source: ../../escape"),
            r"source: '../../escape' must be a short name",
        ),
        (
            ('    delimiter: ";"', "    delimiter: 8"),
            r"tables.events.delimiter: must be non-empty text, got 8",
        ),
    ],
)
def test_mapping_values_of_the_wrong_kind(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    mapping = write_shop(tmp_path / "shop")
    text = mapping.read_text()
    assert change[0] in text
    mapping.write_text(text.replace(*change))
    with pytest.raises(ConfigError, match=message):
        load_mapping(mapping)


def test_mapping_file_must_be_utf8(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    mapping.write_bytes("source: café\ntables: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="a mapping file must be UTF-8 text"):
        load_mapping(mapping)


def test_parquet_integer_ids_keep_every_digit_and_numeric_codes_map(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    big = 2**53 + 1  # not representable as a float
    pq.write_table(
        pa.table({"customer": pa.array([big, None, 7], pa.int64()), "sku": [101, 102, 101], "action": [1, 2, 3],
                  "epoch_ms": [1767261600000] * 3, "visit": ["v1", "v1", "v2"]}),
        tmp_path / "shop" / "events.parquet",
    )  # fmt: skip
    (tmp_path / "shop" / "users.csv").write_text(
        f"customer,joined,age\n{big},01.07.2025,34\n7,02.07.2025,40\n"
    )
    text = mapping.read_text().replace(
        'path: events.csv\n    delimiter: ";"', "path: events.parquet\n    drop_if_empty: [user_id]"
    )
    text = text.replace(
        "values: {pv: view, cart: add_to_cart, buy: purchase}",
        "values: {1: view, 2: add_to_cart, 3: purchase}",
    )
    mapping.write_text(text)
    snap = Snapshot.open(import_mapped(mapping, out=tmp_path / "snap").path)
    ev = snap.read("events").to_pandas()
    assert ev["user_id"].tolist() == [str(big), "7"]
    assert ev["event_type"].tolist() == ["view", "purchase"]
    assert "1 rows of events.parquet with no user_id were dropped" in snap.manifest["notes"][0]


def test_multi_character_delimiter(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    (tmp_path / "shop" / "events.csv").write_text(
        "customer::sku::action::epoch_ms::visit\nc1::101::pv::1767261600000::v1\nc2::102::buy::1767261700000::v2\n"
    )
    mapping.write_text(mapping.read_text().replace('delimiter: ";"', 'delimiter: "::"'))
    assert import_mapped(mapping, out=tmp_path / "snap").rows["events"] == 2


def test_unwritable_out_is_a_message(tmp_path: Path) -> None:
    mapping = write_shop(tmp_path / "shop")
    (tmp_path / "a-file").write_text("x")
    result = runner.invoke(
        app,
        [
            "data",
            "import",
            "csv",
            "--mapping",
            str(mapping),
            "--out",
            str(tmp_path / "a-file" / "snap"),
        ],
    )
    assert result.exit_code == 2
    assert "cannot write a snapshot at" in " ".join(result.output.split())


@pytest.mark.real_data
def test_amazon_worked_example(tmp_path: Path) -> None:

    r = import_mapped(
        REPO / "docs/examples/amazon-in-products.yaml",
        base_dir=shared_data("amazon-in-products"),
        out=tmp_path / "a",
    )
    assert r.rows["items"] == 1_351
    items = Snapshot.open(r.path).read("items").to_pandas().set_index("item_id")
    assert items.loc["B07JW9H4J1", "price"] == 399.0
    assert items.loc["B07JW9H4J1", "category"].startswith(
        "Computers&Accessories/Accessories&Peripherals/"
    )


# ----------------------------------------------------------------------------- judgments


def test_judgments_merge_repeats_and_identify_products_by_text(tmp_path: Path) -> None:
    src = tmp_path / "rel.csv"
    src.write_text(
        "id,query,product_title,product_description,median_relevance\n"
        "1,red mug,Red Mug,A red mug,4\n"
        "2,red mug,Red Mug,A red mug,2\n"
        "3,blue mug,Red Mug,A red mug,1\n"
        "4,blue mug,Blue Mug,,4\n"
    )
    r = import_judgments(src, out=tmp_path / "j")
    snap = Snapshot.open(r.path)
    assert snap.manifest["kind"] == "judgments"
    assert r.rows == {"users": 0, "items": 2, "events": 0, "queries": 0, "judgments": 3}
    j = snap.read("judgments").to_pandas().set_index(["query"])
    red = snap.read("items").to_pandas().set_index("title").loc["Red Mug", "item_id"]
    assert j[j["item_id"] == red].loc["red mug", "relevance"] == 3.0  # mean of 4 and 2
    assert "1 repeated (query, product) judgments averaged" in r.notes[0]


def test_judgments_bad_relevance(tmp_path: Path) -> None:
    src = tmp_path / "rel.csv"
    src.write_text("query,product_title,median_relevance\nmug,Red Mug,4\nmug,Blue Mug,high\n")
    result = runner.invoke(
        app, ["data", "import", "judgments", str(src), "--out", str(tmp_path / "j")]
    )
    assert result.exit_code == 2
    assert (
        "rel.csv, row 2, column 'median_relevance': 'high' is not a relevance number"
        in " ".join(result.output.split())
    )


@pytest.mark.real_data
def test_crowdflower_real(tmp_path: Path) -> None:
    r = import_judgments(
        shared_data("crowdflower-search-relevance") / "train.csv", out=tmp_path / "cf"
    )
    assert r.rows["items"] == 9_913
    assert r.rows["judgments"] == 10_013  # 10,158 rows, 145 repeated pairs averaged
    j = Snapshot.open(r.path).read("judgments").to_pandas()
    assert j["query"].nunique() == 261
    assert j["relevance"].between(1, 4).all()


def test_utf16_a_repeated_header_and_an_early_out_conflict(tmp_path: Path) -> None:
    from pipelines.data.importers.readers import read_text_table

    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("user_id,age\nu1,3\n".encode("utf-16"))
    with pytest.raises(ContractError, match=r"is UTF-16 text .* declare `encoding: utf-16`"):
        read_text_table(utf16)
    twice = tmp_path / "twice.csv"
    twice.write_text("item_id,price,title,price\ni1,2,x,3\n")
    with pytest.raises(ContractError, match="names column 'price' twice \\(fields 2 and 4\\)"):
        read_text_table(twice)


def test_a_taken_out_is_refused_before_the_sources_are_read(tmp_path: Path) -> None:
    from pipelines.data.importers.movielens import import_movielens_100k
    from pipelines.errors import SnapshotError

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something.txt").write_text("x")
    # the source does not even exist: the --out conflict is what gets reported
    with pytest.raises(SnapshotError, match="already exists; choose a new --out"):
        import_movielens_100k(tmp_path / "no-such-source", out=taken)


@pytest.mark.real_data
def test_the_complete_journey_mapping_imports_the_grocery_sample(tmp_path: Path) -> None:
    src = shared_data("completejourney-a")
    result = import_mapped(
        REPO / "docs" / "examples" / "completejourney.yaml", out=tmp_path / "cj", base_dir=src
    )
    assert result.rows["users"] == 1_181 and result.rows["items"] == 20_897
    assert result.rows["events"] == 38_016  # 102 name a product products.csv lacks
    assert any(
        "102 rows of transactions.csv name a item_id not in items" in n for n in result.notes
    )
    snap = Snapshot.open(result.path)
    items = snap.read("items").to_pandas().set_index("item_id")
    assert items.loc["28897", "title"] == "EGGS - X-LARGE A D 1 DZ"
    assert items.loc["28897", "category"] == "GROCERY/EGGS/EGGS - X-LARGE"
    assert items["title"].str.len().gt(0).all()
    users = snap.read("users").to_pandas()
    assert users["age"].notna().sum() == 410  # households with demographics
    events = snap.read("events").to_pandas()
    assert set(events["event_type"]) == {"purchase"}
    assert events["session_id"].nunique() < len(events)  # baskets hold several items


def test_templates_and_merges_in_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("sku,kind,size,dept\ns1,EGGS,1 DZ,GROCERY\ns2,,,DAIRY\n")
    (tmp_path / "c.csv").write_text(
        "cust,sku,t\nc1,s1,2024-01-01T10:00:00Z\nc2,s2,2024-01-02T10:00:00Z\n"
    )
    (tmp_path / "d.csv").write_text("cust,band\nc1,30-39\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "tables:\n"
        "  items:\n    path: p.csv\n    columns:\n      item_id: sku\n"
        '      title: {template: ["{kind} {size}", "{dept} item"]}\n'
        '      category: {template: "{dept}/{kind}", replace: {"//": "/"}}\n'
        "      price: {default: 1.0}\n      currency: {default: USD}\n"
        '      created_ts: {default: "2023-01-01T00:00:00Z"}\n'
        "  users:\n    path: c.csv\n    merge: {path: d.csv, key: cust}\n    columns:\n"
        '      user_id: cust\n      signup_ts: {default: "2023-01-01T00:00:00Z"}\n'
        '      age: {from: band, values: {"30-39": 35}}\n'
        "  events:\n    path: c.csv\n    columns:\n      event_id: {generate: row}\n"
        "      user_id: cust\n      item_id: sku\n      event_type: {default: purchase}\n"
        "      ts: t\n      session_id: cust\n"
    )
    result = import_mapped(mapping, out=tmp_path / "snap")
    items = Snapshot.open(result.path).read("items").to_pandas()
    assert items["title"].tolist() == ["EGGS 1 DZ", "DAIRY item"]  # the first non-empty template
    assert items["category"].tolist() == ["GROCERY/EGGS", "DAIRY/"]
    users = Snapshot.open(result.path).read("users").to_pandas()
    assert users["age"].tolist()[0] == 35 and pd.isna(users["age"].tolist()[1])  # left join
    mapping.write_text(mapping.read_text().replace("{kind} {size}", "{knd} {size}"))
    with pytest.raises(ContractError, match="column 'knd': template column not found"):
        import_mapped(mapping, out=tmp_path / "snap2")
    mapping.write_text(
        mapping.read_text()
        .replace("{knd} {size}", "{kind} {size}")
        .replace("key: cust", "key: customer")
    )
    with pytest.raises(ContractError, match="merge key not found"):
        import_mapped(mapping, out=tmp_path / "snap3")
