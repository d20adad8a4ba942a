"""The contract module: parsing, casting and the row rules, with errors that say where."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.data.conform import ParseOptions, conform
from pipelines.data.contract import TS, check_schema, empty_table, schema
from pipelines.data.generator.ids import format_ids
from pipelines.errors import ContractError


def events(**overrides: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "event_id": ["e1", "e2", "e3"],
        "user_id": ["u1", "u1", "u2"],
        "item_id": ["i1", "i2", "i1"],
        "event_type": ["view", "add_to_cart", "purchase"],
        "ts": ["2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z", "2026-01-02T08:00:00+01:00"],
        "session_id": ["s1", "s1", "s2"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def items(**overrides: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "item_id": ["i1", "i2"],
        "title": ["Red mug", "Blue mug"],
        "category": ["Home/Kitchen", "Home/Kitchen"],
        "price": ["9.99", "12.50"],
        "currency": ["EUR", "EUR"],
        "created_ts": ["2025-01-01", "2025-02-01"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_text_input_becomes_the_exact_contract_schema() -> None:
    table = conform("events", events(), file="events.csv")
    assert table.schema == schema("events")
    assert table.column("ts").type == TS
    # +01:00 is converted to UTC; optional columns are added as nulls.
    assert table.column("ts")[2].as_py().isoformat() == "2026-01-02T07:00:00+00:00"
    assert table.column("query_id").null_count == 3
    assert table.column("value").null_count == 3


def test_naive_timestamps_are_placed_in_the_declared_zone_and_custom_formats_parse() -> None:
    df = events(ts=["01/07/2026 12:00", "01/07/2026 12:30", "02/07/2026 00:15"])
    table = conform(
        "events",
        df,
        file="e.csv",
        parse={"ts": ParseOptions(format="%d/%m/%Y %H:%M", timezone="Europe/Berlin")},
    )
    # Berlin is UTC+2 in July.
    assert [t.isoformat() for t in table.column("ts").to_pylist()][:2] == [
        "2026-07-01T10:00:00+00:00",
        "2026-07-01T10:30:00+00:00",
    ]


def test_offsets_are_exact_and_daylight_saving_changes_are_handled() -> None:
    berlin = {"ts": ParseOptions(timezone="Europe/Berlin")}
    # Texts with an offset are exact instants whatever zone the mapping declares.
    with_offset = conform("events", events(), file="e.csv", parse=berlin)
    assert with_offset.column("ts")[0].as_py().isoformat() == "2026-01-01T10:00:00+00:00"
    # 02:30 on 2026-03-29 does not exist in Berlin (clocks jump to 03:00): moved forward.
    spring = conform(
        "events",
        events(ts=["2026-03-29 02:30", "2026-03-29 04:00", "2026-07-01 12:00"]),
        file="e.csv",
        parse=berlin,
    )
    assert spring.column("ts")[0].as_py().isoformat() == "2026-03-29T01:00:00+00:00"
    # 02:30 on 2026-10-25 happens twice in Berlin: ambiguous, so refused with its row.
    with pytest.raises(
        ContractError,
        match=r"row 3, column 'ts': '2026-10-25 02:30' is not an unambiguous time in Europe/Berlin",
    ):
        conform(
            "events",
            events(ts=["2026-10-24 12:00", "2026-10-25 01:00", "2026-10-25 02:30"]),
            file="e.csv",
            parse=berlin,
        )
    # Told which of the two, it takes the earlier (summer time, UTC+2) or the later (UTC+1).
    fall = events(ts=["2026-10-24 12:00", "2026-10-25 01:00", "2026-10-25 02:30"])
    early = conform(
        "events",
        fall,
        file="e.csv",
        parse={"ts": ParseOptions(timezone="Europe/Berlin", ambiguous="earlier")},
    )
    late = conform(
        "events",
        fall,
        file="e.csv",
        parse={"ts": ParseOptions(timezone="Europe/Berlin", ambiguous="later")},
    )
    assert early.column("ts")[2].as_py().isoformat() == "2026-10-25T00:30:00+00:00"
    assert late.column("ts")[2].as_py().isoformat() == "2026-10-25T01:30:00+00:00"
    # Mixed texts: the one with an offset is exact, the naive one is Berlin wall-clock time.
    mixed = conform(
        "events",
        events(ts=["2026-02-01T10:00:00Z", "2026-02-01 10:00:00", "2026-02-01T10:00:00+05:00"]),
        file="e.csv",
        parse=berlin,
    )
    assert [t.isoformat() for t in mixed.column("ts").to_pylist()] == [
        "2026-02-01T10:00:00+00:00",
        "2026-02-01T09:00:00+00:00",
        "2026-02-01T05:00:00+00:00",
    ]
    # Epoch numbers are UTC instants; a declared zone does not shift them.
    epoch = conform(
        "events",
        events(ts=[1767261600, 1767261660, 1767340800]),
        file="e.csv",
        parse={"ts": ParseOptions(unit="s", timezone="Europe/Berlin")},
    )
    assert epoch.column("ts")[0].as_py().isoformat() == "2026-01-01T10:00:00+00:00"


def test_epoch_numbers_need_a_unit() -> None:
    df = events(ts=[1767261600, 1767261660, 1767340800])
    with pytest.raises(
        ContractError, match=r"e.csv, column 'ts': numbers given for a timestamp; declare `unit: s`"
    ):
        conform("events", df, file="e.csv")
    table = conform("events", df, file="e.csv", parse={"ts": ParseOptions(unit="s")})
    assert table.column("ts")[0].as_py().isoformat() == "2026-01-01T10:00:00+00:00"


def test_unparseable_timestamp_names_row_and_column() -> None:
    df = events(ts=["2026-01-01T10:00:00Z", "yesterday", "2026-01-02"])
    with pytest.raises(ContractError) as err:
        conform("events", df, file="events.csv")
    assert (err.value.file, err.value.row, err.value.column) == ("events.csv", 2, "ts")
    assert "'yesterday' is not a timestamp" in str(err.value)


def test_wrong_type_names_the_first_bad_row_and_counts_the_rest() -> None:
    df = items(price=["9.99", "cheap"]).pipe(
        lambda d: pd.concat([d, d.assign(item_id=["i3", "i4"])])
    )
    with pytest.raises(ContractError) as err:
        conform("items", df, file="items.csv")
    assert err.value.row == 2 and err.value.column == "price"
    assert (
        str(err.value)
        == "items.csv, row 2, column 'price': 'cheap' is not a number (2 rows in all)"
    )


def test_numbers_must_be_finite_and_fit_their_type() -> None:
    with pytest.raises(ContractError, match=r"row 2, column 'price': 'inf' is not a finite number"):
        conform("items", items(price=["9.99", "inf"]), file="items.csv")
    users = pd.DataFrame({"user_id": ["a"], "signup_ts": ["2025-01-01"], "age": ["3000000000"]})
    with pytest.raises(
        ContractError,
        match=r"row 1, column 'age': '3000000000' is not a whole number up to 2,147,483,647",
    ):
        conform("users", users, file="users.csv")
    far = events(ts=[1e20, 1767261660, 1767340800])
    with pytest.raises(
        ContractError,
        match=r"row 1, column 'ts': 1e\+20 is not a timestamp between the years 1677 and 2262",
    ):
        conform("events", far, file="e.csv", parse={"ts": ParseOptions(unit="s")})


def test_constants_of_other_types_become_text() -> None:
    t = conform("items", items(brand=[123, None]), file="items.csv")
    assert t.column("brand").to_pylist() == ["123", None]


def test_whole_numbers_only_for_integer_columns() -> None:
    users = pd.DataFrame(
        {"user_id": ["a", "b"], "signup_ts": ["2025-01-01", "2025-01-02"], "age": ["31", "40.5"]}
    )
    with pytest.raises(ContractError, match=r"row 2, column 'age': '40.5' is not a whole number"):
        conform("users", users, file="users.csv")
    ok = conform("users", users.assign(age=["31", "40.0"]), file="users.csv")
    assert ok.column("age").to_pylist() == [31, 40]


def test_unknown_event_type_lists_the_allowed_values() -> None:
    with pytest.raises(ContractError) as err:
        conform("events", events(event_type=["view", "click", "click"]), file="events.csv")
    assert err.value.row == 2 and err.value.column == "event_type"
    assert (
        "'click' is not an event type; allowed: view, add_to_cart, purchase, search_click"
        in str(err.value)
    )
    assert "(2 rows in all)" in str(err.value)


def test_duplicate_ids_name_both_rows() -> None:
    with pytest.raises(ContractError) as err:
        conform("events", events(event_id=["e1", "e2", "e1"]), file="events.csv")
    assert err.value.row == 3 and err.value.column == "event_id"
    assert "duplicate event_id 'e1' (first at row 1" in str(err.value)


def test_source_row_numbers_are_reported_after_rows_were_dropped() -> None:
    df = events(event_id=["e1", "e2", "e1"])
    with pytest.raises(ContractError) as err:
        conform("events", df, file="events.csv", row_numbers=np.array([4, 9, 17]))
    assert err.value.row == 17
    assert "first at row 4" in str(err.value)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("price", ["0", "5"], "row 1, column 'price': 0.0 is not a price > 0"),
        (
            "currency",
            ["EUR", "euro"],
            "row 2, column 'currency': 'euro' is not a 3-letter ISO 4217 code",
        ),
        ("currency", ["USD\n", "EUR"], r"row 1, column 'currency': 'USD\\n' is not a 3-letter"),
        ("category", ["Home/Kitchen", " / "], "is not a category path"),
        ("title", ["Red mug", None], "empty value in a required column"),
    ],
)
def test_item_rules(column: str, values: list[object], message: str) -> None:
    with pytest.raises(ContractError, match=message) as err:
        conform("items", items(**{column: values}), file="items.csv")
    assert err.value.column == column
    assert err.value.row in (1, 2)


def test_missing_and_unknown_columns() -> None:
    with pytest.raises(
        ContractError, match=r"column 'session_id': missing required column\(s\) \['session_id'\]"
    ):
        conform("events", events().drop(columns="session_id"), file="events.csv")
    with pytest.raises(ContractError, match=r"unknown column\(s\) \['colour'\]"):
        conform("items", items(colour=["red", "blue"]), file="items.csv")
    with pytest.raises(ContractError, match="no data rows"):
        conform("events", events().iloc[0:0], file="events.csv")


def test_lists_from_delimited_text_and_fixed_length_embeddings() -> None:
    q = pd.DataFrame(
        {
            "query_id": ["q1", "q2"],
            "ts": ["2026-01-01", "2026-01-02"],
            "text": ["mug", "red mug"],
            "shown_item_ids": ["i1|i2|i3", ""],
            "clicked_item_ids": ["i2", ""],
        }
    )
    t = conform(
        "queries",
        q,
        file="q.csv",
        parse={
            "shown_item_ids": ParseOptions(split="|"),
            "clicked_item_ids": ParseOptions(split="|"),
        },
    )
    assert t.column("shown_item_ids").to_pylist() == [["i1", "i2", "i3"], []]
    with pytest.raises(ContractError, match="needs `split` in the mapping"):
        conform("queries", q, file="q.csv")

    emb = items(image_embedding=[[0.1, 0.2], [0.3, 0.4, 0.5]])
    with pytest.raises(
        ContractError,
        match="row 2, column 'image_embedding': 3 is not a valid length: the first embedding has 2 values",
    ):
        conform("items", emb, file="items.parquet")
    good = conform("items", items(image_embedding=[[0.1, 0.2], None]), file="items.parquet")
    assert good.schema == schema("items", with_embedding=True)


def test_check_schema_refuses_off_contract_tables() -> None:
    good = conform("events", events(), file="events.csv")
    check_schema("events", good, file="events.parquet")
    wrong_type = good.set_column(4, "ts", pa.array(["x"] * 3))
    with pytest.raises(
        ContractError, match="column 'ts': type string where the contract says timestamp"
    ):
        check_schema("events", wrong_type, file="events.parquet")
    with pytest.raises(ContractError, match="no rows"):
        check_schema("events", empty_table("events"), file="events.parquet")
    check_schema("queries", empty_table("queries"), file="queries.parquet")  # queries may be empty


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=50),
    st.integers(0, 14),
)
def test_format_ids_matches_python_formatting(numbers: list[int], width: int) -> None:
    got = format_ids("x", np.array(numbers), width=width).to_pylist()
    assert got == [f"x{n:0{width}d}" if width else f"x{n}" for n in numbers]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)),
            st.one_of(st.none(), st.integers(min_value=-12 * 60, max_value=14 * 60)),
        ),
        min_size=1,
        max_size=12,
    ),
    zone=st.sampled_from(["UTC", "Asia/Kolkata", "Asia/Tokyo", "America/Bogota"]),
)
def test_naive_timestamps_are_wall_clock_in_the_declared_zone_whatever_other_rows_hold(
    rows: list[tuple[datetime, int | None]], zone: str
) -> None:
    """Zones without daylight saving, so every wall-clock time exists exactly once."""
    from datetime import timedelta, timezone
    from zoneinfo import ZoneInfo

    texts, expected = [], []
    for wall, offset in rows:
        wall = wall.replace(microsecond=0)
        if offset is None:
            texts.append(wall.isoformat())
            expected.append(wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC))
        else:
            tz = timezone(timedelta(minutes=offset))
            texts.append(wall.replace(tzinfo=tz).isoformat())
            expected.append(wall.replace(tzinfo=tz).astimezone(UTC))
    out = conform(
        "users",
        pd.DataFrame({"user_id": [f"u{i}" for i in range(len(texts))], "signup_ts": texts}),
        file="users.csv",
        parse={"signup_ts": ParseOptions(timezone=zone)},
    )
    got = [t.to_pydatetime() for t in out.column("signup_ts").to_pandas()]
    assert got == expected


def test_a_date_beyond_pandas_range_is_named_as_such() -> None:
    frame = pd.DataFrame({"user_id": ["u1"], "signup_ts": ["9999-12-31"]})
    with pytest.raises(ContractError, match="between the years 1677 and 2262"):
        conform("users", frame, file="users.csv")
