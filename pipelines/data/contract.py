"""The ShopML data contract: the tables of a snapshot, their columns and rules.

This module is the schema every stage imports (documented in docs/data-contract.md):
the tables, their columns and types, the event types. Parsing source data into it is
:mod:`pipelines.data.conform`, which only importers use. The snapshot writer calls
:func:`check_schema` on every table, so nothing off-contract is ever written.

Checks of data *quality* (age 0-120, timestamps inside the manifest window, referential
integrity between tables, drift) belong to the validation stage (Great Expectations),
not to the contract: a snapshot can satisfy the contract and still be quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.errors import ContractError

TS = pa.timestamp("us", tz="UTC")
EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase", "search_click")
# How strongly each event type says "relevant": ranker labels and evaluation truth grades.
DEFAULT_GRADES: dict[str, int] = {"purchase": 3, "add_to_cart": 2, "view": 1, "search_click": 1}
# How much interest each event type shows: confidence weights of the candidate sources
# and of the interest tags in the feature store.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "search_click": 1.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
}


@dataclass(frozen=True)
class Column:
    """One contract column.

    ``optional`` columns may be missing from the source; the snapshot then holds them
    as all-null (except ``image_embedding``, which is left out when no catalog supplies it).
    """

    name: str
    type: pa.DataType
    nullable: bool = False
    optional: bool = False
    doc: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required: bool = True
    allow_empty: bool = False

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


EMBEDDING = "image_embedding"

TABLES: dict[str, TableSpec] = {
    "users": TableSpec(
        "users",
        (
            Column("user_id", pa.string(), doc="unique shopper id"),
            Column("signup_ts", TS, doc="when the account was created (UTC)"),
            Column("age", pa.int32(), nullable=True, optional=True, doc="years"),
            Column("gender", pa.string(), nullable=True, optional=True),
            Column("region", pa.string(), nullable=True, optional=True),
        ),
        key=("user_id",),
    ),
    "items": TableSpec(
        "items",
        (
            Column("item_id", pa.string(), doc="unique product id"),
            Column("title", pa.string()),
            Column("description", pa.string(), nullable=True, optional=True),
            Column("category", pa.string(), doc="path, top level first: 'Electronics/Phones'"),
            Column("brand", pa.string(), nullable=True, optional=True),
            Column("price", pa.float64(), doc="> 0, in `currency`"),
            Column("currency", pa.string(), doc="ISO 4217 code"),
            Column("created_ts", TS, doc="when the item entered the catalog (UTC)"),
            Column(
                "image_url",
                pa.string(),
                nullable=True,
                optional=True,
                doc="a picture of the product (http or https), shown by the serving preview",
            ),
            Column(EMBEDDING, pa.list_(pa.float32()), nullable=True, optional=True),
        ),
        key=("item_id",),
    ),
    "events": TableSpec(
        "events",
        (
            Column("event_id", pa.string()),
            Column("user_id", pa.string()),
            Column("item_id", pa.string()),
            Column("event_type", pa.string(), doc=" | ".join(EVENT_TYPES)),
            Column("ts", TS),
            Column("session_id", pa.string()),
            Column("query_id", pa.string(), nullable=True, optional=True),
            Column("quantity", pa.int32(), nullable=True, optional=True),
            Column("value", pa.float64(), nullable=True, optional=True),
            Column(
                "request_id",
                pa.string(),
                nullable=True,
                optional=True,
                doc="the served answer that showed the item (from the serving events log)",
            ),
            Column(
                "position",
                pa.int32(),
                nullable=True,
                optional=True,
                doc="1-based position of the item in that answer",
            ),
        ),
        key=("event_id",),
    ),
    "queries": TableSpec(
        "queries",
        (
            Column("query_id", pa.string()),
            Column("user_id", pa.string(), nullable=True, optional=True),
            Column("ts", TS),
            Column("text", pa.string()),
            Column("shown_item_ids", pa.list_(pa.string()), nullable=True, optional=True),
            Column("clicked_item_ids", pa.list_(pa.string()), optional=True),
        ),
        key=("query_id",),
        allow_empty=True,
    ),
    "judgments": TableSpec(
        "judgments",
        (
            Column("query", pa.string()),
            Column("item_id", pa.string()),
            Column("relevance", pa.float64(), doc="graded; higher is more relevant"),
        ),
        key=("query", "item_id"),
        required=False,
    ),
}


def schema(table: str, *, with_embedding: bool = False) -> pa.Schema:
    """The exact Arrow schema a snapshot stores for ``table``."""
    spec = TABLES[table]
    cols = [c for c in spec.columns if c.name != EMBEDDING or with_embedding]
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in cols])


def check_schema(table: str, data: pa.Table, *, file: str, whole_table: bool = True) -> None:
    """Raise :class:`ContractError` unless ``data`` has exactly the contract schema.

    ``whole_table=False`` is for one chunk of a streamed table, which may be empty.
    """
    spec = TABLES[table]
    expected = schema(table, with_embedding=EMBEDDING in data.column_names)
    if data.column_names != expected.names:
        raise ContractError(
            file, f"columns {data.column_names} differ from the contract's {expected.names}"
        )
    for f in expected:
        actual = data.schema.field(f.name).type
        if actual != f.type:
            raise ContractError(
                file, f"type {actual} where the contract says {f.type}", column=f.name
            )
        if not f.nullable and data.column(f.name).null_count:
            raise ContractError(
                file,
                f"{data.column(f.name).null_count:,} null value(s) in a required column",
                column=f.name,
            )
    if whole_table and data.num_rows == 0 and not spec.allow_empty:
        raise ContractError(file, f"no rows; a snapshot needs at least one {table[:-1]}")


def empty_table(table: str) -> pa.Table:
    """A zero-row table with the contract schema (e.g. a shop without search logs)."""
    return schema(table).empty_table()
