"""``/admin``: operations that need an admin key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from serving.app import service_of
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
