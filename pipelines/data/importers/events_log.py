"""``shopml data import events-log``: the serving API's events into the next snapshot.

The loop closes here: a base snapshot (the one the served models were trained on, or
any later one) plus what the serving API showed and what shoppers did with it
(:mod:`pipelines.data.events_log`) becomes a new snapshot the next retrain reads.

- ``click`` on an item of a search answer is a ``search_click`` whose ``query_id`` is the
  answer's request id; on recommendations or similar items it is a ``view`` (the click
  opens the product page). ``add_to_cart`` and ``purchase`` keep their type; after a
  search answer they carry its ``query_id`` too, so the search labels grade them.
- Every event keeps its ``request_id`` and ``position`` (contract columns), so position
  bias can be read from what was shown where.
- Each search answer becomes a ``queries`` row: ``query_id`` = request id, the text, the
  items shown (the served list, cut after the last impression posted for it, when any
  was) and the items clicked, in click order.
- ``impression`` lines are not events: they say how far a shopper saw an answer.
- Event ids are a hash of the event, so importing the same spool twice, or a spool into
  a snapshot that already holds its events, adds nothing twice.
- Shoppers the base does not know get a ``users`` row (signed up at their first event,
  no demographics). Events on items the catalog does not hold are dropped and counted in
  the manifest's notes, as are cut last lines of a spool file (a crash while writing).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.data.contract import schema
from pipelines.data.events_log import EVENT_KINDS, SpoolLines, read_spool
from pipelines.data.importers import ImportResult, log_table
from pipelines.data.privacy import Privacy
from pipelines.data.snapshot import Snapshot, check_target, write_snapshot
from pipelines.errors import ContractError

IMPORTER_VERSION = "1"


def _ts(value: Any, where: str, field: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ContractError(where, f"{value!r} is not an ISO 8601 time", column=field) from exc
    if pd.isna(ts):
        raise ContractError(where, "no time", column=field)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_event(rec: dict[str, Any]) -> dict[str, Any]:
    where = rec["_where"]
    if rec.get("type") not in EVENT_KINDS:
        raise ContractError(
            where, f"{rec.get('type')!r} is not one of {EVENT_KINDS}", column="type"
        )
    for field in ("user_id", "item_id"):
        if not isinstance(rec.get(field), str) or not rec[field]:
            raise ContractError(where, "missing", column=field)
    pos = rec.get("position")
    if pos is not None and (not isinstance(pos, int) or isinstance(pos, bool) or pos < 1):
        raise ContractError(where, f"{pos!r} is not a position (1, 2, ...)", column="position")
    return {**rec, "ts": _ts(rec.get("ts"), where, "ts")}


def _event_id(rec: dict[str, Any]) -> str:
    key = [rec[k] for k in ("type", "user_id", "item_id", "request_id", "position")]
    key.append(rec["ts"].isoformat())
    return "sv" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


def import_events_log(
    spool: str | Path,
    *,
    base: str | Path,
    out: str | Path,
    overwrite: bool = False,
    privacy: Privacy | None = None,
) -> ImportResult:
    """The snapshot ``base`` plus the events and search answers of the spool folder;
    ``privacy``: pseudonyms and erased shoppers (:mod:`pipelines.data.privacy`)."""
    check_target(out, overwrite)
    started = time.perf_counter()
    snap = Snapshot.open(base)
    folder = Path(spool)
    if not folder.is_dir():
        raise ContractError(str(folder), "not a folder (the serving API's events spool)")
    lines = read_spool_checked(folder)
    users = snap.read("users").to_pandas()
    items = snap.read("items")
    events = snap.read("events").to_pandas()
    queries = snap.read("queries").to_pandas()
    known_items = set(items.column("item_id").to_pylist())
    served = {r["request_id"]: r for r in lines.served if isinstance(r.get("request_id"), str)}
    notes = [f"events log {folder}: {lines.files} file(s), {len(lines.events):,} events, "
             f"{len(lines.served):,} served answers"]  # fmt: skip
    if lines.torn:
        notes.append(f"skipped a cut last line in {', '.join(lines.torn)}")

    recs = [_check_event(r) for r in lines.events]
    unknown = [r for r in recs if r["item_id"] not in known_items]
    recs = [r for r in recs if r["item_id"] in known_items]
    if unknown:
        notes.append(f"dropped {len(unknown):,} events on items the catalog does not hold")
    seen_to: dict[str, int] = {}
    for r in recs:
        if r["type"] == "impression" and r.get("request_id") and r.get("position"):
            rid = r["request_id"]
            seen_to[rid] = max(seen_to.get(rid, 0), int(r["position"]))

    rows = []
    for r in recs:
        if r["type"] == "impression":
            continue
        answer = served.get(r.get("request_id") or "")
        from_search = answer is not None and answer.get("endpoint") == "search"
        etype = r["type"] if r["type"] != "click" else ("search_click" if from_search else "view")
        rows.append(
            {
                "event_id": _event_id(r),
                "user_id": r["user_id"],
                "item_id": r["item_id"],
                "event_type": etype,
                "ts": r["ts"],
                "session_id": r.get("session_id") or f"srv-{r.get('request_id') or r['user_id']}",
                "query_id": r["request_id"] if from_search else None,
                "quantity": r.get("quantity"),
                "value": r.get("value"),
                "request_id": r.get("request_id"),
                "position": r.get("position"),
            }
        )
    new = pd.DataFrame(rows, columns=list(schema("events").names))
    new = new.drop_duplicates("event_id")
    new = new[~new["event_id"].isin(set(events["event_id"]))]

    clicks = new[new["event_type"] == "search_click"].sort_values("ts")
    clicked = clicks.groupby("query_id")["item_id"].apply(list).to_dict()
    qrows = []
    for rid, ans in served.items():
        if ans.get("endpoint") != "search" or not isinstance(ans.get("query"), str):
            continue
        shown = [i for i in ans.get("items") or [] if i in known_items]
        if rid in seen_to:
            shown = shown[: seen_to[rid]]
        qrows.append({"query_id": rid, "user_id": ans.get("user_id"),
                      "ts": _ts(ans.get("ts"), f"served answer {rid}", "ts"), "text": ans["query"],
                      "shown_item_ids": shown, "clicked_item_ids": clicked.get(rid, [])})  # fmt: skip
    new_q = pd.DataFrame(qrows, columns=list(schema("queries").names))
    new_q = new_q[~new_q["query_id"].isin(set(queries["query_id"]))]

    touched = pd.concat([new[["user_id", "ts"]], new_q[["user_id", "ts"]].dropna()])
    first = touched.groupby("user_id")["ts"].min()
    fresh = first[~first.index.isin(set(users["user_id"]))]
    new_users = pd.DataFrame({"user_id": fresh.index.astype(str), "signup_ts": fresh.to_numpy()})
    notes.append(
        f"added {len(new):,} events, {len(new_q):,} queries, {len(new_users):,} new shoppers"
    )

    def table(name: str, *frames: pd.DataFrame) -> pa.Table:
        target = schema(name)
        return pa.concat_tables(
            pa.Table.from_pandas(
                f.reindex(columns=target.names), schema=target, preserve_index=False
            )
            for f in frames
        )

    with write_snapshot(
        out, source=f"events log {folder} over {snap.id}", overwrite=overwrite, notes=notes,
        producer={"importer": "events-log", "importer_version": IMPORTER_VERSION, "base": snap.id},
        privacy=privacy,
    ) as w:  # fmt: skip
        w.write_table("users", table("users", users, new_users))
        w.write_table("items", items)
        w.write_table("events", table("events", events, new.sort_values("ts", kind="stable")))
        w.write_table("queries", table("queries", queries, new_q), allow_empty=True)
        if snap.has("judgments"):
            w.write_table("judgments", snap.read("judgments"))
    log_table("events", str(folder), len(new), time.perf_counter() - started)
    result = Snapshot.open(out)
    return ImportResult(
        result.path, result.id, dict(result.manifest["row_counts"]), tuple(result.manifest["notes"])
    )


def read_spool_checked(folder: Path) -> SpoolLines:
    try:
        lines = read_spool(folder)
    except ValueError as exc:
        raise ContractError(str(folder), str(exc)) from exc
    if not lines.files:
        raise ContractError(str(folder), "no events-*.jsonl files (the serving API's spool)")
    return lines
