"""``shopml validate``: check a snapshot with Great Expectations; accept or quarantine it.

The outcome lives in the snapshot's ``validation/`` folder: ``result.json`` (every check
with its observed value, bad-row count and up to 20 sample rows), the GX Data Docs under
``data_docs/``, and ``status.json`` (``accepted`` or ``quarantined``). Downstream steps
call :func:`require_accepted`, so a quarantined or unvalidated snapshot is never used.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import __version__
from pipelines.data.contract import TABLES
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ShopMLError, SnapshotError
from pipelines.io import jsonable, staging_folder, swap_in, write_json
from pipelines.validation.config import ValidationConfig

log = logging.getLogger(__name__)
SUITE_VERSION = "1"
FOLDER = "validation"
STATUS = "status.json"
CATEGORICAL = frozenset({"user_id", "item_id", "event_type", "session_id", "query_id"})
_INT_TYPES = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}


@dataclass(frozen=True)
class CheckResult:
    id: str
    table: str
    column: str | None
    why: str
    success: bool
    observed_value: Any
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_rows: list[dict[str, Any]]
    summary: str


@dataclass(frozen=True)
class ValidationReport:
    snapshot_id: str
    accepted: bool
    checks: tuple[CheckResult, ...]
    report: dict[str, Any]
    folder: Path
    seconds: float

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]


# ----------------------------------------------------------------------------- status


def read_status(snap: Snapshot) -> dict[str, Any] | None:
    path = snap.path / FOLDER / STATUS
    return dict(json.loads(path.read_text())) if path.is_file() else None


def require_accepted(snap: Snapshot) -> None:
    """Raise unless ``snap`` passed validation with the current suite."""
    status = read_status(snap)
    if status is None:
        raise ShopMLError(
            f"snapshot {snap.path} has not been validated; run `shopml validate {snap.path}` first"
        )
    if status.get("snapshot_id") != snap.id:
        raise ShopMLError(
            f"snapshot {snap.path}: its validation belongs to another snapshot id; validate it again"
        )
    if status.get("status") != "accepted":
        failed = "; ".join(status.get("summary", [])[:3])
        raise ShopMLError(
            f"snapshot {snap.path} is quarantined: {failed} (details: {snap.path / FOLDER / 'result.json'})"
        )
    if status.get("suite_version") != SUITE_VERSION:
        raise ShopMLError(
            f"snapshot {snap.path} was validated with an older suite; validate it again"
        )
    try:  # the tables are still those that were accepted
        snap.verify_cached()
    except SnapshotError as exc:
        raise ShopMLError(
            f"snapshot {snap.path} changed after it was accepted: {exc}; import or generate "
            "it again (a changed snapshot is a new snapshot)"
        ) from exc


def ensure_validated(snap: Snapshot) -> None:
    """Validate ``snap`` when it has no validation yet; raise unless it is accepted (the
    steps that read a snapshot — training, evaluation — call this first)."""
    if read_status(snap) is None:
        log.info("snapshot %s is not validated yet: validating", snap.path)
        report = validate_snapshot(snapshot_uri=snap.path)
        if not report.accepted:
            first = report.failed[0]
            raise ShopMLError(
                f"snapshot {snap.path} failed {len(report.failed)} validation check(s) and is "
                f"quarantined, e.g. {first.summary}; see {report.folder / 'result.json'}"
            )
    require_accepted(snap)


# ----------------------------------------------------------------------------- frames


def load_frames(snap: Snapshot) -> dict[str, pd.DataFrame]:
    """The snapshot's tables as the DataFrames the suites check (ids as categoricals)."""
    frames = {}
    for name in TABLES:
        if snap.has(name):
            table = snap.read(name)
            # Event ids stored as text are loaded as categoricals (a tenth of the memory);
            # a column stored with another type is left as it is, so its type check fails.
            cats = [
                f.name
                for f in table.schema
                if name == "events" and f.name in CATEGORICAL and pa.types.is_string(f.type)
            ]
            # Nullable integers stay integers (plain pandas would turn them into floats).
            frames[name] = table.to_pandas(categories=cats, types_mapper=_INT_TYPES.get)
    return frames


