"""Snapshots: content-hashed folders of contract tables plus ``manifest.json``.

Writes are atomic: every file goes into a hidden temporary folder beside the target,
the manifest is written last, and one ``rename`` publishes the folder. A failed write
removes the temporary folder and never touches an existing snapshot.

The snapshot id is the sha256 of the table files' own sha256 digests (sorted by table
name), so the same tables give the same id whenever and wherever they are written;
``created_at`` and other bookkeeping live in the manifest but not in the id.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import __version__
from pipelines.data.contract import EMBEDDING, TABLES, check_schema, empty_table, schema
from pipelines.errors import SnapshotError
from pipelines.io import resolved, sha256_file, swap_in, temporary_name, write_json

if TYPE_CHECKING:
    from pipelines.data.privacy import Privacy

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# Fixed writer settings: the same tables must give the same bytes (and so the same id).
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "write_statistics": True,
    "use_dictionary": True,
}


def snapshot_id_of(file_digests: dict[str, str]) -> str:
    """Content hash of a snapshot from its tables' sha256 digests."""
    h = hashlib.sha256()
    for name in sorted(file_digests):
        h.update(f"{name}:{file_digests[name]}\n".encode())
    return h.hexdigest()


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ts_range(path: Path, column: str) -> tuple[datetime | None, datetime | None]:
    """Min/max of a timestamp column from the parquet row-group statistics (no data read)."""
    meta = pq.ParquetFile(path).metadata
    idx = meta.schema.to_arrow_schema().get_field_index(column)
    lo: datetime | None = None
    hi: datetime | None = None
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(idx).statistics
        if stats is None or not stats.has_min_max:
            continue
        lo = stats.min if lo is None else min(lo, stats.min)
        hi = stats.max if hi is None else max(hi, stats.max)
    return lo, hi


class SnapshotWriter:
    """Collects the tables of one snapshot in a temporary folder; see :func:`write_snapshot`."""

    def __init__(
        self, tmp: Path, allow_empty: tuple[str, ...] = (), privacy: Privacy | None = None
    ) -> None:
        self.tmp = tmp
        self.allow_empty = allow_empty
        self.privacy = privacy

    def write_table(self, name: str, table: pa.Table, *, allow_empty: bool = False) -> None:
        if self.privacy is not None:  # pseudonyms in, erased shoppers out
            table = self.privacy.protect(name, table)
        check_schema(
            name,
            table,
            file=TABLES[name].file,
            whole_table=not (allow_empty and name in self.allow_empty),
        )
        pq.write_table(table, self.tmp / TABLES[name].file, **_PARQUET_OPTIONS)

    @contextmanager
    def stream(self, name: str, *, with_embedding: bool = False) -> Iterator[TableStream]:
        """A writer for tables too large to hold at once; each ``write`` is one row group."""
        spec = TABLES[name]
        writer = pq.ParquetWriter(
            self.tmp / spec.file, schema(name, with_embedding=with_embedding), **_PARQUET_OPTIONS
        )
        try:
            yield TableStream(name, writer)
        finally:
            writer.close()


@dataclass
class TableStream:
    """Appends schema-checked chunks to one table file."""

    name: str
    writer: pq.ParquetWriter
    rows: int = 0

    def write(self, chunk: pa.Table) -> None:
        check_schema(self.name, chunk, file=TABLES[self.name].file, whole_table=False)
        self.writer.write_table(chunk)
        self.rows += chunk.num_rows


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot folder."""

    path: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.manifest["snapshot_id"])

    @classmethod
    def open(cls, path: str | Path) -> Snapshot:
        p = resolved(path)
        mf = p / MANIFEST
        if not mf.is_file():
            what = (
                "does not exist"
                if not p.exists()
                else f"has no {MANIFEST} (not a snapshot, or an unfinished write)"
            )
            raise SnapshotError(f"{p}: {what}")
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{mf}: not valid JSON ({exc})") from exc
        for name, spec in TABLES.items():
            if spec.required and name not in manifest.get("tables", {}):
                raise SnapshotError(f"{mf}: lists no '{name}' table")
        return cls(p, manifest)

    def has(self, table: str) -> bool:
        return table in self.manifest["tables"]

    def table_path(self, table: str) -> Path:
        if not self.has(table):
            raise SnapshotError(f"{self.path}: snapshot has no '{table}' table")
        return self.path / self.manifest["tables"][table]["file"]

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        path = self.table_path(table)
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise SnapshotError(
                f"{path}: cannot be read ({str(exc).splitlines()[0]}); the file is truncated or "
                "altered: import or generate the snapshot again"
            ) from exc

    def rows(self, table: str) -> int:
        return int(self.manifest["tables"][table]["rows"]) if self.has(table) else 0

    def verify_cached(self) -> None:
        """:meth:`verify`, once per process for files of unchanged size and modification
        time (re-reading a 10M-event snapshot costs seconds; steps call this often)."""
        key = (str(self.path), self.id, _stats(self))
        if key not in _VERIFIED:
            self.verify()
            _VERIFIED.add(key)

    def verify(self) -> None:
        """Recompute every file's sha256 and the snapshot id; raise if anything changed."""
        digests: dict[str, str] = {}
        for name, entry in self.manifest["tables"].items():
            f = self.path / entry["file"]
            if not f.is_file():
                raise SnapshotError(f"{f}: listed in the manifest but missing")
            digests[name] = sha256_file(f)
            if digests[name] != entry["sha256"]:
                raise SnapshotError(
                    f"{f}: sha256 {digests[name][:12]}… differs from the manifest's {entry['sha256'][:12]}… (file altered)"
                )
        if snapshot_id_of(digests) != self.id:
            raise SnapshotError(f"{self.path}: snapshot id does not match its tables")


