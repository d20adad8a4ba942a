"""``/v1/search``: what matches a query, for this shopper when one is given."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from pipelines.search.model import FALLBACK_WORDS, SearchModel
from serving.answers import items_of, record, served
from serving.app import ApiError, service_of
from serving.auth import API_KEY, require
from serving.schemas import MAX_K, MAX_QUERY_CHARS, Problem, SearchAnswer
from serving.versions import SEARCH

router = APIRouter(
    prefix="/v1/search",
    tags=["search"],
    dependencies=[Depends(API_KEY), Depends(require("client"))],
    responses={403: {"model": Problem}, 503: {"model": Problem}},
)
MAX_OFFSET = 190  # the re-ranker orders the fused top 200


@router.get("", response_model=SearchAnswer)
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
    user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    price_min: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    price_max: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    explain: bool = False,
) -> dict[str, Any]:
    """Results for ``q``: lexical and semantic retrieval, fused, re-ranked — with the
    shopper's interests when ``user_id`` is one the model knows. Never empty for a
    catalog with items unless the filters exclude them all; ``fallback`` says when the
    query was corrected, relaxed, or answered by its category or by popular items."""
    # async, and the model answers inline: a few ms of CPU, cheaper than a thread hop
    if not q.strip():
        raise ApiError(422, "invalid_parameter", "q: the query is blank", parameter="q")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise ApiError(
            422, "invalid_parameter", "price_min: above price_max", parameter="price_min"
        )
    svc = service_of(request)
    version = served(svc, request, SEARCH)
    model = version.obj
    assert isinstance(model, SearchModel)
    shopper = svc.shoppers.served(user_id)  # the stored id; None: anonymous or erased
    frame, cands = model.search(
        q, k=k, offset=offset, category=category, price_min=price_min, price_max=price_max,
        explain=explain, user=shopper,
    )  # fmt: skip
    items = items_of(frame, version, offset=offset)
    rid = record(svc, request, "search", version, items, user_id=shopper, query=q)
    personal = model.personal(shopper, cands.items[:1]) is not None and model.booster is not None
    return {
        "request_id": rid,
        "model": version.model,
        "version": version.version,
        "query": q,
        "corrected": cands.corrected,
        "fallback": cands.fallback,
        "fallback_reason": FALLBACK_WORDS.get(cands.fallback or ""),
        "user_id": user_id,
        "personal": personal,
        "offset": offset,
        "items": items,
    }
