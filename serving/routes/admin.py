"""``/admin``: operations that need an admin key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from pipelines.errors import ShopMLError
from serving.app import ApiError, service_of
from serving.auth import API_KEY, require
from serving.schemas import Problem

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(API_KEY), Depends(require("admin"))],
    responses={403: {"model": Problem}},
)


@router.post("/reload")
def reload(request: Request) -> dict[str, Any]:
    """Read the pointers now (instead of at the next poll) and swap in what moved; the
    answer says, per model, what happened and what is served."""
    svc = service_of(request)
    outcome = svc.models.check()
    return {"outcome": outcome, **svc.models.status()}


class ErasureBody(BaseModel):
    user_ids: list[str] = Field(min_length=1, max_length=1000)
    reason: str = Field(min_length=1, max_length=500)


@router.post("/v1/erasures", status_code=202)
def erase(request: Request, body: ErasureBody) -> dict[str, Any]:
    """Put shoppers on the erasure list now: from this answer on, this service answers them
    like anonymous shoppers and drops their events (the others within one poll), and every
    import leaves them out. Removing what the stores already hold is
    ``shopml privacy forget`` (docs/privacy.md); the answer's ``pending`` says so."""
    from pipelines.data.privacy import erasure_hash, privacy_key
    from pipelines.privacy import erasures
    from pipelines.privacy.forget import check_request, stored_forms

    svc = service_of(request)
    try:
        ids = check_request(body.user_ids, body.reason)
        # embedded: the first erasure may create the key; production reads the shared one
        key = privacy_key(svc.settings, create=svc.settings.env == "embedded")
    except ShopMLError as exc:
        raise ApiError(422, "invalid_parameter", str(exc), parameter="user_ids") from exc
    hashes = [erasure_hash(f, key) for f in stored_forms(ids, key)]
    caller = str(request.scope.get("state", {}).get("key") or "admin")
    entry = erasures.request(
        svc.models.bucket, hashes, reason=body.reason.strip(), requested_by=f"api:{caller}"
    )
    if svc.shoppers.refresh():
        svc.spool.rotate()
    return {
        "request": entry.seq,
        "shoppers": len(ids),
        "pending": "run `shopml privacy forget` with these ids to remove them from the stores",
    }