def _category_of_events(events: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    lookup = pd.Series(items["category"].to_numpy(), index=items["item_id"].to_numpy())
    item = events["item_id"]
    if isinstance(item.dtype, pd.CategoricalDtype):
        per_category = lookup.reindex(item.cat.categories.astype(str)).to_numpy()
        codes = item.cat.codes.to_numpy()
        values = per_category[np.maximum(codes, 0)]
        values[codes < 0] = None
    else:
        values = lookup.reindex(item.astype(str)).to_numpy()
    return pd.Series(values, index=events.index, dtype="category")


def _unknown(values: pd.Series, known: pd.Series) -> pd.Series:
    """``values`` where they are not in ``known``, null elsewhere."""
    return values.astype(object).where(~values.isin(known.to_numpy()))


# ----------------------------------------------------------------------------- summaries


def _examples(values: list[Any], n: int = 3) -> str:
    return ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:n])


def _summary(
    check: Any, outcome: Any, frames: dict[str, pd.DataFrame], extra: dict[str, Any]
) -> str:
    r = outcome.result
    where = (
        f"{check.batch.split('.')[0]}.{check.column}" if check.column else check.batch.split(".")[0]
    )
    if outcome.error:
        return f"{where}: check '{check.id}' could not run: {outcome.error}"
    n = r.get("unexpected_count") or 0
    pct = r.get("unexpected_percent_total", r.get("unexpected_percent")) or 0.0
    values = [d["value"] for d in r.get("partial_unexpected_counts", [])] or r.get(
        "partial_unexpected_list", []
    )
    kind = check.kind
    if kind == "columns":
        mismatched = (r.get("details") or {}).get("mismatched") or []
        first = mismatched[0] if mismatched else {}
        return f"{where}: columns differ from the contract, e.g. position {first.get('Expected Column Position')}: expected {first.get('Expected')!r}, found {first.get('Found')!r}"
    if kind == "type":
        return f"{where}: stored as {r.get('observed_value')}, not the contract type"
    if kind == "not_null":
        return f"{where}: {n:,} rows have no value ({pct:.2f}%)"
    if kind == "unique":
        return f"{where}: {n:,} rows share their id with another row, e.g. {_examples(values)}"
    if kind == "compound_unique":
        cols = check.expectation.column_list
        return f"{where}: {n:,} rows ({pct:.2f}%) repeat another row's ({', '.join(cols)}); {check.why}"
    if kind == "not_future":
        return f"{where}: {n:,} rows are in the future, e.g. {_examples([str(v) for v in values])}"
    if kind == "between":
        return f"{where}: {n:,} rows break '{check.why}', e.g. {_examples(values)}"
    if kind == "in_set":
        return f"{where}: {n:,} rows have other values, e.g. {_examples(values)}"
    if kind == "known_ref":
        frame = frames[check.batch]
        distinct = frame[f"unknown_{check.column}"].dropna().nunique()
        target = "users" if check.column == "user_id" else "items"
        return (
            f"{where}: {n:,} rows reference {distinct:,} unknown {target}, e.g. {_examples(values)}"
        )
    if kind == "row_count":
        return f"{where}: {r.get('observed_value'):,} rows; {check.why}"
    if kind == "kl":
        observed = r.get("observed_value")
        shown = "infinite" if observed is None else f"{observed:.3f}"
        detail = extra.get(check.id, "")
        return f"{where}: distribution moved from the baseline (KL {shown}); {check.why}{detail}"
    return f"{where}: {check.why} failed"


def _sample_rows(
    check: Any, outcome: Any, raw: dict[str, pd.DataFrame], keys: dict[str, list[str]]
) -> list[dict[str, Any]]:
    table = check.batch.split(".")[0]
    index = outcome.result.get("partial_unexpected_index_list") or []
    key = keys.get(table)
    if not index or not key or not isinstance(index[0], dict):
        return []
    wanted = pd.DataFrame(index)[key].drop_duplicates()
    frame = raw[table]
    rows = frame.merge(wanted.astype({k: frame[k].dtype for k in key}), on=key, how="inner").head(
        20
    )
    return json.loads(rows.to_json(orient="records", date_format="iso", default_handler=str))


