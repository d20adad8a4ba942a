"""``shopml data import csv --mapping MAPPING.yaml``: any shop's files into a snapshot.

A mapping declares, per contract table, the source file and how each contract
column is made from it (docs/data-import.md has the full reference and a worked
example on the Amazon India product listings)::

    source: my-shop
    tables:
      events:
        path: clicks.csv          # relative to the mapping file (or base_dir)
        encoding: utf-8
        columns:
          event_id: {generate: row, prefix: "e"}
          user_id: customer
          item_id: sku
          event_type: {from: action, values: {pv: view, cart: add_to_cart, buy: purchase}}
          ts: {from: time, format: "%d/%m/%Y %H:%M", timezone: Europe/Berlin}
          session_id: visit

A column is either a source column name (rename only) or a spec with ``from``,
``default`` (constant, or the fill for empty values), ``values`` (value map),
``strip`` (characters to remove), ``replace`` (substring map), ``format`` /
``unit`` / ``timezone`` (timestamps), ``split`` (list columns), ``band`` (a number rounded down to a multiple: ages in
bands) / ``keep`` (the first characters of a text: a postcode's region), or
``generate: row`` (the 1-based source row number, with an optional ``prefix``).

Shoppers' privacy (docs/privacy.md): in ``users``, ``events`` and ``queries``, a source
column whose name says it is a direct identifier (email, phone, name, address, ...) must
be listed under the table's ``drop:`` (it is then never read), and no contract column may
be made from one, nor hold values that look like e-mail addresses or phone numbers, except
``user_id`` when the import pseudonymises it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import yaml

from pipelines.data.conform import ParseOptions, conform
from pipelines.data.contract import TABLES, empty_table
from pipelines.data.importers import ImportResult, log_table
from pipelines.data.importers.readers import read_text_table
from pipelines.data.privacy import (
    CONTACT_PATTERN,
    USER_TABLES,
    Privacy,
    check_no_contacts,
    identifier_columns,
)
from pipelines.data.snapshot import Snapshot, check_target, write_snapshot
from pipelines.errors import ConfigError, ContractError
from pipelines.io import resolved, why_not_a_file

IMPORTER_VERSION = "1"
_TABLE_KEYS = {
    "path",
    "merge",
    "drop_unknown",
    "format",
    "encoding",
    "delimiter",
    "null_values",
    "drop_duplicates",
    "drop_if_empty",
    "drop",
    "columns",
}
_UNITS = ("s", "ms", "us", "ns")
_AMBIGUOUS = ("refuse", "earlier", "later")
_KEEPABLE = ("region",)  # texts that may be cut to a prefix
_COARSEN_DOC = {"band": "users.age", "keep": "users.region"}
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COLUMN_KEYS = {
    "from",
    "template",
    "default",
    "values",
    "strip",
    "replace",
    "format",
    "unit",
    "timezone",
    "ambiguous",
    "split",
    "generate",
    "prefix",
    "band",
    "keep",
}


@dataclass(frozen=True)
class ColumnMap:
    target: str
    source: str | None = None
    # "{a} {b}": source columns put into a text; several: the first that is not empty
    template: tuple[str, ...] | None = None
    default: Any = None
    values: dict[str, str] | None = None
    strip: str | None = None
    replace: dict[str, str] | None = None
    generate: str | None = None
    prefix: str = ""
    parse: ParseOptions = field(default_factory=ParseOptions)
    band: int | None = None  # numbers rounded down to a multiple of this (age bands)
    keep: int | None = None  # texts cut to their first characters (a region prefix)


@dataclass(frozen=True)
class TableMap:
    table: str
    path: Path
    fmt: str | None
    encoding: str
    delimiter: str
    null_values: tuple[str, ...]
    drop_duplicates: bool
    drop_if_empty: tuple[str, ...]
    columns: tuple[ColumnMap, ...]
    merge: tuple[Path, str] | None = None  # (file, key column): a left join before mapping
    drop_unknown: bool = False  # drop rows whose user_id / item_id the other tables lack
    drop: tuple[str, ...] = ()  # source columns declared not imported (direct identifiers)


@dataclass(frozen=True)
class Mapping:
    file: Path
    source: str
    tables: dict[str, TableMap] = field(default_factory=dict)


def _fail(mapping: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{mapping.name}: {where}: {message}")


def _column(mapping: Path, table: str, target: str, spec: Any) -> ColumnMap:
    where = f"tables.{table}.columns.{target}"
    if target not in TABLES[table].names:
        raise _fail(
            mapping,
            where,
            f"not a column of '{table}'; the contract's columns are {list(TABLES[table].names)}",
        )
    if isinstance(spec, str):
        return ColumnMap(target=target, source=spec)
    if not isinstance(spec, dict):
        raise _fail(
            mapping, where, "give a source column name or a mapping with `from`, `default`, ..."
        )
    unknown = sorted(set(spec) - _COLUMN_KEYS)
    if unknown:
        raise _fail(mapping, where, f"unknown key(s) {unknown}; known: {sorted(_COLUMN_KEYS)}")
    if not {"from", "template", "default", "generate"} & set(spec):
        raise _fail(mapping, where, "needs `from`, `template`, `default` or `generate`")
    if "from" in spec and "template" in spec:
        raise _fail(mapping, where, "give `from` or `template`, not both")
    if spec.get("generate") not in (None, "row"):
        raise _fail(mapping, where, "`generate` supports only `row`")
    for key in ("values", "replace"):
        if key in spec and not isinstance(spec[key], dict):
            raise _fail(mapping, where, f"`{key}` must map source text to replacement text")
    if "template" in spec:
        templates = spec["template"] if isinstance(spec["template"], list) else [spec["template"]]
        if not templates or not all(isinstance(t, str) for t in templates):
            raise _fail(mapping, where, "`template` is a text or a list of texts with {column}s")
    for key in ("from", "format", "timezone", "split", "strip", "prefix"):
        if key in spec and not isinstance(spec[key], str):
            raise _fail(mapping, where, f"`{key}` must be text, got {spec[key]!r}")
    if spec.get("unit") not in (None, *_UNITS):
        raise _fail(
            mapping, where, f"`unit` must be one of {', '.join(_UNITS)}, got {spec['unit']!r}"
        )
    if spec.get("ambiguous", "refuse") not in _AMBIGUOUS:
        raise _fail(mapping, where, f"`ambiguous` must be one of {', '.join(_AMBIGUOUS)}")
    if "timezone" in spec:
        _check_timezone(mapping, where, spec["timezone"])
    for key, target_ok in (("band", target == "age"), ("keep", target in _KEEPABLE)):
        if key not in spec:
            continue
        value = spec[key]
        if not target_ok:
            raise _fail(mapping, where, f"`{key}` applies to {_COARSEN_DOC[key]} only")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(mapping, where, f"`{key}` must be a whole number from 1, got {value!r}")
    return ColumnMap(
        target=target,
        source=spec.get("from"),
        template=tuple(templates) if "template" in spec else None,
        default=spec.get("default"),
        values={str(k): str(v) for k, v in spec["values"].items()} if "values" in spec else None,
        strip=spec.get("strip"),
        replace={str(k): str(v) for k, v in spec["replace"].items()} if "replace" in spec else None,
        generate=spec.get("generate"),
        prefix=str(spec.get("prefix", "")),
        parse=ParseOptions(
            format=spec.get("format"),
            unit=spec.get("unit"),
            timezone=spec.get("timezone", "UTC"),
            split=spec.get("split"),
            ambiguous=spec.get("ambiguous", "refuse"),
        ),
        band=spec.get("band"),
        keep=spec.get("keep"),
    )


def _check_timezone(mapping: Path, where: str, zone: str) -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _fail(
            mapping, where, f"unknown timezone {zone!r} (use an IANA name like Europe/Berlin)"
        ) from exc


def _table_option(mapping: Path, table: str, spec: dict[str, Any], key: str, default: str) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value:
        raise _fail(mapping, f"tables.{table}.{key}", f"must be non-empty text, got {value!r}")
    return value


def _merge(mapping: Path, table: str, spec: dict[str, Any], root: Path) -> tuple[Path, str] | None:
    """``merge: {path: other.csv, key: column}``: the other file's columns joined to each row."""
    merge = spec.get("merge")
    if merge is None:
        return None
    if (
        not isinstance(merge, dict)
        or set(merge) != {"path", "key"}
        or not all(isinstance(v, str) and v for v in merge.values())
    ):
        raise _fail(mapping, f"tables.{table}.merge", "needs exactly `path` and `key` (texts)")
    return resolved(root / merge["path"]), merge["key"]


