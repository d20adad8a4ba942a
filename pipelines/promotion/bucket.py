"""The serving bucket: a local folder (``file:///...``, the embedded default) or an S3 prefix
(``s3://bucket/prefix`` through boto3; any S3-compatible store via the ``s3_endpoint_url``
setting). Keys are '/'-separated paths under the bucket URI.

Local writes are atomic (a temporary file renamed into place) and durable (fsync); an S3
PUT is atomic by itself. Appending a line (the ledger) is an ``O_APPEND`` write locally
and a read-modify-write on S3; only one promotion runs at a time (the retrain DAG has
``max_active_runs=1``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipelines.errors import ConfigError, ShopMLError
from pipelines.io import write_bytes


class Bucket(ABC):
    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder path), sorted."""

    @abstractmethod
    def append_line(self, key: str, line: str) -> None: ...

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


class LocalBucket(Bucket):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = Path(unquote(urlparse(uri).path))

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        write_bytes(self._path(key), data)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and ".tmp-" not in p.name
        )

    def append_line(self, key: str, line: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class S3Bucket(Bucket):
    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3

        parsed = urlparse(uri)
        self.uri = uri
        self.name = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.name, Key=self._key(key))["Body"]
            return bytes(body.read())
        except self.client.exceptions.NoSuchKey:
            return None

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(
            Bucket=self.name, Prefix=self._key(prefix).rstrip("/") + "/"
        ):
            out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(out)

    def append_line(self, key: str, line: str) -> None:
        old = self.get(key) or b""
        self.put(key, old + (line.rstrip("\n") + "\n").encode())


def open_bucket(uri: str, endpoint_url: str | None = None) -> Bucket:
    """The bucket behind a ``file://`` or ``s3://`` URI."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return LocalBucket(uri)
    if scheme == "s3":
        if not urlparse(uri).netloc:
            raise ConfigError(f"serving bucket {uri!r}: an s3:// URI needs a bucket name")
        return S3Bucket(uri, endpoint_url)
    raise ConfigError(f"serving bucket {uri!r}: use a file:/// or s3://bucket/prefix URI")


def describe_error(exc: Exception, bucket: Bucket) -> ShopMLError:
    """A botocore/OS error as one message naming the bucket."""
    return ShopMLError(f"serving bucket {bucket.uri}: {str(exc).splitlines()[0]}")