# ----------------------------------------------------------------------------- main


def _integrity(snap: Snapshot) -> str | None:
    try:
        snap.verify()
        for name in TABLES:
            if snap.has(name):
                snap.read(name)
    except SnapshotError as exc:
        return f"{exc} (file truncated or altered after the snapshot was written)"
    except (OSError, pa.ArrowInvalid) as exc:
        return f"a table cannot be read: {exc}"
    return None


def validate_snapshot(
    *, snapshot_uri: str | Path, baseline_uri: str | Path | None = None, cfg: ValidationConfig | None = None,
    now: datetime | None = None,
) -> ValidationReport:  # fmt: skip
    """Validate a snapshot (and its drift from ``baseline_uri``); write and return the outcome."""
    started = time.perf_counter()
    cfg = cfg or ValidationConfig()
    now = now or datetime.now(UTC)
    snap = Snapshot.open(snapshot_uri)
    baseline = Snapshot.open(baseline_uri) if baseline_uri else None
    if baseline is not None:
        require_accepted(baseline)
    with staging_folder(snap.path / FOLDER) as folder_tmp:
        (folder_tmp / "data_docs").mkdir()
        broken = _integrity(snap)
        results: tuple[CheckResult, ...]
        if broken:
            results = (
                CheckResult(
                    "files.sha256",
                    "files",
                    None,
                    "every table file matches the manifest's sha256",
                    False,
                    None,
                    None,
                    None,
                    [],
                    broken,
                ),
            )
            report: dict[str, Any] = {}
        else:
            results, report = _run(snap, baseline, cfg, now, folder_tmp / "data_docs")
        accepted = all(c.success for c in results)
        _write(folder_tmp, snap, baseline, cfg, results, report, accepted, now)
        swap_in(folder_tmp, snap.path / FOLDER)
    seconds = time.perf_counter() - started
    log.info(
        "validated %s in %.1f s: %s", snap.path, seconds, "accepted" if accepted else "quarantined"
    )
    return ValidationReport(snap.id, accepted, results, report, snap.path / FOLDER, seconds)