def _drop_if_empty(mapping: Path, table: str, spec: dict[str, Any]) -> tuple[str, ...]:
    cols = spec.get("drop_if_empty", [])
    if not isinstance(cols, list) or any(c not in spec["columns"] for c in cols):
        raise _fail(
            mapping,
            f"tables.{table}.drop_if_empty",
            f"must list mapped contract columns of '{table}', e.g. [user_id]",
        )
    return tuple(str(c) for c in cols)


def load_mapping(path: str | Path, *, base_dir: str | Path | None = None) -> Mapping:
    """Read and check a mapping file; paths in it are relative to ``base_dir`` or the file's folder."""
    path = Path(path)
    if (why := why_not_a_file(path)) is not None:
        raise ConfigError(f"mapping file {path} {why}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path.name}: a mapping file must be UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict):
        raise _fail(
            path,
            "top level",
            "needs a `tables:` section (and optionally `source:` and `base_dir:`)",
        )
    unknown = sorted(set(raw) - {"source", "base_dir", "tables"})
    if unknown:
        raise _fail(path, "top level", f"unknown key(s) {unknown}")
    root = Path(base_dir) if base_dir else path.parent / str(raw.get("base_dir", "."))
    tables: dict[str, TableMap] = {}
    for table, spec in raw["tables"].items():
        if table not in TABLES:
            raise _fail(path, f"tables.{table}", f"not a contract table; use {list(TABLES)}")
        if (
            not isinstance(spec, dict)
            or "path" not in spec
            or not isinstance(spec.get("columns"), dict)
        ):
            raise _fail(path, f"tables.{table}", "needs `path` and `columns`")
        bad = sorted(set(spec) - _TABLE_KEYS)
        if bad:
            raise _fail(
                path, f"tables.{table}", f"unknown key(s) {bad}; known: {sorted(_TABLE_KEYS)}"
            )
        nulls = spec.get("null_values", [""])
        if not isinstance(nulls, list) or not all(isinstance(v, str) for v in nulls):
            raise _fail(
                path,
                f"tables.{table}.null_values",
                f'must be a list of texts, e.g. ["", "NA"]; got {nulls!r}',
            )
        fmt = spec.get("format")
        if fmt not in (None, "csv", "parquet"):
            raise _fail(path, f"tables.{table}.format", f"must be csv or parquet, got {fmt!r}")
        drop = spec.get("drop", [])
        if not isinstance(drop, list) or not all(isinstance(c, str) and c for c in drop):
            raise _fail(
                path, f"tables.{table}.drop", f"must be a list of source column names; got {drop!r}"
            )
        tables[table] = TableMap(
            table=table,
            path=resolved(root / _table_option(path, table, spec, "path", "")),
            fmt=fmt,
            encoding=_table_option(path, table, spec, "encoding", "utf-8"),
            delimiter=_table_option(path, table, spec, "delimiter", ","),
            null_values=tuple(nulls),
            drop_duplicates=bool(spec.get("drop_duplicates", False)),
            drop_if_empty=_drop_if_empty(path, table, spec),
            columns=tuple(_column(path, table, t, s) for t, s in spec["columns"].items()),
            merge=_merge(path, table, spec, root),
            drop_unknown=bool(spec.get("drop_unknown", False)),
            drop=tuple(drop),
        )
    missing = [t for t, s in TABLES.items() if s.required and not s.allow_empty and t not in tables]
    if missing and not catalog_only(tables):
        raise _fail(
            path,
            "tables",
            f"missing table(s) {missing}; a snapshot needs users, items and events "
            "(or, for search, items and judgments alone)",
        )
    source = raw.get("source", path.stem)
    if not isinstance(source, str) or not _SOURCE_NAME.match(source):
        raise _fail(
            path, "source", f"{source!r} must be a short name of letters, digits, '.', '_' or '-'"
        )
    return Mapping(file=path, source=source, tables=tables)


def catalog_only(tables: Any) -> bool:
    """A catalog-and-judgments mapping: items and judgments, no users and no events (a
    shop's own judged queries for search; training the recommender refuses it)."""
    names = set(tables)
    return {"items", "judgments"} <= names and not names & {"users", "events"}


def _as_key(value: Any) -> str:
    """The text a `values:` key is matched against (1.0 read from a file matches key 1)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _filled(df: pd.DataFrame, col: ColumnMap, file: str) -> pd.Series:
    """Each row's text from the first of the column's templates that is not empty there
    (missing values count as empty; spaces collapsed)."""
    out = pd.Series(None, index=df.index, dtype=object)
    for template in col.template or ():
        names = _PLACEHOLDER.findall(template)
        for name in names:
            if name not in df.columns:
                raise ContractError(
                    file,
                    f"template column not found (in the template of '{col.target}'); the "
                    f"file has {list(df.columns)}",
                    column=name,
                )
        parts = {n: df[n].astype(object).where(df[n].notna(), "").astype(str) for n in names}
        pieces = _PLACEHOLDER.split(template)  # literal, name, literal, ..., literal
        text = pd.Series(pieces[0], index=df.index, dtype=object)
        for i in range(1, len(pieces), 2):
            text = text + parts[pieces[i]] + pieces[i + 1]
        text = text.str.replace(r"\s+", " ", regex=True).str.strip()
        if not names:
            empty = text == ""
        else:  # a template whose columns are all empty says nothing
            empty = pd.concat([parts[n] == "" for n in names], axis=1).all(axis=1)
        out = out.where(out.notna(), text.where(~empty))
    return out


def _map_column(df: pd.DataFrame, col: ColumnMap, file: str) -> pd.Series:
    if col.generate == "row":
        return col.prefix + pd.Series(np.arange(1, len(df) + 1), index=df.index).astype(str)
    if col.source is None and col.template is None:
        return pd.Series([col.default] * len(df), index=df.index, dtype=object)
    if col.template is not None:
        s = _filled(df, col, file)
    elif col.source not in df.columns:
        raise ContractError(
            file,
            f"source column not found (mapped to '{col.target}'); the file has {list(df.columns)}",
            column=col.source,
        )
    else:
        s = df[col.source]
    if col.strip or col.replace:
        text = s.astype(object).where(s.notna())
        present = text.notna()
        t = text[present].astype(str)
        for old, new in (col.replace or {}).items():
            t = t.str.replace(old, new, regex=False)
        if col.strip:
            t = t.str.replace("[" + re.escape(col.strip) + "]", "", regex=True).str.strip()
        s = text.copy()
        s[present] = t
        s = s.where(s != "")  # empty after cleaning = missing
    if col.values is not None:
        values = col.values
        s = s.map(lambda v: values.get(_as_key(v), v))
    if col.prefix:
        s = s.map(
            lambda v: (
                None if v is None or (isinstance(v, float) and np.isnan(v)) else f"{col.prefix}{v}"
            )
        )
    if col.default is not None:
        s = s.where(s.notna(), col.default)
    if col.band:  # numbers only: anything else is left for the contract to name
        num = pd.to_numeric(s, errors="coerce")
        ok = num.notna()
        s = s.astype(object).copy()
        s[ok] = ((num[ok] // col.band) * col.band).astype(int)
    if col.keep:
        present = s.notna()
        s = s.astype(object).copy()
        s[present] = s[present].astype(str).str.slice(0, col.keep)
    return s


# per-shopper tables: the contract columns checked for e-mail addresses and phone numbers
_CONTACT_CHECKED = {
    "users": ("user_id", "gender", "region"),
    "events": ("event_id", "user_id", "session_id", "query_id", "request_id"),
    "queries": ("query_id", "user_id"),
}


def _sources(col: ColumnMap) -> list[str]:
    """The source columns a contract column is made from."""
    if col.template is not None:
        return sorted({n for t in col.template for n in _PLACEHOLDER.findall(t)})
    return [col.source] if col.source else []


def _check_identifiers(
    name: str, tm: TableMap, df: pd.DataFrame, file: str, pseudonymise: bool
) -> pd.DataFrame:
    """Refuse direct identifiers in a per-shopper table; ``df`` without the dropped columns."""
    if name not in USER_TABLES:
        return df
    hashed = {c for col in tm.columns if col.target == "user_id" and pseudonymise for c in _sources(col)}  # fmt: skip
    for column in identifier_columns(df.columns):
        if column in tm.drop or column in hashed:
            continue
        used = [c.target for c in tm.columns if column in _sources(c)]
        why = (
            f"it is made into '{used[0]}', and only user_id may come from one, with --pseudonymise"
            if used
            else f"list it under tables.{name}.drop to import the file without it"
        )
        raise ContractError(
            file,
            f"looks like a direct identifier of a person (by its name); {why}",
            column=column,
        )
    return df.drop(columns=[c for c in tm.drop if c in df.columns])


def _check_contacts(
    name: str, tm: TableMap, mapped: pd.DataFrame, rows: np.ndarray, file: str, pseudonymise: bool
) -> None:
    for col in tm.columns:
        if col.target not in _CONTACT_CHECKED.get(name, ()):
            continue
        if col.target == "user_id" and pseudonymise:
            continue  # stored as a keyed pseudonym
        values = mapped[col.target]
        text = values[values.notna()].astype(str)
        flagged = text.str.match(CONTACT_PATTERN)
        if flagged.any():
            first = int(np.flatnonzero(flagged.to_numpy())[0])
            position = mapped.index.get_loc(text.index[first])
            sources = _sources(col)
            check_no_contacts(
                [text.iloc[first]],
                file=file,
                column=sources[0] if len(sources) == 1 else col.target,
                rows=[int(rows[position])],
            )


def _merged(df: pd.DataFrame, tm: TableMap, file: str) -> pd.DataFrame:
    """``df`` with the columns of the merge file, matched on the key (left join: rows
    without a match keep empty values)."""
    assert tm.merge is not None
    path, key = tm.merge
    other = read_text_table(path, encoding=tm.encoding, null_values=tm.null_values, name=path.name)
    for frame, name in ((df, file), (other, path.name)):
        if key not in frame.columns:
            raise ContractError(
                name, f"merge key not found; the file has {list(frame.columns)}", column=key
            )
    if other[key].duplicated().any():
        dup = other[key][other[key].duplicated()].iloc[0]
        raise ContractError(path.name, f"merge key {dup!r} appears twice", column=key)
    clash = [c for c in other.columns if c in df.columns and c != key]
    merged = df.merge(other.drop(columns=clash), on=key, how="left", sort=False)
    merged.index = df.index
    return merged


def _drop_unknown(
    name: str,
    mapped: pd.DataFrame,
    rows: np.ndarray,
    tables: dict[str, Any],
    file: str,
    notes: list[str],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Drop the rows that name a user or item the tables imported before lack (noted)."""
    keep = np.ones(len(mapped), dtype=bool)
    for column, table in (("user_id", "users"), ("item_id", "items")):
        if column not in mapped.columns:
            continue
        if table not in tables:
            raise ContractError(
                file, f"drop_unknown needs the {table} table listed before {name} in the mapping"
            )
        known = set(tables[table].column(column).to_pylist())
        unknown = ~mapped[column].astype(str).isin(known).to_numpy()
        if unknown.any():
            notes.append(
                f"{name}: {int(unknown.sum()):,} rows of {file} name a {column} not in {table} "
                "and were dropped"
            )
        keep &= ~unknown
    return mapped[keep], rows[keep]


def import_mapped(
    mapping_file: str | Path,
    *,
    out: str | Path,
    base_dir: str | Path | None = None,
    overwrite: bool = False,
    privacy: Privacy | None = None,
) -> ImportResult:
    """Import the files a mapping names into a snapshot at ``out`` (atomically);
    ``privacy``: pseudonyms and erased shoppers (:mod:`pipelines.data.privacy`)."""
    pseudonymise = privacy is not None and privacy.pseudonymise
    check_target(out, overwrite)  # a conflicting --out is refused before any reading
    mapping = load_mapping(mapping_file, base_dir=base_dir)
    tables: dict[str, Any] = {}
    notes: list[str] = []
    for name, tm in mapping.tables.items():
        file = tm.path.name
        started = time.perf_counter()
        df = read_text_table(
            tm.path,
            fmt=tm.fmt,
            encoding=tm.encoding,
            delimiter=tm.delimiter,
            null_values=tm.null_values,
            name=file,
        )
        if tm.merge is not None:
            df = _merged(df, tm, file)
        df = _check_identifiers(name, tm, df, file, pseudonymise)
        mapped = pd.DataFrame(
            {c.target: _map_column(df, c, file) for c in tm.columns}, index=df.index
        )
        rows = np.arange(1, len(df) + 1)
        if tm.drop_if_empty:
            keep = mapped[list(tm.drop_if_empty)].notna().all(axis=1).to_numpy()
            if (~keep).any():
                notes.append(
                    f"{name}: {int((~keep).sum()):,} rows of {file} with no {' / '.join(tm.drop_if_empty)} were dropped"
                )
            mapped, rows = mapped[keep], rows[keep]
        if tm.drop_duplicates:
            key = [k for k in TABLES[name].key if k in mapped.columns]
            keep = ~mapped.duplicated(subset=key, keep="first").to_numpy()
            if (~keep).any():
                notes.append(
                    f"{name}: {int((~keep).sum()):,} rows of {file} repeat an earlier {'/'.join(key)} and were dropped"
                )
            mapped, rows = mapped[keep], rows[keep]
        if tm.drop_unknown:
            mapped, rows = _drop_unknown(name, mapped, rows, tables, file, notes)
        _check_contacts(name, tm, mapped, rows, file, pseudonymise)
        tables[name] = table = conform(
            name, mapped, file=file, parse={c.target: c.parse for c in tm.columns}, row_numbers=rows
        )
        log_table(name, file, table.num_rows, time.perf_counter() - started)
    producer = {
        "name": "shopml.importers.mapping",
        "version": IMPORTER_VERSION,
        "mapping_file": str(resolved(mapping.file)),
        "files": {n: str(tm.path) for n, tm in mapping.tables.items()},
    }
    only_catalog = catalog_only(mapping.tables)
    if only_catalog:
        notes.append("items and judgments only: no users and no events (a search snapshot)")
    with write_snapshot(
        out,
        source=f"csv:{mapping.source}",
        producer=producer,
        overwrite=overwrite,
        notes=notes,
        allow_empty=("users", "events") if only_catalog else (),
        privacy=privacy,
    ) as w:
        if only_catalog:
            w.write_table("users", empty_table("users"), allow_empty=True)
            w.write_table("events", empty_table("events"), allow_empty=True)
        for name, table in tables.items():
            w.write_table(name, table)
    snap = Snapshot.open(out)
    return ImportResult(
        snap.path, snap.id, dict(snap.manifest["row_counts"]), tuple(snap.manifest["notes"])
    )
