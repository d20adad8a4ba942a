"""Source data into the contract: :func:`conform` parses, casts and checks a DataFrame
whose columns already carry contract names and returns an Arrow table with exactly the
contract schema, or raises :class:`~pipelines.errors.ContractError` naming the file, the
first bad row and the column. Importers are its only users.

Checks of data *quality* (age 0-120, timestamps inside the manifest window, referential
integrity between tables, drift) belong to the validation stage, not here.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.contract import EMBEDDING, EVENT_TYPES, TABLES, Column, TableSpec, schema
from pipelines.errors import ContractError

_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class ParseOptions:
    """How to read one source column into its contract type (declared in an import mapping).

    ``format``: strptime format for timestamps (default ISO 8601); ``unit``: epoch unit
    for numeric timestamps (s, ms, us); ``timezone``: zone of naive timestamps;
    ``split``: separator for list columns given as one string; ``ambiguous``: what a
    wall-clock time that happens twice (when daylight saving ends) means: ``refuse``
    (an error naming the row), ``earlier`` or ``later``.
    """

    format: str | None = None
    unit: str | None = None
    timezone: str = "UTC"
    split: str | None = None
    ambiguous: str = "refuse"


@dataclass(frozen=True)
class _Where:
    """The source file, and the source row number of each position (1-based data rows)."""

    file: str
    rows: np.ndarray | None = None

    def row(self, pos: int) -> int:
        return int(self.rows[pos]) if self.rows is not None else pos + 1

    def error(
        self, message: str, *, pos: int | None = None, column: str | None = None
    ) -> ContractError:
        return ContractError(
            self.file, message, row=None if pos is None else self.row(pos), column=column
        )


def _first_bad(where: _Where, column: str, source: pd.Series, bad: np.ndarray, what: str) -> None:
    """Raise for the first row where ``bad`` is set, quoting the source value."""
    if not bad.any():
        return
    positions = np.flatnonzero(bad)
    pos = int(positions[0])
    more = f" ({len(positions):,} rows in all)" if len(positions) > 1 else ""
    value = source.iloc[pos]
    shown = value.item() if isinstance(value, np.generic) else value
    raise where.error(f"{shown!r} is not {what}{more}", pos=pos, column=column)


def _as_text(s: pd.Series) -> pd.Series:
    """Strings stay strings; integral floats (parquet ids read as float) lose their '.0'."""
    if pd.api.types.is_float_dtype(s):
        out = s.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v))
        )
        return out.astype(object)
    if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
        # Nulls become NaN, which Arrow reads as null; constants from a mapping may be numbers.
        return (
            s.astype(object)
            .where(s.notna())
            .map(lambda v: v if isinstance(v, str) or pd.isna(v) else str(v))
        )
    return s.astype(str).where(s.notna()).astype(object)


# An explicit UTC offset at the end of a timestamp text: Z, +01:00, -0500.
_OFFSET = r"(?:[Zz]|[+-]\d{2}:?\d{2})\s*$"
# Largest epoch magnitude per unit that fits the datetime64[ns] range (years 1677-2262).
_EPOCH_LIMIT = {"s": 9.2e9, "ms": 9.2e12, "us": 9.2e15, "ns": 9.2e18}


def _localize(
    naive: pd.Series, opts: ParseOptions, where: _Where, column: str, source: pd.Series
) -> pd.Series:
    """Wall-clock times in ``opts.timezone`` to UTC instants.

    Times skipped when clocks go forward move forward with them; times that happen twice
    when clocks go back follow ``opts.ambiguous``.
    """
    flags: Any = (
        "NaT" if opts.ambiguous == "refuse" else np.full(len(naive), opts.ambiguous == "earlier")
    )
    try:
        local = naive.dt.tz_localize(opts.timezone, ambiguous=flags, nonexistent="shift_forward")
    except Exception as exc:  # unknown zone names come from the user's mapping
        raise where.error(
            f"cannot place timestamps in timezone {opts.timezone!r}: {exc}", column=column
        ) from exc
    _first_bad(
        where,
        column,
        source,
        naive.notna().to_numpy() & local.isna().to_numpy(),
        f"an unambiguous time in {opts.timezone} (it happens twice when daylight saving ends; "
        "declare `ambiguous: earlier` or `later`)",
    )
    return local.dt.tz_convert("UTC")


def require(
    file: str, column: str, values: pd.Series, ok: np.ndarray | pd.Series, what: str
) -> None:
    """Raise :class:`ContractError` for the first row (1-based) where ``ok`` is false.

    The message quotes the value and counts the other bad rows:
    ``u.data, row 2, column 'rating': 7 is not a rating 1-5 (3 rows in all)``.
    """
    _first_bad(
        _Where(file), column, values.reset_index(drop=True), ~np.asarray(ok, dtype=bool), what
    )


def _parse_timestamps(s: pd.Series, opts: ParseOptions, where: _Where, column: str) -> pd.Series:
    """Timestamps to UTC. Epoch numbers and texts with an offset are exact instants;
    naive datetimes and texts without an offset are wall-clock times in ``opts.timezone``."""
    present = s.notna().to_numpy()
    what = "a timestamp" + (f" in format {opts.format!r}" if opts.format else "")
    if pd.api.types.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is None:
            return _localize(s, opts, where, column, s).astype("datetime64[us, UTC]")
        return s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_numeric_dtype(s) or opts.unit:
        if not opts.unit:
            raise where.error(
                "numbers given for a timestamp; declare `unit: s` (or ms, us) in the mapping",
                column=column,
            )
        numbers = pd.to_numeric(s.astype(object), errors="coerce").astype("float64")
        _first_bad(
            where,
            column,
            s,
            present & numbers.isna().to_numpy(),
            f"a number of {opts.unit} since 1970",
        )
        too_far = present & (numbers.abs() > _EPOCH_LIMIT[opts.unit]).to_numpy()
        _first_bad(where, column, s, too_far, "a timestamp between the years 1677 and 2262")
        parsed = pd.to_datetime(numbers, unit=cast(Any, opts.unit), errors="coerce", utc=True)
        return parsed.astype("datetime64[us, UTC]")

    text = s.astype(object).where(s.notna())
    fmt = opts.format or "ISO8601"
    # Rows with an offset are exact instants; rows without one are wall-clock times in the
    # declared zone. Each kind is parsed on its own: pandas parsing a mixed column would
    # give naive rows the offset of an earlier row.
    with_offset = present & text.astype(str).str.contains(_OFFSET, regex=True).to_numpy()
    naive_rows = present & ~with_offset
    exact = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if with_offset.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mixed offsets: utc=True
            parsed = pd.to_datetime(text.where(with_offset), format=fmt, errors="coerce", utc=True)
        exact = exact.where(~with_offset, parsed)
    if naive_rows.any():
        naive = pd.to_datetime(text.where(naive_rows), format=fmt, errors="coerce")
        if getattr(naive.dt, "tz", None) is not None:  # a format whose %z matched
            local = naive.dt.tz_convert("UTC")
        else:
            local = _localize(naive, opts, where, column, s)
        exact = exact.where(~naive_rows, local)
    bad = present & exact.isna().to_numpy()
    if bad.any():
        _first_bad(
            where, column, s, bad, _timestamp_problem(s.iloc[int(np.flatnonzero(bad)[0])], what)
        )
    return exact.astype("datetime64[us, UTC]")


def _timestamp_problem(value: object, what: str) -> str:
    """What to call a value that did not parse: a real date outside pandas' range says so."""
    try:
        stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return what
    if not 1677 < stamp.year < 2262:
        return f"{what} between the years 1677 and 2262 (the supported range)"
    return what


