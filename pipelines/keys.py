"""Signing what promotion must be able to trust: the key, and HMAC-SHA256 signatures.

An evaluation signs its verdict with the platform's key (``settings.signing_key_file``,
created with mode 0600 on first use); promotion accepts a verdict only with a valid
signature. Anyone who can edit MLflow tags or artifacts, but cannot read the key, cannot
bless a version: a forged or edited verdict fails the check.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.settings import Settings


def signing_key(settings: Settings, *, create: bool = False) -> bytes:
    """The key in ``settings.signing_key_file``; with ``create``, a new random key is
    written there (0600) when the file does not exist yet."""
    path = settings.signing_key_file
    if not path.is_file():
        if not create:
            raise ConfigError(
                f"no signing key at {path}: verdicts are signed by `shopml evaluate` on the "
                "machine that promotes, with the same SHOPML_SIGNING_KEY_FILE"
            )
        create_secret(path)
    return read_secret(path, "anyone who reads the signing key can bless a model")


def create_secret(path: Path, value: bytes | None = None) -> bool:
    """Write ``value`` (default: 32 random bytes as hex) to ``path`` with mode 0600,
    only if the file does not exist; False when it already did (two first-time callers
    cannot end with two different secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two first-time evaluations cannot end with two different keys
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write((secrets.token_hex(32).encode() if value is None else value) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def read_secret(path: Path, why: str) -> bytes:
    """The secret in ``path``, refused when other users may read it (``why`` says what
    they could do with it) or when it is shorter than 32 bytes."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users (mode {mode:o}); chmod 600 it: {why}")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ConfigError(f"{path}: a secret key needs at least 32 bytes")
    return key


def sign(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify_signature(data: bytes, signature: str, key: bytes) -> bool:
    return hmac.compare_digest(sign(data, key), signature.strip())
