"""``GET /preview``: a page to eyeball the served models — for reviewers and merchandisers.

Server-rendered (Jinja2, every value escaped), no build step, no script. Pick a shopper
or type a query; the left column is the served version's answer, the right one the same
request answered by another promoted version (by default the one served before). Needs an
admin key: in a browser, as the password of the login prompt (any user name). Preview
answers are not written to the events spool: they are not shoppers' impressions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipelines.errors import ShopMLError
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.search.model import FALLBACK_WORDS, SearchModel
from serving.answers import items_of
from serving.app import Service, service_of
from serving.auth import require
from serving.schemas import MAX_QUERY_CHARS
from serving.versions import RECOMMENDER, SEARCH, ServedVersion, promoted_versions

router = APIRouter(
    tags=["preview"],
    include_in_schema=False,
    dependencies=[Depends(require("admin", browser=True))],
)
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
    autoescape=select_autoescape(["html"]),
)


def _column(svc: Service, model: str, version: int | None, ask: dict[str, Any]) -> dict[str, Any]:
    """One column: the answer of ``version`` (None: the served one) or why there is none."""
    try:
        v: ServedVersion | None = (
            svc.models.current(model) if version is None else svc.models.version(model, version)
        )
        if v is None:
            return {"error": f"no {model} version is served yet"}
        if model == SEARCH:
            search = v.obj
            assert isinstance(search, SearchModel)
            frame, c = search.search(ask["q"], k=ask["k"], explain=True, user=ask["user_id"])
            note = FALLBACK_WORDS.get(c.fallback or "")
        else:
            rec = v.obj
            assert isinstance(rec, Recommender)
            frame = rec.recommend(
                RecommendRequest(user_ids=[ask["user_id"]], k=ask["k"], explain=True)
            )
            note = None
        return {"version": v.version, "snapshot_id": v.snapshot_id, "note": note,
                "items": items_of(frame, v)}  # fmt: skip
    except ShopMLError as exc:
        return {"error": str(exc)}


@router.get("/preview", response_class=HTMLResponse)
def preview(
    request: Request,
    user_id: Annotated[str | None, Query(max_length=128)] = None,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
    compare: Annotated[int | None, Query(ge=1)] = None,
    k: Annotated[int, Query(ge=1, le=50)] = 10,
) -> HTMLResponse:
    svc = service_of(request)
    user_id = (user_id or "").strip() or None
    q = (q or "").strip() or None
    model = SEARCH if q else RECOMMENDER
    served = svc.models.current(model)
    ledger_error: str | None = None
    try:
        versions = promoted_versions(svc.models.bucket, model)
    except ShopMLError as exc:
        versions, ledger_error = [], str(exc)
    others = [v for v in versions if served is None or v != served.version]
    if compare is None and others:
        compare = others[-1]
    if compare is not None and compare not in versions:  # only what the ledger promoted
        ledger_error = f"{model} version {compare} was never promoted; pick one of {versions}"
        compare = None
    columns = []
    if q or user_id:
        ask = {"q": q, "user_id": user_id, "k": k}
        columns.append({"title": "served", **_column(svc, model, None, ask)})
        if compare is not None:
            columns.append({"title": "compared", **_column(svc, model, compare, ask)})
    page = _TEMPLATES.get_template("preview.html").render(
        user_id=user_id or "", q=q or "", k=k, model=model, compare=compare, others=others,
        columns=columns, status=svc.models.status(), ledger_error=ledger_error,
    )  # fmt: skip
    return HTMLResponse(page)
