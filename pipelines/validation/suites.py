"""The Great Expectations suites, one per table, defined in code (docs/validation.md).

Every check carries why it exists; the reason is also the expectation's description, so
it shows in the Data Docs. Checks that need another table (do the ids exist? how did the
category mix move?) run on small derived tables built next to the raw ones, so the raw
tables are checked exactly as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import great_expectations.expectations as gxe

from pipelines.data.contract import EMBEDDING, EVENT_TYPES, TABLES, schema
from pipelines.validation.config import ValidationConfig


@dataclass(frozen=True)
class Check:
    """One expectation, the batch it runs on, and how to explain its failure."""

    id: str
    batch: str  # a table name, or a derived batch such as "events.refs"
    expectation: Any
    why: str
    kind: str  # how the failure is summarised (see pipelines.validation.validate)
    column: str | None = None


def _check(
    batch: str, check_id: str, kind: str, why: str, expectation: Any, column: str | None = None
) -> Check:
    expectation.description = why
    expectation.meta = {"shopml_check": check_id}
    return Check(
        id=check_id, batch=batch, expectation=expectation, why=why, kind=kind, column=column
    )


# pandas dtype names as GX's ExpectColumnValuesToBeOfType reports them for each Arrow type.
def _dtype_name(arrow_type: str, categorical: bool) -> str:
    if categorical:
        return "CategoricalDtypeType"
    if arrow_type.startswith("timestamp"):
        return "Timestamp"
    return {"int32": "int32", "double": "float64"}.get(arrow_type, "object")


def table_checks(
    table: str, *, categorical: frozenset[str], now: datetime, present: list[str]
) -> list[Check]:
    """Schema, types, keys and value rules of one contract table.

    ``present`` are the columns the stored table has; the expected ones come from the
    contract (``image_embedding`` is expected only where a catalog has it).
    """
    spec = TABLES[table]
    expected = schema(table, with_embedding=EMBEDDING in present).names
    checks = [
        # The stored columns are exactly the contract's, in order: downstream code reads them by name.
        _check(table, f"{table}.columns", "columns", "the columns are exactly the contract's",
               gxe.ExpectTableColumnsToMatchOrderedList(column_list=expected)),
    ]  # fmt: skip
    for col in spec.columns:
        if col.name not in present:  # reported by the columns check
            continue
        arrow_type = str(col.type)
        if not arrow_type.startswith("list"):
            # Types as stored: a float where an id belongs breaks every join downstream.
            checks.append(_check(table, f"{table}.{col.name}.type", "type", f"{col.name} has the contract type ({arrow_type})",
                                 gxe.ExpectColumnValuesToBeOfType(column=col.name, type_=_dtype_name(arrow_type, col.name in categorical)), col.name))  # fmt: skip
        if not col.nullable:
            # Required values are present: a missing id or time makes the row unusable.
            checks.append(_check(table, f"{table}.{col.name}.not_null", "not_null", f"every row has a {col.name}",
                                 gxe.ExpectColumnValuesToNotBeNull(column=col.name), col.name))  # fmt: skip
        if pa_is_timestamp(arrow_type):
            # Nothing happened in the future: a clock or export bug would leak into training labels.
            checks.append(_check(table, f"{table}.{col.name}.not_future", "not_future", f"{col.name} is not in the future",
                                 gxe.ExpectColumnValuesToBeBetween(column=col.name, max_value=now), col.name))  # fmt: skip
    if len(spec.key) == 1:
        key = spec.key[0]
        # Keys are unique: a repeated id double-counts the row in every aggregate.
        checks.append(_check(table, f"{table}.{key}.unique", "unique", f"{key} is unique",
                             gxe.ExpectColumnValuesToBeUnique(column=key), key))  # fmt: skip
    else:
        checks.append(_check(table, f"{table}.key.unique", "compound_unique", f"({', '.join(spec.key)}) is unique",
                             gxe.ExpectCompoundColumnsToBeUnique(column_list=list(spec.key))))  # fmt: skip
    if table == "users":
        # Ages are plausible; 0-120 or unknown. Typos like 450 distort age-based cold start.
        checks.append(_check(table, "users.age.range", "between", "age is within 0-120 or unknown",
                             gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=120), "age"))  # fmt: skip
    if table == "items":
        # Prices are positive: price features take logs, and a 0 or negative price is a data error.
        checks.append(_check(table, "items.price.positive", "between", "price is > 0",
                             gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True), "price"))  # fmt: skip
        if "image_url" in present:
            # Pictures are web addresses: a javascript: or data: URL is no picture, and the
            # serving preview shows these.
            checks.append(_check(table, "items.image_url.http", "between", "image_url is an http(s) URL where given",
                                 gxe.ExpectColumnValuesToMatchRegex(column="image_url", regex=r"^https?://\S+$"), "image_url"))  # fmt: skip
    if table == "events":
        # Only the four known event types: anything else would silently get no weight.
        checks.append(_check(table, "events.event_type.known", "in_set", f"event_type is one of {', '.join(EVENT_TYPES)}",
                             gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)), "event_type"))  # fmt: skip
    return checks


def pa_is_timestamp(arrow_type: str) -> bool:
    return arrow_type.startswith("timestamp")


def event_checks(
    cfg: ValidationConfig, *, first: datetime | None, last: datetime | None
) -> list[Check]:
    """Checks on events that need the manifest or other tables."""
    checks = []
    if first is not None and last is not None:
        # Timestamps lie inside the range the manifest records. The manifest's range comes from
        # the same file, so this guards against a hand-edited manifest (other changes to the file
        # already fail the sha256 check).
        checks.append(_check("events", "events.ts.in_manifest_range", "between", "ts lies inside the manifest's event_time range",
                             gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=first, max_value=last), "ts"))  # fmt: skip
    # Repeated events (same shopper, item, type and time under another event_id) are rare:
    # a double-sent tracking call inflates popularity. Up to `duplicate_event_max_ratio` of
    # the events may be in such a group; GX counts every copy, so one repeat counts twice.
    checks.append(_check("events", "events.duplicates", "compound_unique",
                         f"at most {cfg.duplicate_event_max_ratio:.1%} of events share (user_id, item_id, event_type, ts) with another event (every copy counts)",
                         gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "event_type", "ts"],
                                                             mostly=1.0 - cfg.duplicate_event_max_ratio)))  # fmt: skip
    # Quantities are counts of what was put in the cart or bought; a zero or a negative one is a
    # broken export (a return belongs in its own event stream). Values (money) are >= min_value.
    # Missing quantities and values are allowed: the columns are optional.
    checks.append(_check("events", "events.quantity.positive", "between", f"quantity is >= {cfg.min_quantity} where given",
                         gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=cfg.min_quantity), "quantity"))  # fmt: skip
    checks.append(_check("events", "events.value.not_negative", "between", f"value is >= {cfg.min_value:g} where given",
                         gxe.ExpectColumnValuesToBeBetween(column="value", min_value=cfg.min_value), "value"))  # fmt: skip
    checks.append(_check("events", "events.position.positive", "between", "position is >= 1 where given (positions count from 1)",
                         gxe.ExpectColumnValuesToBeBetween(column="position", min_value=1), "position"))  # fmt: skip
    # Referential integrity: every event's shopper and item exist. The derived column holds the
    # id where it is unknown and is null otherwise.
    for ref, table in (("user_id", "users"), ("item_id", "items")):
        checks.append(_check("events.refs", f"events.{ref}.known", "known_ref", f"every event's {ref} exists in {table}",
                             gxe.ExpectColumnValuesToBeNull(column=f"unknown_{ref}"), ref))  # fmt: skip
    return checks


def judgment_checks() -> list[Check]:
    # Every judged item exists in the catalog, or the judgment can never be used.
    return [_check("judgments.refs", "judgments.item_id.known", "known_ref", "every judgment's item_id exists in items",
                   gxe.ExpectColumnValuesToBeNull(column="unknown_item_id"), "item_id")]  # fmt: skip


def baseline_checks(cfg: ValidationConfig, *, rows: dict[str, int], category_partition: dict[str, Any] | None,
                    price_partition: dict[str, Any] | None) -> list[Check]:  # fmt: skip
    """Checks against the previous accepted snapshot."""
    checks = []
    lo, hi = cfg.row_count_min_ratio, cfg.row_count_max_ratio
    for table in ("users", "items", "events"):
        base = rows[table]
        # Row counts move within bounds: a half-empty export or a doubled one shows up here.
        checks.append(_check(table, f"{table}.row_count_vs_baseline", "row_count",
                             f"row count within x{lo:g}-x{hi:g} of the baseline's {base:,}",
                             gxe.ExpectTableRowCountToBeBetween(min_value=int(base * lo), max_value=int(base * hi))))  # fmt: skip
    if category_partition is not None:
        # What shoppers interact with, by category, has not jumped (KL divergence from the baseline).
        checks.append(_check("events.refs", "events.category_mix_drift", "kl",
                             f"category mix of events within KL {cfg.category_kl_max:g} of the baseline",
                             gxe.ExpectColumnKLDivergenceToBeLessThan(column="category", partition_object=category_partition,
                                                                      threshold=cfg.category_kl_max), "category"))  # fmt: skip
    if price_partition is not None:
        # The catalog's price distribution has not jumped (a currency or unit change shows here).
        checks.append(_check("items", "items.price_drift", "kl", f"price distribution within KL {cfg.price_kl_max:g} of the baseline",
                             gxe.ExpectColumnKLDivergenceToBeLessThan(column="price", partition_object=price_partition,
                                                                      threshold=cfg.price_kl_max), "price"))  # fmt: skip
    return checks