def _parse_numbers(s: pd.Series, where: _Where, column: str, integral: bool) -> pd.Series:
    present = s.notna().to_numpy()
    num = (
        s
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        else pd.to_numeric(s.astype(object), errors="coerce")
    )
    num = num.astype("float64")
    _first_bad(where, column, s, present & num.isna().to_numpy(), "a number")
    _first_bad(where, column, s, present & np.isinf(num.to_numpy()), "a finite number")
    if integral:
        arr = num.to_numpy()
        frac = present & ~np.isnan(arr) & (np.floor(np.nan_to_num(arr)) != np.nan_to_num(arr))
        _first_bad(where, column, s, frac, "a whole number")
    return num


def _parse_list(
    s: pd.Series, opts: ParseOptions, where: _Where, column: str, item_float: bool, empty: object
) -> pd.Series:
    """Lists from list values or from delimited text; a missing value becomes ``empty``."""

    def convert(v: object) -> object:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return empty
        if isinstance(v, str):
            if opts.split is None:
                raise ValueError("a text value needs `split` in the mapping")
            parts = [p.strip() for p in v.split(opts.split)] if v.strip() else []
            parts = [p for p in parts if p]
        else:
            parts = list(v)  # type: ignore[call-overload]
        return [float(p) for p in parts] if item_float else [str(p) for p in parts]

    out: list[object] = []
    for pos, v in enumerate(s.tolist()):
        try:
            out.append(convert(v))
        except (ValueError, TypeError) as exc:
            what = "a list of numbers" if item_float else "a list of ids"
            raise where.error(f"{v!r} is not {what} ({exc})", pos=pos, column=column) from exc
    return pd.Series(out, index=s.index, dtype=object)


def _convert(col: Column, s: pd.Series, opts: ParseOptions, where: _Where) -> pa.Array:
    if pa.types.is_timestamp(col.type):
        return pa.array(
            _parse_timestamps(s, opts, where, col.name), type=col.type, from_pandas=True
        )
    if pa.types.is_integer(col.type):
        num = _parse_numbers(s, where, col.name, integral=True)
        info = np.iinfo(col.type.to_pandas_dtype())
        _first_bad(
            where,
            col.name,
            s,
            (num.abs() > info.max).to_numpy(),
            f"a whole number up to {info.max:,}",
        )
        return pa.array(num.astype("Int64"), type=col.type, from_pandas=True)
    if pa.types.is_floating(col.type):
        return pa.array(
            _parse_numbers(s, where, col.name, integral=False), type=col.type, from_pandas=True
        )
    if pa.types.is_list(col.type):
        item_float = pa.types.is_floating(col.type.value_type)
        return pa.array(
            _parse_list(s, opts, where, col.name, item_float, None if col.nullable else []),
            type=col.type,
            from_pandas=True,
        )
    text = _as_text(s)
    nul = text.map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
    _first_bad(where, col.name, s, nul, "text: it holds a NUL character (a corrupt export?)")
    return pa.array(text, type=col.type, from_pandas=True)


