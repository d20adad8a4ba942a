"""Finding and removing a shopper's traces in files, whatever wrote them.

A trace is one of the shopper's ids as stored (the shop's id, its pseudonym) found:
- in a parquet file: a row whose string (or list-of-string) column holds it exactly;
- in an ``.npz`` archive: an element of a text array equal to it;
- in a JSON-lines file: a line whose JSON holds it as a whole string value;
- in any other text file (JSON, HTML, Markdown, CSV, logs): the id as a whole word (not
  part of a longer id: ``u1`` does not match ``u12``).
Binary files of other kinds cannot be read this way; :func:`scan_file` says so rather than
call them clean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.io import write_bytes

_MAX_TEXT = 512 * 1024**2
_ID_CHARS = r"A-Za-z0-9_\-"
REDACTED = "[erased]"


@dataclass(frozen=True)
class Found:
    path: Path
    traces: int  # rows, elements, lines or words
    readable: bool = True  # False: a binary file this scan cannot read


def _words(ids: Iterable[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(i) for i in sorted(set(ids), key=len, reverse=True))
    return re.compile(rf"(?<![{_ID_CHARS}])(?:{alts})(?![{_ID_CHARS}])")


def _string_columns(schema: pa.Schema) -> list[str]:
    out = []
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out.append(f.name)
    return out


def _row_mask(table: pa.Table, ids: pa.Array) -> np.ndarray:
    """True for the rows of ``table`` with a trace in a text column."""
    hit = np.zeros(table.num_rows, dtype=bool)
    for name in _string_columns(table.schema):
        col = table.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            flat = pc.list_flatten(col)
            parents = pc.list_parent_indices(col).to_numpy()
            found = pc.is_in(flat, value_set=ids).to_numpy(zero_copy_only=False)
            hit[np.unique(parents[np.asarray(found, dtype=bool)])] = True
        else:
            found = pc.fill_null(pc.is_in(col, value_set=ids), False)
            hit |= np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)
    return hit


def _is_text(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(8192)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        return exc.start >= len(head) - 4
    return True


def scan_file(path: Path, ids: list[str]) -> Found:
    """How many traces of ``ids`` ``path`` holds."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        return Found(path, int(_row_mask(table, pa.array(ids, pa.string())).sum()))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            n = sum(
                int(np.isin(arrays[k], ids).sum())
                for k in arrays.files
                if arrays[k].dtype.kind in "US"
            )
        return Found(path, n)
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False, mmap_mode="r")
        return Found(path, int(np.isin(array, ids).sum()) if array.dtype.kind in "US" else 0)
    if suffix in (".db", ".sqlite", ".sqlite3") and _is_sqlite(path):
        return Found(path, _sqlite_traces(path, ids))
    if path.stat().st_size > _MAX_TEXT or not _is_text(path):
        return Found(path, 0, readable=False)
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".jsonl":
        wanted = set(ids)
        return Found(path, sum(1 for line in text.splitlines() if _json_hit(line, wanted)))
    return Found(path, len(_words(ids).findall(text)))


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\0"


def _sqlite_traces(path: Path, ids: list[str]) -> int:
    """Values of text columns of a SQLite database that hold an id as a whole word (MLflow's
    and Airflow's databases, the online store: ids inside a blob count too)."""
    import sqlite3

    words = _words(ids)
    found = 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            columns = [r[1] for r in con.execute(f"PRAGMA table_info({quoted})")]
            for column in columns:
                col = '"' + column.replace('"', '""') + '"'
                for uid in ids:
                    like = (
                        "%"
                        + uid.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                        + "%"
                    )
                    rows = con.execute(
                        f"SELECT CAST({col} AS BLOB) FROM {quoted} WHERE CAST({col} AS BLOB) LIKE ? ESCAPE '\\'",
                        (like,),
                    )
                    for (value,) in rows:
                        text = (
                            value.decode("utf-8", "replace")
                            if isinstance(value, bytes)
                            else str(value)
                        )
                        found += len(words.findall(text))
    finally:
        con.close()
    return found


def _json_hit(line: str, wanted: set[str]) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return any(w in line for w in wanted)  # a torn line: the text itself

    def walk(v: object) -> bool:
        if isinstance(v, str):
            return v in wanted
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        return False

    return walk(value)


def scrub_file(path: Path, ids: list[str]) -> int:
    """Remove the traces of ``ids`` from ``path`` in place (atomically): parquet rows and
    JSON lines that hold them are dropped, words in text are replaced by ``[erased]``.
    Returns the number removed; 0 for a file this cannot rewrite."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        file = pq.ParquetFile(path)
        table = file.read()
        hit = _row_mask(table, pa.array(ids, pa.string()))
        if hit.any():
            sink = pa.BufferOutputStream()
            pq.write_table(table.filter(pa.array(~hit)), sink, compression="zstd")
            write_bytes(path, sink.getvalue().to_pybytes())
        return int(hit.sum())
    if suffix == ".npz" or path.stat().st_size > _MAX_TEXT or not _is_text(path):
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    if suffix == ".jsonl":
        wanted = set(ids)
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if not _json_hit(line, wanted)]
        if len(kept) != len(lines):
            write_bytes(path, "".join(kept).encode())
        return len(lines) - len(kept)
    new, n = _words(ids).subn(REDACTED, text)
    if n:
        write_bytes(path, new.encode())
    return n
