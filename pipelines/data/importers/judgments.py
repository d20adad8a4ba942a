"""``shopml data import judgments``: query-product relevance files into items + judgments.

Built for files like CrowdFlower's search-relevance set (query, product_title,
product_description, median_relevance), with the column names as options.

- A product is identified by its title and description: ``item_id`` is ``p`` + the
  first 16 hex digits of their sha1, so the same product judged for several queries
  is one item.
- Several judgments of the same (query, product) are averaged, and the manifest
  notes how many were merged.
- These files carry no category, brand, price or date: items get category
  ``Uncategorized``, price 1.0 in currency ``XXX`` and ``created_ts`` = ``--created-ts``.
- The snapshot has no users and no events (a relevance set is not a shop log); its
  manifest's ``kind`` is ``judgments`` and training steps refuse it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.conform import conform, require
from pipelines.data.contract import empty_table
from pipelines.data.importers import ImportResult, log_table
from pipelines.data.importers.readers import read_text_table, require_columns
from pipelines.data.snapshot import Snapshot, check_target, write_snapshot
from pipelines.errors import ContractError
from pipelines.io import resolved

IMPORTER_VERSION = "1"


@dataclass(frozen=True)
class JudgmentColumns:
    query: str = "query"
    title: str = "product_title"
    description: str = "product_description"
    relevance: str = "median_relevance"


def _item_id(title: str, description: str) -> str:
    return "p" + hashlib.sha1(f"{title}\x1f{description}".encode()).hexdigest()[:16]


def import_judgments(
    src: str | Path,
    *,
    out: str | Path,
    columns: JudgmentColumns = JudgmentColumns(),
    encoding: str = "utf-8",
    created_ts: str = "1970-01-01T00:00:00Z",
    overwrite: bool = False,
) -> ImportResult:
    check_target(out, overwrite)  # a conflicting --out is refused before any reading
    src = Path(src)
    name = src.name
    started = time.perf_counter()
    df = read_text_table(src, encoding=encoding, name=name)
    require_columns(df, [columns.query, columns.title, columns.relevance], name=name)
    if len(df) == 0:
        raise ContractError(name, "no data rows")
    rel = pd.to_numeric(df[columns.relevance], errors="coerce")
    require(
        name,
        columns.relevance,
        df[columns.relevance],
        np.isfinite(rel.fillna(np.inf)),
        "a relevance number",
    )
    for col in (columns.query, columns.title):
        require(name, col, df[col], df[col].fillna("").str.strip().ne(""), "a non-empty text")

    title = df[columns.title].fillna("")
    description = (
        df[columns.description].fillna("")
        if columns.description in df.columns
        else pd.Series("", index=df.index)
    )
    item_ids = [_item_id(t, d) for t, d in zip(title, description, strict=True)]
    pairs = pd.DataFrame(
        {"query": df[columns.query].str.strip(), "item_id": item_ids, "relevance": rel}
    )
    merged = pairs.groupby(["query", "item_id"], sort=False)["relevance"].mean().reset_index()
    n_merged = len(pairs) - len(merged)

    items = (
        pd.DataFrame(
            {
                "item_id": item_ids,
                "title": title,
                "description": description.where(description != ""),
            }
        )
        .drop_duplicates("item_id")
        .assign(
            category="Uncategorized", brand=None, price=1.0, currency="XXX", created_ts=created_ts
        )
    )
    notes = [
        f"{len(df):,} judgment rows from {name}; {n_merged:,} repeated (query, product) judgments averaged",
        "items carry no category, brand, price or date: Uncategorized, price 1.0 XXX, created_ts "
        + created_ts,
        "no users and no events: a relevance-judgments snapshot",
    ]
    producer = {
        "name": "shopml.importers.judgments",
        "version": IMPORTER_VERSION,
        "source_file": str(resolved(src)),
        "columns": columns.__dict__,
        "kind": "judgments",
    }
    tables = {
        "items": conform("items", items, file=name),
        "judgments": conform("judgments", merged, file=name),
    }
    log_table("judgments", name, len(df), time.perf_counter() - started)
    with write_snapshot(
        out,
        source=f"judgments:{name}",
        producer=producer,
        overwrite=overwrite,
        notes=notes,
        allow_empty=("users", "events"),
    ) as w:
        w.write_table("users", empty_table("users"), allow_empty=True)
        w.write_table("events", empty_table("events"), allow_empty=True)
        for table_name, table in tables.items():
            w.write_table(table_name, table)
    snap = Snapshot.open(out)
    return ImportResult(snap.path, snap.id, dict(snap.manifest["row_counts"]), tuple(notes))
