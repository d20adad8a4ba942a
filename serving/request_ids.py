"""Request ids the service signs, so an event can prove which answer showed its item.

Every answer carries a ``request_id``: 16 random hex digits, a dot, and the first 16 hex
digits of their HMAC-SHA256 under the service's secret (``settings.serving_secret_file``,
created 0600 on first start; never the key that signs verdicts). ``POST /v1/events``
refuses an impression or click whose request id the service did not issue, so nobody can
invent answers to click on — clicks that would otherwise train the next model.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_FORM = re.compile(r"^[0-9a-f]{16}\.[0-9a-f]{16}$")


def _tag(nonce: str, key: bytes) -> str:
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()[:16]


def new_request_id(key: bytes) -> str:
    nonce = secrets.token_hex(8)
    return f"{nonce}.{_tag(nonce, key)}"


def issued(request_id: str, key: bytes) -> bool:
    """Whether ``request_id`` was made by :func:`new_request_id` with ``key``."""
    if not _FORM.match(request_id):
        return False
    nonce, tag = request_id.split(".")
    return hmac.compare_digest(_tag(nonce, key), tag)
