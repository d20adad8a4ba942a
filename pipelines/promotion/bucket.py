"""The serving bucket: a local folder (``file:///...``, the embedded default) or an S3 prefix
(``s3://bucket/prefix`` through boto3; any S3-compatible store via the ``s3_endpoint_url``
setting). Keys are '/'-separated paths under the bucket URI.

Local writes are atomic (a temporary file renamed into place) and durable (fsync); an S3
PUT is atomic by itself. :meth:`Bucket.put_if_absent` creates a key only if no writer
created it first (a hard link locally, a conditional ``If-None-Match: *`` PUT on S3): the
ledger appends with it, so two writers racing can never overwrite each other's entry.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipelines.errors import ConfigError, ShopMLError
from pipelines.io import temporary_name, write_bytes


class Bucket(ABC):
    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder path; "" for the whole bucket), sorted."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless it exists; False when it already did."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing when it does not exist)."""

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file ``path`` as ``key``."""
        self.put(key, path.read_bytes())

    def get_file(self, key: str, path: Path) -> bool:
        """Download ``key`` to the file ``path``; False when the key does not exist."""
        data = self.get(key)
        if data is None:
            return False
        write_bytes(path, data)
        return True

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

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # fails when the key exists: creation is exclusive
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # empty folders go too, up to the bucket's root
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break


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
        folder = self._key(prefix).rstrip("/")
        for page in paginator.paginate(Bucket=self.name, Prefix=folder + "/" if folder else ""):
            out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(out)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=self._key(key))

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.name, self._key(key))  # multipart when large

    def get_file(self, key: str, path: Path) -> bool:
        from botocore.exceptions import ClientError

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        try:
            self.client.download_file(self.name, self._key(key), str(tmp))
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey"):
                return False
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.name, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True


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
