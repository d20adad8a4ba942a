"""The serving API: ``create_app(settings)`` builds it, ``shopml serve`` runs it.

Settings are read once, here. The only state is :class:`Service` on ``app.state``: the
served models behind one swap-able reference (:mod:`serving.registry`), the API keys,
the events spool, the metrics and the secret that signs request ids. Handlers are thin:
they parse, call the bundle's own predict code and shape the answer (``serving/routes``).

Every request gets a signed request id (``X-Request-ID`` and the answer's
``request_id``), one JSON log line (request id, endpoint, status, latency, model
version, key name; never a query text or a body), and its latency in the metrics. Every
error is an answer with a code and a sentence (:class:`serving.schemas.Problem`), never
a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.data.events_log import Spool
from pipelines.errors import ShopMLError
from pipelines.keys import create_secret, read_secret
from pipelines.promotion.bucket import open_bucket
from pipelines.settings import Settings, load_settings
from serving.batcher import Batcher
from serving.keys import KeyRing
from serving.metrics import Metrics
from serving.online import OnlineUserFeatures
from serving.recommend import Ask, recommend_batch
from serving.registry import ServedModels
from serving.request_ids import new_request_id
from serving.schemas import Problem
from serving.shoppers import Shoppers

log = logging.getLogger("shopml.serving")
access = logging.getLogger("shopml.serving.access")
MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER = 10

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ApiError(Exception):
    """An error answer: status, code, sentence and the fields it concerns."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.fields = {k: v for k, v in fields.items() if v is not None}


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"the request body is over {limit:,} bytes")


@dataclass
class Service:
    settings: Settings
    keys: KeyRing
    models: ServedModels
    spool: Spool
    metrics: Metrics
    secret: bytes
    shoppers: Shoppers  # stored ids (pseudonyms) and the erasure list
    online: OnlineUserFeatures | None = None  # serving_feature_source = "online"
    # recommendations answered in batches (serving/batcher.py)
    recommend: Batcher[Ask, pd.DataFrame] = field(
        default_factory=lambda: Batcher(recommend_batch, name="shopml-recommend")
    )
    max_body_bytes: int = MAX_BODY_BYTES
    _keys_stamp: tuple[float, float] = field(default=(0.0, 0.0), repr=False)

    def keyring(self) -> KeyRing:
        """The keys, read again when the keys file changed (checked at most once a
        second), so ``shopml serve keys add|revoke`` takes effect without a restart."""
        now = time.monotonic()
        checked, mtime = self._keys_stamp
        if now - checked >= 1.0:
            path = self.settings.serving_keys_file
            current = path.stat().st_mtime if path.is_file() else 0.0
            if current != mtime:
                try:
                    self.keys = KeyRing.load(self.settings)
                except ShopMLError as exc:  # a broken file: keep the keys we have
                    log.error("serving keys not reloaded: %s", exc)
            self._keys_stamp = (now, current)
        return self.keys


def service_of(request: Request) -> Service:
    svc: Service = request.app.state.shopml
    return svc


