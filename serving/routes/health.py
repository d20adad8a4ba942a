"""Liveness, readiness, the served versions and the metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from serving.app import service_of
from serving.auth import API_KEY, require
from serving.schemas import Models

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers (no key needed)."""
    return {"status": "alive"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """200 when every promoted model is loaded and served, else 503; per model: the
    served version, and the last refused one with the reason (no key needed)."""
    status = service_of(request).models.status()
    code = 200 if status["ready"] else 503
    headers = {} if code == 200 else {"Retry-After": "10"}
    return JSONResponse(status, status_code=code, headers=headers)


@router.get(
    "/v1/models",
    response_model=Models,
    dependencies=[Depends(API_KEY), Depends(require("client"))],
)
def models(request: Request) -> dict[str, Any]:
    """The versions served now: since when, from which snapshot."""
    svc = service_of(request)
    served = svc.models.snapshot()
    return {
        "models": [v.describe() for v in served.values()],
        "checked_at": svc.models.checked_at,
    }


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format (no key: scrape it from inside the network)."""
    body, content_type = service_of(request).metrics.exposition()
    return Response(body, media_type=content_type)