def _check_rules(spec: TableSpec, table: pa.Table, where: _Where) -> None:
    """Row rules beyond types: non-null, allowed values, price > 0, unique keys."""
    for col in spec.columns:
        if col.name not in table.column_names:
            continue
        arr = table.column(col.name)
        if not col.nullable and arr.null_count:
            nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
            raise where.error(
                f"empty value in a required column ({len(nulls):,} rows in all)",
                pos=int(nulls[0]),
                column=col.name,
            )
    frame = table.select([c for c in spec.key]).to_pandas()
    if spec.name == "events":
        types = table.column("event_type").to_pandas()
        bad = ~types.isin(EVENT_TYPES).to_numpy()
        if bad.any():
            _first_bad(
                where,
                "event_type",
                types,
                bad,
                f"an event type; allowed: {', '.join(EVENT_TYPES)}; map other values with `values:` in the mapping",
            )
    if spec.name == "items":
        price = table.column("price").to_numpy()
        _first_bad(where, "price", pd.Series(price), ~(price > 0), "a price > 0")
        cur = table.column("currency").to_pandas()
        _first_bad(
            where,
            "currency",
            cur,
            ~cur.str.fullmatch(_CURRENCY).fillna(False).to_numpy(dtype=bool),
            "a 3-letter ISO 4217 code",
        )
        cat = table.column("category").to_pandas()
        _first_bad(
            where,
            "category",
            cat,
            (cat.str.strip("/ ").str.len() == 0).to_numpy(),
            "a category path",
        )
        if EMBEDDING in table.column_names:
            lengths = (
                table.column(EMBEDDING)
                .to_pandas()
                .map(lambda v: -1 if v is None else len(v))
                .to_numpy()
            )
            present = lengths >= 0
            if present.any():
                dim = int(lengths[present][0])
                bad = present & (lengths != dim)
                _first_bad(
                    where,
                    EMBEDDING,
                    pd.Series(lengths),
                    bad,
                    f"a valid length: the first embedding has {dim} values",
                )
    dup = frame.duplicated(keep="first").to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        key_value = tuple(frame.iloc[pos])
        first = int(np.flatnonzero((frame == frame.iloc[pos]).all(axis=1).to_numpy())[0])
        shown = key_value[0] if len(key_value) == 1 else key_value
        raise where.error(
            f"duplicate {'/'.join(spec.key)} {shown!r} (first at row {where.row(first):,}; {int(dup.sum()):,} duplicate rows in all)",
            pos=pos,
            column=spec.key[0],
        )


def conform(
    table: str,
    data: pd.DataFrame,
    *,
    file: str,
    parse: Mapping[str, ParseOptions] | None = None,
    row_numbers: np.ndarray | None = None,
) -> pa.Table:
    """Parse, cast and check ``data`` (columns named as in the contract) into a snapshot table.

    Missing optional columns are added as nulls (``image_embedding`` is kept only when
    present). Unknown columns are an error, so a typo in a mapping does not vanish.
    Raises :class:`ContractError` with the file, the row and the column; rows are
    ``row_numbers[i]`` for position ``i`` when given (e.g. after dropping duplicates),
    else ``i + 1``.
    """
    spec = TABLES[table]
    where = _Where(file, None if row_numbers is None else np.asarray(row_numbers))
    parse = parse or {}
    unknown = [c for c in data.columns if c not in spec.names]
    if unknown:
        raise ContractError(
            file,
            f"unknown column(s) {unknown}; the contract's {table} columns are {list(spec.names)}",
        )
    missing = [c.name for c in spec.columns if not c.optional and c.name not in data.columns]
    if missing:
        raise ContractError(file, f"missing required column(s) {missing}", column=missing[0])
    if len(data) == 0 and not spec.allow_empty:
        raise ContractError(file, f"no data rows; a snapshot needs at least one {table[:-1]}")
    data = data.reset_index(drop=True)
    arrays: list[pa.Array] = []
    names: list[str] = []
    for col in spec.columns:
        if col.name not in data.columns:
            if col.name == EMBEDDING:
                continue
            # A list that may not be null (clicked ids) is empty when the source has none.
            fill = pa.nulls(len(data), type=col.type)
            if pa.types.is_list(col.type) and not col.nullable:
                fill = pa.array([[]] * len(data), type=col.type)
            arrays.append(fill)
        else:
            arrays.append(_convert(col, data[col.name], parse.get(col.name, ParseOptions()), where))
        names.append(col.name)
    out = pa.Table.from_arrays(
        arrays, schema=schema(table, with_embedding=EMBEDDING in names).remove_metadata()
    )
    _check_rules(spec, out, where)
    return out
