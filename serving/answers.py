"""What the routes share: the served version of a model (or a 503), items as the API
shows them, and the served-answer line of the events spool."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
from fastapi import Request

from pipelines.data.events_log import served_record
from serving.app import RETRY_AFTER, ApiError, Service
from serving.versions import ServedVersion


def served(svc: Service, request: Request, model: str) -> ServedVersion:
    """The version of ``model`` to answer with, taken once for the whole request."""
    version = svc.models.current(model)
    if version is None:
        why = svc.models.refused.get(model)
        message = f"no {model} version is served yet"
        if why is not None:  # the reason names bucket keys: operators read it on /readyz
            message += f" (version {why.version} was refused; /readyz says why)"
        elif not svc.models.promoted.get(model):
            message += " (none promoted)"
        raise ApiError(503, "not_ready", message, retry_after=RETRY_AFTER)
    state = request.scope.setdefault("state", {})
    state["model"], state["version"] = model, version.version
    return version


def items_of(
    frame: pd.DataFrame, version: ServedVersion, *, offset: int = 0
) -> list[dict[str, Any]]:
    """Answer items from a ranked frame (item_id, score[, reasons])."""
    reasons = frame["reasons"].tolist() if "reasons" in frame.columns else None
    return items_from(frame["item_id"], frame["score"], version, reasons=reasons, offset=offset)


def items_from(
    item_ids: Iterable[Any],
    scores: Iterable[Any],
    version: ServedVersion,
    *,
    reasons: list[str] | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Answer items from ranked item ids and their scores."""
    out = []
    for n, (item_id, score) in enumerate(zip(item_ids, scores, strict=True)):
        item = version.catalog.describe(str(item_id))
        item["rank"] = offset + n + 1
        item["score"] = round(float(score), 6) if math.isfinite(float(score)) else 0.0
        if reasons is not None:
            item["reasons"] = reasons[n]
        out.append(item)
    return out


def record(
    svc: Service,
    request: Request,
    endpoint: str,
    version: ServedVersion,
    items: list[dict[str, Any]],
    **fields: Any,
) -> str:
    """Spool the answer (what was shown, to whom) and return its request id."""
    rid = str(request.scope["state"]["request_id"])
    svc.spool.append(
        [
            served_record(
                request_id=rid,
                endpoint=endpoint,
                model=version.model,
                version=version.version,
                items=[i["item_id"] for i in items],
                **fields,
            )
        ],
        durable=False,  # on disk within a second; events wait for theirs (group commit)
    )
    return rid
