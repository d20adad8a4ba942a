"""Reading source files as text tables, with errors that name the file, row and column.

Everything is read as strings (``dtype=str``); :func:`pipelines.data.contract.conform`
does the typing, so a bad value is reported with its row instead of silently
becoming NaN. Rows are 1-based data rows: the header is not counted.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.errors import ContractError
from pipelines.io import why_not_a_file

_BLOCK = 1 << 22


def check_encoding(
    path: Path, encoding: str, *, delimiter: str = ",", name: str | None = None
) -> None:
    """Decode the whole file once; on failure raise with the row and (best effort) column.

    Streams in 4 MiB blocks, so it costs one read of the file and no memory.
    """
    name = name or path.name
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError as exc:
        raise ContractError(name, f"unknown encoding {encoding!r}") from exc
    lines_before = 0
    with path.open("rb") as fh:
        start = fh.read(4)
        fh.seek(0)
        if start[:2] in (b"\xff\xfe", b"\xfe\xff") and not encoding.lower().startswith("utf-16"):
            raise ContractError(
                name,
                f"the file is UTF-16 text (it starts with a UTF-16 byte-order mark), not "
                f"{encoding}; declare `encoding: utf-16` (or --encoding utf-16)",
            )
        while True:
            block = fh.read(_BLOCK)
            final = not block
            try:
                decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                bad = max(exc.start - (len(exc.object) - len(block)), 0) if exc.object else 0
                line_no = lines_before + block.count(b"\n", 0, bad) + 1
                line_start = block.rfind(b"\n", 0, bad) + 1
                head = block[line_start:bad].decode(encoding, errors="replace")
                column_no = head.count(delimiter) + 1
                byte = block[bad : bad + 1].hex() if bad < len(block) else "?"
                hint = (
                    "; if the file is Latin-1, declare `encoding: latin-1`"
                    if encoding.lower().replace("-", "") == "utf8"
                    else ""
                )
                raise ContractError(
                    name,
                    f"not valid {encoding} text (byte 0x{byte} in field {column_no} of line {line_no}){hint}",
                    row=max(line_no - 1, 1),
                ) from exc
            if final:
                return
            lines_before += block.count(b"\n")


def read_text_table(
    path: Path,
    *,
    fmt: str | None = None,
    encoding: str = "utf-8",
    delimiter: str = ",",
    null_values: Sequence[str] = ("",),
    header: bool = True,
    names: Sequence[str] | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Read a CSV (all columns as text) or parquet file into a DataFrame.

    Raises :class:`ContractError` for a missing or empty file, bad encoding, or a row
    with the wrong number of fields.
    """
    name = name or path.name
    if (why := why_not_a_file(path)) is not None:
        raise ContractError(name, f"{path} {why}")
    if path.stat().st_size == 0:
        raise ContractError(name, "file is empty (no header row and no data)")
    fmt = fmt or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt == "parquet":
        try:
            table: pa.Table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ContractError(name, f"not a readable parquet file ({exc})") from exc
        # Integer columns become exact text: through pandas, a nullable int64 id would turn
        # into a float and lose digits above 2**53.
        for i, field in enumerate(table.schema):
            if pa.types.is_integer(field.type):
                table = table.set_column(i, field.name, pc.cast(table.column(i), pa.string()))
        return table.to_pandas()
    if fmt != "csv":
        raise ContractError(name, f"unknown format {fmt!r}; use csv or parquet")
    check_encoding(path, encoding, delimiter=delimiter, name=name)
    # A UTF-8 byte-order mark (spreadsheet exports) must not end up in the first column name.
    is_utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"
    # The C parser takes one-character separators; longer ones (MovieLens 1M's "::") need
    # the Python parser, given as an escaped regular expression.
    multi = len(delimiter) > 1
    try:
        frame = pd.read_csv(
            path,
            sep=re.escape(delimiter) if multi else delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=list(null_values),
            encoding="utf-8-sig" if is_utf8 else encoding,
            header=0 if header else None,
            names=list(names) if names else None,
            engine="python" if multi else "c",
            index_col=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise ContractError(name, "file is empty (no header row and no data)") from exc
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+), saw (\d+)", str(exc))
        if m:
            line = int(m.group(1))
            row = line - 1 if header else line
            raise ContractError(
                name, f"{m.group(2)} fields where the header has fewer (line {line})", row=row
            ) from exc
        raise ContractError(name, f"cannot parse as CSV: {exc}") from exc
    if header:
        _refuse_duplicate_header(path, name, delimiter, "utf-8-sig" if is_utf8 else encoding)
    return frame


def _refuse_duplicate_header(path: Path, name: str, delimiter: str, encoding: str) -> None:
    """pandas renames a repeated column ('price', 'price.1'): refuse it, naming it, before
    a later message names a column the file does not have."""
    with path.open(encoding=encoding, newline="") as fh:
        line = fh.readline().rstrip("\r\n")
    if len(delimiter) == 1:
        first = next(csv.reader([line], delimiter=delimiter), [])
    else:
        first = line.split(delimiter)
    seen: dict[str, int] = {}
    for i, column in enumerate(first, start=1):
        if column in seen:
            raise ContractError(
                name,
                f"the header names column {column!r} twice (fields {seen[column]} and {i}); "
                "rename one",
                column=column,
            )
        seen[column] = i


def require_columns(
    df: pd.DataFrame, columns: Sequence[str], *, name: str, purpose: str = ""
) -> None:
    """Raise naming the first missing source column and listing those present."""
    for c in columns:
        if c not in df.columns:
            why = f" ({purpose})" if purpose else ""
            raise ContractError(
                name, f"column not found{why}; the file has {list(df.columns)}", column=c
            )
