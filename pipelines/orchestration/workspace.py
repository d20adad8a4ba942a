"""A retrain run's work storage: where each step leaves its files for the next one.

The payload between tasks carries the run's work URI, never a local folder, so consecutive
steps may run on different workers (Celery workers on other hosts, each with its own
``SHOPML_HOME``). Under the setting ``work_uri``:

- ``file:///folder`` (the embedded default, ``$SHOPML_HOME/runs``, or a folder every
  worker mounts): a step works in the run's folder in place, as one machine always has.
- ``s3://bucket/prefix`` (production; any S3-compatible store via ``s3_endpoint_url``):
  a step downloads the *parts* it reads into a private scratch folder, runs, and uploads
  the parts it writes only when it succeeded. A part is a file or folder of the run
  (``plan.json``, ``snapshot``, ``features``, ``stage``, ``ranker``, ``evaluation``,
  ``search/model``...). Each upload ends with the part's index (``_parts/<part>.json``:
  every file with its size and sha256), so a part is all there or absent: a reader never
  sees half of one (a worker killed mid-upload leaves the previous index, or none), and
  every downloaded file is checked against it.

A retried step overwrites its parts; files of an earlier attempt that the new index does
not list are never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipelines.errors import ShopMLError
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.settings import Settings

log = logging.getLogger(__name__)

INDEX = "_parts"
_PART = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def run_uri(settings: Settings, dag_run_id: str) -> str:
    """The work URI of one DAG run (its id made safe for a path)."""
    return f"{settings.work_uri}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', dag_run_id)}"


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme == "file"


def local_folder(uri: str) -> Path:
    """The folder of a ``file://`` work URI."""
    if not is_local(uri):
        raise ShopMLError(f"{uri} is not a local (file://) work folder")
    return Path(unquote(urlparse(uri).path))


@contextmanager
def opened(
    uri: str, settings: Settings, *, reads: Sequence[str] = (), writes: Sequence[str] = ()
) -> Iterator[Path]:
    """A local folder holding the run's parts ``reads``; the parts ``writes`` the body left
    there are published when it returns (an exception publishes nothing)."""
    for part in (*reads, *writes):
        if not _PART.match(part) or ".." in part.split("/"):
            raise ShopMLError(f"work part {part!r}: a relative path of plain names")
    if is_local(uri):
        folder = local_folder(uri)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    bucket = open_bucket(uri, settings.s3_endpoint_url)
    folder = Path(tempfile.mkdtemp(prefix="shopml-work-", dir=_scratch(settings)))
    try:
        for part in reads:
            download(bucket, part, folder)
        yield folder
        for part in writes:
            upload(bucket, part, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _index_key(part: str) -> str:
    return f"{INDEX}/{part}.json"


def upload(bucket: Bucket, part: str, folder: Path) -> None:
    """Every file of ``folder/part``, then its index (last: it completes the part)."""
    root = folder / part
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        raise ShopMLError(f"the step did not write {part!r}, which it should publish")
    t0 = time.perf_counter()
    listed: dict[str, dict[str, int | str]] = {}
    for f in files:
        rel = f.relative_to(folder).as_posix()
        bucket.put_file(rel, f)
        listed[rel] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    body = {"part": part, "kind": "file" if root.is_file() else "folder", "files": listed}
    bucket.put(_index_key(part), json.dumps(body, indent=1, sort_keys=True).encode())
    size = sum(int(v["size"]) for v in listed.values())
    log.info(
        "work: published %s (%d files, %.1f MB) to %s in %.1f s",
        part, len(listed), size / 1e6, bucket.uri, time.perf_counter() - t0,
    )  # fmt: skip


def download(bucket: Bucket, part: str, folder: Path) -> None:
    """``part`` as its index lists it, each file checked against its sha256."""
    raw = bucket.get(_index_key(part))
    if raw is None:
        raise ShopMLError(
            f"work {bucket.uri}: part {part!r} is missing; the step that writes it has not "
            "finished (or ran against another work_uri)"
        )
    index = json.loads(raw)
    t0 = time.perf_counter()
    if index.get("kind") == "folder":
        (folder / part).mkdir(parents=True, exist_ok=True)
    for rel, meta in sorted(index["files"].items()):
        if (
            not _PART.match(rel)
            or ".." in rel.split("/")
            or not (rel == part or rel.startswith(part + "/"))
        ):
            raise ShopMLError(f"work {bucket.uri}: the index of {part!r} lists {rel!r}")
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not bucket.get_file(rel, dst):
            raise ShopMLError(f"work {bucket.uri}: {rel} of part {part!r} is missing")
        if _sha256(dst) != meta["sha256"]:
            raise ShopMLError(
                f"work {bucket.uri}: {rel} does not match the sha256 its part's index records "
                "(changed or half-written after the step published it)"
            )
    log.info(
        "work: fetched %s (%d files) from %s in %.1f s",
        part, len(index["files"]), bucket.uri, time.perf_counter() - t0,
    )  # fmt: skip


def publish_tree(uri: str, settings: Settings, part: str, source: Path) -> None:
    """Upload the folder ``source`` into the run's remote work storage as ``part`` (the
    snapshot a run trains on, which other workers cannot read from this one's disk)."""
    bucket = open_bucket(uri, settings.s3_endpoint_url)
    with tempfile.TemporaryDirectory(dir=_scratch(settings)) as tmp:
        (Path(tmp) / part).symlink_to(source.resolve(), target_is_directory=True)
        upload(bucket, part, Path(tmp))


def _scratch(settings: Settings) -> Path:
    path = settings.home / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path