def _run(
    snap: Snapshot, baseline: Snapshot | None, cfg: ValidationConfig, now: datetime, docs: Path
) -> tuple[tuple[CheckResult, ...], dict[str, Any]]:
    # Great Expectations is imported here, not at the top: it costs 3.1 s (measured here)
    # and every stage that only checks a snapshot's status imports this module. GX logs
    # at INFO on import and while running; one of its modules sets its own level to INFO
    # when imported, so quiet the loggers again after the import.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from pipelines.validation import drift, suites
    from pipelines.validation.runner import run_checks

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

    frames = load_frames(snap)
    raw = dict(frames)
    events, items, users = frames["events"], frames["items"], frames["users"]
    batches: dict[str, tuple[pd.DataFrame, list[str]]] = {}
    keys: dict[str, list[str]] = {name: list(TABLES[name].key) for name in frames}
    checks = []
    for name, frame in frames.items():
        batches[name] = (frame, [k for k in keys[name] if k in frame.columns])
        categorical = frozenset(
            c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)
        )
        checks += suites.table_checks(
            name, categorical=categorical, now=now, present=list(frame.columns)
        )

    refs = pd.DataFrame({
        "event_id": events["event_id"],
        "unknown_user_id": _unknown(events["user_id"], users["user_id"]),
        "unknown_item_id": _unknown(events["item_id"], items["item_id"]),
        "category": _category_of_events(events, items),
    })  # fmt: skip
    batches["events.refs"] = (refs, ["event_id"])
    frames["events.refs"] = refs
    event_time = snap.manifest.get("event_time", {})
    first = pd.Timestamp(event_time["min"]).to_pydatetime() if event_time.get("min") else None
    last = pd.Timestamp(event_time["max"]).to_pydatetime() if event_time.get("max") else None
    checks += suites.event_checks(cfg, first=first, last=last)
    if "judgments" in frames:
        j = frames["judgments"]
        jrefs = pd.DataFrame(
            {
                "query": j["query"],
                "item_id": j["item_id"],
                "unknown_item_id": _unknown(j["item_id"], items["item_id"]),
            }
        )
        batches["judgments.refs"] = (jrefs, ["query", "item_id"])
        frames["judgments.refs"] = jrefs
        checks += suites.judgment_checks()

    report: dict[str, Any] = {"rows": {name: len(f) for name, f in raw.items()}}
    extra: dict[str, str] = {}
    if baseline is not None:
        b_items = baseline.read("items", columns=["item_id", "category", "price"]).to_pandas()
        b_events = baseline.read("events", columns=["item_id", "user_id"]).to_pandas(
            categories=["item_id", "user_id"]
        )
        b_users = baseline.read("users", columns=["user_id"]).to_pandas()
        b_cats = _category_of_events(b_events, b_items).value_counts()
        now_cats = refs["category"].value_counts()
        cat_part = drift.category_partition(b_cats, now_cats.index)
        price_part = drift.price_partition(b_items["price"].to_numpy(), cfg.price_bins)
        rows = {
            "users": baseline.rows("users"),
            "items": baseline.rows("items"),
            "events": baseline.rows("events"),
        }
        checks += suites.baseline_checks(
            cfg, rows=rows, category_partition=cat_part, price_partition=price_part
        )
        shifts = drift.largest_shifts(b_cats, now_cats)
        extra["events.category_mix_drift"] = "; largest shifts: " + ", ".join(
            f"{n} {b:.1%} -> {a:.1%}" for n, b, a in shifts
        )
        extra["items.price_drift"] = (
            f"; median price {b_items['price'].median():.2f} -> {items['price'].median():.2f}"
        )
        new_users = ~users["user_id"].isin(b_users["user_id"])
        new_items = ~items["item_id"].isin(b_items["item_id"])
        report["baseline"] = {
            "snapshot_id": baseline.id,
            "rows": rows,
            "new_user_share": float(new_users.mean()) if len(users) else 0.0,
            "new_item_share": float(new_items.mean()) if len(items) else 0.0,
            "events_by_new_users_share": float(
                events["user_id"].isin(users["user_id"][new_users]).mean()
            )
            if len(events)
            else 0.0,
            "events_on_new_items_share": float(
                events["item_id"].isin(items["item_id"][new_items]).mean()
            )
            if len(events)
            else 0.0,
        }

    outcomes = run_checks(batches, checks, docs)
    results = tuple(
        CheckResult(
            id=o.check.id,
            table=o.check.batch.split(".")[0],
            column=o.check.column,
            why=o.check.why,
            success=o.success,
            observed_value=jsonable(o.result.get("observed_value")),
            unexpected_count=o.result.get("unexpected_count"),
            unexpected_percent=o.result.get(
                "unexpected_percent_total", o.result.get("unexpected_percent")
            ),
            sample_rows=[] if o.success else _sample_rows(o.check, o, raw, keys),
            summary="ok" if o.success else _summary(o.check, o, frames, extra),
        )
        for o in outcomes
    )
    return results, report


def _write(folder: Path, snap: Snapshot, baseline: Snapshot | None, cfg: ValidationConfig, results: tuple[CheckResult, ...],
           report: dict[str, Any], accepted: bool, now: datetime) -> None:  # fmt: skip
    status = {
        "status": "accepted" if accepted else "quarantined",
        "snapshot_id": snap.id,
        "suite_version": SUITE_VERSION,
        "shopml_version": __version__,
        "validated_at": now.isoformat(),
        "baseline_snapshot_id": baseline.id if baseline else None,
        "failed_checks": [c.id for c in results if not c.success],
        "summary": [c.summary for c in results if not c.success],
    }
    result = {
        **status,
        "config": asdict(cfg),
        "report": report,
        "checks": [asdict(c) for c in results],
        "data_docs": "data_docs/index.html"
        if (folder / "data_docs" / "index.html").exists()
        else None,
    }
    write_json(folder / "result.json", result)
    write_json(folder / STATUS, status)  # last: the folder is complete
