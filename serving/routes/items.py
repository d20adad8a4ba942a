"""``/v1/items/{item_id}/similar``: items like this one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from pipelines.recommender.bundle import Recommender
from pipelines.recommender.similar import SimilarRequest, UnknownItemError, similar_items
from serving.answers import items_of, record, served
from serving.app import ApiError, service_of
from serving.auth import API_KEY, require
from serving.schemas import MAX_K, Problem, Similar
from serving.versions import RECOMMENDER

router = APIRouter(
    prefix="/v1/items",
    tags=["items"],
    dependencies=[Depends(API_KEY), Depends(require("client"))],
    responses={403: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}},
)


@router.get("/{item_id}/similar", response_model=Similar)
def similar(
    request: Request,
    item_id: Annotated[str, Path(min_length=1, max_length=128)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    explain: bool = False,
) -> dict[str, Any]:
    """Items like ``item_id``: content similarity (the mean of text and image cosine)
    blended with how often they are bought together (docs/serving.md)."""
    svc = service_of(request)
    version = served(svc, request, RECOMMENDER)
    rec = version.obj
    assert isinstance(rec, Recommender)
    try:
        frame = similar_items(rec, SimilarRequest(item_id, k=k, explain=explain))
    except UnknownItemError as exc:
        raise ApiError(404, "unknown_item", str(exc), item_id=item_id) from exc
    items = items_of(frame, version)
    rid = record(svc, request, "similar", version, items)
    return {"request_id": rid, "model": version.model, "version": version.version,
            "item_id": item_id, "items": items}  # fmt: skip
