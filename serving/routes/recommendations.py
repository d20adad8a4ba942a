"""``/v1/recommendations``: a known shopper's re-ranked list, or a new one's cold start."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from pipelines.candidates.base import index_of
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from serving.answers import items_from, items_of, record, served
from serving.app import RETRY_AFTER, ApiError, service_of
from serving.auth import API_KEY, require
from serving.known import plain
from serving.recommend import Ask
from serving.schemas import MAX_IDS, MAX_K, Problem, Recommendations, RecommendBody
from serving.versions import RECOMMENDER

router = APIRouter(
    prefix="/v1/recommendations",
    tags=["recommendations"],
    dependencies=[Depends(API_KEY), Depends(require("client"))],
    responses={403: {"model": Problem}, 503: {"model": Problem}},
)


def _code(rec: Recommender, user_id: str | None) -> int:
    """The user code of a shopper the model knows (with history), else -1."""
    if user_id is None:
        return -1
    code = int(index_of([user_id], rec.ctx.user_ids)[0])
    return code if code >= 0 and rec.ctx.history.user_events[code] > 0 else -1


async def _answer(request: Request, asked: str | None, body: RecommendBody) -> dict[str, Any]:
    """Runs on the event loop: the model works in the batcher's thread, awaited here."""
    svc = service_of(request)
    version = served(svc, request, RECOMMENDER)
    rec = version.obj
    assert isinstance(rec, Recommender)
    rid = str(request.scope["state"]["request_id"])
    user_id = svc.shoppers.served(asked)  # the stored id; None: anonymous or erased
    asking = user_id if user_id is not None else f"anonymous:{body.session_id or rid}"
    known_items = version.catalog.row  # item id -> row
    recent = [i for i in body.recent_items if i in known_items]
    store_users = None
    if svc.online is not None and user_id is not None:  # an online-store read: not on the loop
        store_users = [await run_in_threadpool(svc.online.get, user_id)]
    req = RecommendRequest(
        user_ids=[asking],
        k=body.k,
        explain=body.explain,
        age=[float("nan") if body.age is None else body.age],
        gender=[body.gender],
        region=[body.region],
        recent_items=[recent] if recent else None,
        exclude=[[i for i in body.exclude if i in known_items]] if body.exclude else None,
        category=body.category,
        store_users=store_users,
    )
    code = _code(rec, user_id)
    listed = None
    if version.known is not None and code >= 0 and plain(req):
        listed = version.known.get(code, req.k)  # the version's own answer, computed at load
    if listed is not None:
        rows, scores = listed
        items = items_from(rec.ctx.item_ids[rows], scores, version)
    else:
        try:
            frame = await asyncio.wait_for(
                asyncio.wrap_future(svc.recommend.submit(Ask(rec, req))), 30
            )
        except TimeoutError as exc:
            raise ApiError(
                503, "overloaded", "the recommender did not answer in 30 s", retry_after=RETRY_AFTER
            ) from exc
        items = items_of(frame, version)
    record(
        svc,
        request,
        "recommendations",
        version,
        items,
        user_id=user_id,
        session_id=svc.shoppers.session(body.session_id),
    )
    return {
        "request_id": rid,
        "model": version.model,
        "version": version.version,
        "user_id": asked,
        "cold_start": code < 0,
        "items": items,
    }


def _ids(values: list[str], name: str) -> list[str]:
    """Ids from repeated parameters or comma-separated lists."""
    out = [v.strip() for raw in values for v in raw.split(",") if v.strip()]
    if len(out) > MAX_IDS:
        raise ApiError(422, "invalid_parameter", f"{name}: at most {MAX_IDS} ids", parameter=name)
    return out


@router.get("/{user_id}", response_model=Recommendations)
async def recommendations_for(
    request: Request,
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    explain: bool = False,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    exclude: Annotated[list[str] | None, Query(max_length=MAX_IDS)] = None,
) -> dict[str, Any]:
    """Top ``k`` items for a shopper: the re-ranked list for one the model knows, the cold
    start (demographics, popularity) for an id it does not. ``category`` keeps the list to
    a category path or its prefix; ``exclude`` (repeated, or comma-separated) never shows
    those items."""
    body = RecommendBody(
        k=k, explain=explain, category=category, exclude=_ids(exclude or [], "exclude")
    )
    return await _answer(request, user_id, body)


@router.post("", response_model=Recommendations)
async def recommendations_with_context(request: Request, body: RecommendBody) -> dict[str, Any]:
    """For an anonymous or new shopper: what the page knows of them — the items of this
    session (``recent_items``), demographics — decides the list. With a ``user_id`` the
    model knows, its history counts too."""
    return await _answer(request, body.user_id, body)
