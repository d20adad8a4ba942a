"""``POST /v1/events``: what shoppers did with what they were shown."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Request

from pipelines.data.events_log import event_record, now_iso
from serving.app import ApiError, service_of
from serving.auth import API_KEY, require
from serving.request_ids import issued
from serving.schemas import Events, EventsAccepted, Problem

router = APIRouter(
    prefix="/v1/events",
    tags=["events"],
    dependencies=[Depends(API_KEY), Depends(require("client"))],
    responses={403: {"model": Problem}},
)
NEEDS_ANSWER = ("impression", "click")


def _iso(value: str, where: str) -> str:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(
            422, "invalid_parameter", f"{where}: {value!r} is not an ISO 8601 time", parameter=where
        ) from exc
    if pd.isna(ts):
        raise ApiError(422, "invalid_parameter", f"{where}: not a time", parameter=where)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat().replace("+00:00", "Z")


@router.post("", status_code=202, response_model=EventsAccepted)
def post_events(request: Request, body: Events) -> dict[str, Any]:
    """Impressions, clicks, carts and purchases, appended durably to the events spool
    (``shopml data import events-log`` makes them the next snapshot's events). An
    impression or a click names the ``request_id`` of the answer that showed the item and
    its ``position``; a request id this service did not issue is refused, so nobody can
    click on answers that were never given. The whole batch is accepted or none of it;
    events of a shopper on the erasure list are dropped (``accepted`` counts the others)."""
    svc = service_of(request)
    key = request.scope.get("state", {}).get("key")
    records = []
    for n, e in enumerate(body.events):
        where = f"events.{n}"
        if e.type in NEEDS_ANSWER and (e.request_id is None or e.position is None):
            svc.metrics.events.labels(e.type, "refused").inc()
            raise ApiError(
                422, "invalid_parameter",
                f"{where}.request_id: an {e.type} names the answer (request_id) and the position",
                parameter=f"{where}.request_id",
            )  # fmt: skip
        if e.request_id is not None and not issued(e.request_id, svc.secret):
            svc.metrics.events.labels(e.type, "refused").inc()
            raise ApiError(
                422, "invalid_parameter",
                f"{where}.request_id: {e.request_id!r} was not issued by this service",
                parameter=f"{where}.request_id",
            )  # fmt: skip
        shopper = svc.shoppers.served(e.user_id)
        if shopper is None:  # an erased shopper's events are dropped (docs/privacy.md)
            svc.metrics.events.labels(e.type, "erased").inc()
            continue
        records.append(
            event_record(
                type=e.type, user_id=shopper, item_id=e.item_id, request_id=e.request_id,
                position=e.position, session_id=svc.shoppers.session(e.session_id), quantity=e.quantity,
                value=e.value, ts=now_iso() if e.ts is None else _iso(e.ts, f"{where}.ts"),
                key=key,
            )
        )  # fmt: skip
    svc.spool.append(records)
    for r in records:
        svc.metrics.events.labels(r["type"], "accepted").inc()
    return {"accepted": len(records), "request_id": request.scope["state"]["request_id"]}