def problem(
    status: int, code: str, message: str, request: Request | None = None, **fields: Any
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if request is not None:
        body["request_id"] = request.scope.get("state", {}).get("request_id")
    body.update({k: v for k, v in fields.items() if v is not None})
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(fields.get("retry_after") or RETRY_AFTER)
    return JSONResponse(body, status_code=status, headers=headers)


def _parameter(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "body"


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = problem(exc.status, exc.code, exc.message, request, **exc.fields)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        name = _parameter(tuple(first.get("loc", ())))
        problems = [
            {"parameter": _parameter(tuple(e.get("loc", ()))), "message": str(e.get("msg"))}
            for e in errors[:20]
        ]
        return problem(
            422, "invalid_parameter", f"{name}: {first.get('msg')}", request,
            parameter=name, problems=problems,
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not JSON (or not UTF-8): a bad parameter
            return problem(
                422, "invalid_parameter", f"body: {exc.detail}", request, parameter="body"
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return problem(exc.status_code, code, message, request)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s", request.url.path)
        return problem(
            500, "internal_error", "the service failed on this request; it is logged", request
        )


class Frame:
    """Pure ASGI middleware around every HTTP request: request id, body limit, the log
    line and the metrics."""

    def __init__(self, app: Any, service: Callable[[], Service]) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = self.service()
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = new_request_id(svc.secret)
        state["request_id"] = rid
        status = {"code": 500}
        limit = svc.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(send, rid, limit)
            self._record(svc, scope, 413, started)
            return
        seen = {"bytes": 0}

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, counted, stamped)
        finally:
            self._record(svc, scope, status["code"], started)

    async def _too_large(self, send: Send, rid: str, limit: int) -> None:
        body = json.dumps(
            {"error": "body_too_large", "message": f"the request body is over {limit:,} bytes",
             "request_id": rid}
        ).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", rid.encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    def _record(self, svc: Service, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        svc.metrics.observe(endpoint, status, seconds)
        state = scope.get("state", {})
        access.info(
            json.dumps(
                {"request_id": state.get("request_id"), "method": scope.get("method"),
                 "endpoint": endpoint, "status": status, "ms": round(seconds * 1000, 2),
                 "model": state.get("model"), "version": state.get("version"),
                 "key": state.get("key")},
                separators=(",", ":"),
            )
        )  # fmt: skip


def build_service(settings: Settings) -> Service:
    """The service's state from the settings (keys, bucket, cache, spool, secret)."""
    create_secret(settings.serving_secret_file)
    secret = read_secret(settings.serving_secret_file, "whoever reads it can sign request ids")
    metrics = Metrics()
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    cache = _own_cache(settings.home / "serving" / "cache")
    models = ServedModels(
        bucket,
        cache,
        metrics,
        # the online store changes profiles between swaps: lists would go stale
        known_shoppers=settings.serving_precomputed_shoppers
        if settings.serving_feature_source == "bundle"
        else 0,
    )
    spool = Spool(settings.serving_events_dir)
    shoppers = Shoppers(settings, bucket)

    def erasures() -> None:
        # a changed list starts a new spool file: `privacy forget` can then rewrite the
        # file that may hold the erased shoppers' lines
        if shoppers.refresh():
            spool.rotate()

    models.also.append(erasures)
    return Service(
        settings=settings,
        keys=KeyRing.load(settings),
        models=models,
        spool=spool,
        metrics=metrics,
        secret=secret,
        shoppers=shoppers,
        online=OnlineUserFeatures(settings)
        if settings.serving_feature_source == "online"
        else None,
    )


def _own_cache(root: Path) -> Path:
    """This process's cache folder (``<root>/<pid>``); folders of processes that ended (a
    crash, an earlier run) are removed. Workers of one service never share a folder."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not psutil.pid_exists(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True)
    return mine


def create_app(
    settings: Settings | None = None, *, poll: bool = True, blocking_start: bool = False
) -> FastAPI:
    """The serving API. ``poll``: look for new versions every
    ``settings.serving_poll_seconds``; ``blocking_start``: load the served versions
    before the app takes requests (tests), rather than in the background while
    ``/readyz`` answers 503."""
    from serving.routes import ROUTERS

    settings = settings or load_settings()
    svc = build_service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if blocking_start:
            svc.models.check()
        else:
            threading.Thread(target=svc.models.check, name="shopml-first-load", daemon=True).start()
        if poll:
            svc.models.start(settings.serving_poll_seconds)
        try:
            yield
        finally:
            svc.models.stop()
            svc.recommend.close()
            svc.spool.close()

    app = FastAPI(
        title="ShopML serving API",
        version="1",
        summary="Recommendations, search, similar items and feedback from the promoted models",
        lifespan=lifespan,
        responses={401: {"model": Problem}, 422: {"model": Problem}},
    )
    app.state.shopml = svc
    install_errors(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(Frame, service=lambda: svc)
    return app
