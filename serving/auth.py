"""API-key checks: ``Depends(require("client"))`` on a route."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.security import APIKeyHeader

from serving.app import ApiError, service_of
from serving.keys import ApiKey

# Declared for the OpenAPI page (its "Authorize" button); the check below does the work.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)


def _basic_password(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user_pass = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user_pass.partition(":")[2] or None


def require(scope: str, *, browser: bool = False) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that lets a request through only with a key of ``scope`` (admin keys
    pass everywhere); ``browser``: the key may also come as the password of HTTP Basic
    auth, and a missing key asks the browser to log in."""

    async def check(request: Request) -> ApiKey:  # on the event loop: no thread hop
        key = request.headers.get("x-api-key")
        if key is None and browser:
            key = _basic_password(request)
        challenge = {"WWW-Authenticate": 'Basic realm="ShopML preview"'} if browser else None
        if not key:
            raise ApiError(
                401, "unauthorized", "send an API key in the X-API-Key header", headers=challenge
            )
        found = service_of(request).keyring().find(key)
        if found is None:
            raise ApiError(401, "unauthorized", "unknown API key", headers=challenge)
        request.scope.setdefault("state", {})["key"] = found.name
        if not found.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"the key {found.name!r} is a {found.scope} key; this needs {scope}",
            )
        return found

    return check
