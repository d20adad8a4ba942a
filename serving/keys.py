"""API keys of the serving API: named, scoped, stored only as SHA-256 digests.

A client sends its key in the ``X-API-Key`` header (the preview page also takes it as the
password of HTTP Basic auth, so a browser can log in). A key has a name, which every log
line of its requests carries, and a scope: ``client`` (the shop front end: ``/v1/*``) or
``admin`` (also ``/admin/*`` and ``/preview``). Keys come from the keys file
(``settings.serving_keys_file``, JSON, mode 0600, written by ``shopml serve keys``) and
from ``settings.serving_api_keys`` (``name:scope:sha256`` entries), so a deployment can
hold them in its secret store. Neither holds a key itself: a leaked file lets nobody in.

Keys are 32 random bytes, so one SHA-256 is enough to store them (a slow password hash
protects guessable secrets; these are not guessable).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipelines.errors import ConfigError, ShopMLError
from pipelines.io import write_bytes
from pipelines.keys import create_secret
from pipelines.settings import Settings

SCOPES = ("client", "admin")
PREFIX = "smk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    sha256: str

    def allows(self, scope: str) -> bool:
        """``admin`` keys may do everything a ``client`` key may."""
        return self.scope == "admin" or self.scope == scope


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entry(name: str, scope: str, sha: str, where: str) -> ApiKey:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: key name {name!r}: letters, digits, '_', '.', '-' (max 64)")
    if scope not in SCOPES:
        raise ConfigError(f"{where}: key {name!r}: scope {scope!r} is not one of {SCOPES}")
    if not _DIGEST.match(sha):
        raise ConfigError(f"{where}: key {name!r}: not a SHA-256 hex digest")
    return ApiKey(name, scope, sha)


class KeyRing:
    """The keys the service accepts."""

    def __init__(self, keys: list[ApiKey]) -> None:
        names = [k.name for k in keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"serving API keys: the name(s) {', '.join(dup)} appear twice")
        self.keys = keys

    @classmethod
    def load(cls, settings: Settings) -> KeyRing:
        keys = read_keys_file(settings.serving_keys_file)
        for raw in settings.serving_api_keys:
            parts = raw.split(":")
            if len(parts) != 3:
                raise ConfigError(
                    f"serving_api_keys entry {raw[:20]!r}...: write name:scope:sha256"
                )
            keys.append(_entry(parts[0], parts[1], parts[2], where="serving_api_keys"))
        return cls(keys)

    def find(self, key: str | None) -> ApiKey | None:
        """The key's entry, or None; compares digests in constant time."""
        if not key:
            return None
        d = digest(key)
        found = None
        for k in self.keys:
            if hmac.compare_digest(k.sha256, d):
                found = k
        return found

    def __len__(self) -> int:
        return len(self.keys)


def read_keys_file(path: Path) -> list[ApiKey]:
    if not path.is_file():
        return []
    mode = path.stat().st_mode & 0o777
    if mode & 0o022:
        raise ConfigError(
            f"{path} is writable by other users (mode {mode:o}); chmod 600 it: whoever writes "
            "it can add a key"
        )
    try:
        body = json.loads(path.read_text())
        entries = body["keys"]
        return [_entry(e["name"], e["scope"], e["sha256"], str(path)) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a serving keys file ({exc})") from exc


def _write_keys_file(path: Path, keys: list[ApiKey], created: dict[str, str]) -> None:
    body = {
        "keys": [
            {
                "name": k.name,
                "scope": k.scope,
                "sha256": k.sha256,
                "created_at": created.get(k.name),
            }
            for k in keys
        ]
    }
    write_bytes(path, (json.dumps(body, indent=1) + "\n").encode())
    path.chmod(0o600)


def add_key(path: Path, name: str, scope: str) -> str:
    """A new key named ``name`` in the keys file; returns the key (shown once, never
    stored)."""
    existing = read_keys_file(path)
    if any(k.name == name for k in existing):
        raise ShopMLError(f"{path}: a key named {name!r} exists; revoke it first")
    key = PREFIX + secrets.token_urlsafe(32)
    entry = _entry(name, scope, digest(key), str(path))
    created = _created_at(path)
    created[name] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_keys_file(path, [*existing, entry], created)
    return key


def revoke_key(path: Path, name: str) -> None:
    existing = read_keys_file(path)
    if not any(k.name == name for k in existing):
        raise ShopMLError(f"{path}: no key named {name!r}")
    _write_keys_file(path, [k for k in existing if k.name != name], _created_at(path))


def _created_at(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    body = json.loads(path.read_text())
    return {e["name"]: e.get("created_at") for e in body.get("keys", [])}


def ensure_default_keys(settings: Settings) -> dict[str, Path]:
    """Embedded profile, no key configured yet: a ``default`` client key and an ``admin``
    key, each written once to a 0600 file beside the keys file; returns {scope: file}
    of the keys created (empty when keys exist). The production profile never gets
    generated keys: its operator adds them (``shopml serve keys add``)."""
    if settings.env != "embedded":
        return {}
    return generate_keys(settings)


def generate_keys(settings: Settings) -> dict[str, Path]:
    """A ``default`` client key and an ``admin`` key, each written to a 0600 file beside the
    keys file (``serving-<scope>.key``); returns {scope: file}. For the embedded profile,
    and for ``shopml stack init --profile production``, whose operator asked for a stack.
    Nothing when keys exist."""
    if len(KeyRing.load(settings)):
        return {}
    out = {}
    for scope, name in (("client", "default"), ("admin", "admin")):
        key = add_key(settings.serving_keys_file, name, scope)
        file = settings.serving_keys_file.parent / f"serving-{scope}.key"
        file.unlink(missing_ok=True)
        create_secret(file, key.encode())
        out[scope] = file
    return out


def default_key(settings: Settings, scope: str) -> str | None:
    """The generated key of ``scope`` (embedded profile), or None."""
    file = settings.serving_keys_file.parent / f"serving-{scope}.key"
    return file.read_text().strip() if file.is_file() else None