# (snapshot path, id, file stats) that verified in this process
_VERIFIED: set[tuple[str, str, tuple[tuple[str, int, int], ...]]] = set()


def _stats(snap: Snapshot) -> tuple[tuple[str, int, int], ...]:
    out = []
    for entry in snap.manifest["tables"].values():
        try:
            st = (snap.path / entry["file"]).stat()
        except OSError:
            return ()  # missing: never cached, verify names it
        out.append((str(entry["file"]), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


@contextmanager
def write_snapshot(
    out: str | Path,
    *,
    source: str,
    producer: dict[str, Any],
    overwrite: bool = False,
    notes: list[str] | None = None,
    allow_empty: tuple[str, ...] = (),
    privacy: Privacy | None = None,
) -> Iterator[SnapshotWriter]:
    """Write a snapshot atomically.

    Use as ``with write_snapshot(out, source=..., producer=...) as w: w.write_table(...)``.
    On leaving the block the manifest is written and the folder published at ``out``.
    ``queries`` is written empty when the block did not write it. An existing ``out``
    is an error unless ``overwrite``; then it is swapped out only after the new snapshot
    is complete. On any exception nothing is published and ``out`` is untouched.
    ``allow_empty`` names tables that may have no rows (a judgments-only snapshot has
    no users and events); the manifest's ``kind`` then says ``judgments``. ``privacy``
    pseudonymises the shoppers' ids of every table written and drops erased shoppers' rows
    (:mod:`pipelines.data.privacy`); the manifest's notes say how many.
    """
    target = resolved(out)
    check_target(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(target)
        tmp.mkdir()
    except OSError as exc:
        raise SnapshotError(f"cannot write a snapshot at {target}: {exc.strerror or exc}") from exc
    try:
        writer = SnapshotWriter(tmp, allow_empty, privacy)
        yield writer
        if not (tmp / TABLES["queries"].file).exists():
            writer.write_table("queries", empty_table("queries"))
        notes = [*(notes or []), *(privacy.notes() if privacy is not None else [])]
        manifest = build_manifest(
            tmp, source=source, producer=producer, notes=notes, allow_empty=allow_empty
        )
        write_json(tmp / MANIFEST, manifest)
        _publish(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_manifest(
    folder: Path,
    *,
    source: str,
    producer: dict[str, Any],
    notes: list[str],
    allow_empty: tuple[str, ...],
) -> dict[str, Any]:
    """The manifest of the tables in ``folder``: rows, bytes, sha256 and columns of each,
    the snapshot id, the event time range and the embedding size."""
    tables: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for name, spec in TABLES.items():
        f = folder / spec.file
        if not f.exists():
            if spec.required:
                raise SnapshotError(f"snapshot is missing the required '{name}' table")
            continue
        meta = pq.ParquetFile(f).metadata
        if meta.num_rows == 0 and not spec.allow_empty and name not in allow_empty:
            raise SnapshotError(f"{spec.file}: no rows; a snapshot needs at least one {name[:-1]}")
        digests[name] = sha256_file(f)
        tables[name] = {
            "file": spec.file,
            "rows": meta.num_rows,
            "bytes": f.stat().st_size,
            "sha256": digests[name],
            "columns": meta.schema.to_arrow_schema().names,
        }
    lo, hi = _ts_range(folder / TABLES["events"].file, "ts")
    dim = None
    if EMBEDDING in tables["items"]["columns"]:
        dim = (
            pq.read_table(folder / TABLES["items"].file, columns=[EMBEDDING])
            .column(EMBEDDING)
            .drop_null()
        )
        dim = len(dim[0]) if len(dim) else None
    return {
        "format_version": FORMAT_VERSION,
        "snapshot_id": snapshot_id_of(digests),
        "source": source,
        "kind": "interactions" if tables["events"]["rows"] else "judgments",
        "created_at": _iso(datetime.now(UTC)),
        "producer": {"shopml_version": __version__, **producer},
        "event_time": {"min": _iso(lo), "max": _iso(hi)},
        "row_counts": {k: v["rows"] for k, v in tables.items()},
        "image_embedding_dim": dim,
        "tables": tables,
        "notes": notes,
    }


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_target(out: str | Path, overwrite: bool) -> None:
    """Only an empty folder or, with ``overwrite``, an existing snapshot may be replaced
    (importers ask first, before reading their sources)."""
    target = resolved(out)
    if not target.exists() or _is_empty_dir(target):
        return
    if not overwrite:
        raise SnapshotError(f"{target} already exists; choose a new --out or pass --overwrite")
    if not (target / MANIFEST).is_file():
        raise SnapshotError(
            f"{target} exists and is not a snapshot (no {MANIFEST}); --overwrite only replaces snapshots"
        )


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    # Checked again here: another writer may have published at `target` meanwhile.
    check_target(target, overwrite)
    if not target.exists() or _is_empty_dir(target):
        try:
            tmp.rename(target)  # atomic; fails if a non-empty folder appeared in between
        except OSError as exc:
            raise SnapshotError(
                f"{target} appeared while writing; nothing was replaced ({exc.strerror})"
            ) from exc
        return
    # Overwrite: the old snapshot is moved aside only once the new one is complete.
    swap_in(tmp, target)
