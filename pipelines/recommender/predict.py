"""Batch predict: one request type for every caller, and tables in, tables out.

A :class:`RecommendRequest` says who asks (user ids; for shoppers the model does not know:
demographics and recently touched items), how many items, whether to explain them, and
which items must not be shown. :func:`predict_frame` turns a table of users (the CLI's
file, the pyfunc's input) into a request and its answer; :func:`recommend_in_chunks`
answers a large table in chunks with progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.errors import ShopMLError
from pipelines.io import why_not_a_file
from pipelines.recommender.bundle import Recommender

COLUMNS = ["user_id", "rank", "item_id", "score", "title", "category"]


@dataclass(frozen=True)
class RecommendRequest:
    """Who asks for recommendations and what they want.

    Every per-user field, when given, has one entry per user id: ``age`` (years, NaN
    unknown), ``gender`` and ``region`` (None unknown) and ``recent_items`` (item ids)
    are used for users without history in the model; ``exclude`` lists item ids never to
    show that user (besides the items they already touched). ``category`` keeps the
    answer to one category path or its prefix (``Electronics`` holds
    ``Electronics/Phones``; case-insensitive).
    """

    user_ids: Sequence[str]
    k: int = 10
    explain: bool = False
    age: Sequence[float] | None = None
    gender: Sequence[str | None] | None = None
    region: Sequence[str | None] | None = None
    recent_items: Sequence[Sequence[str]] | None = None
    exclude: Sequence[Sequence[str]] | None = None
    category: str | None = None
    # per user: feature-store values (the ``recommender_ranker`` service's user features, in
    # its order) from a fresher source than the bundle's — the online store; None or NaN
    # keeps the bundle's
    store_users: Sequence[Sequence[float] | None] | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ShopMLError(f"k must be >= 1, not {self.k}")
        n = len(self.user_ids)
        for name in ("age", "gender", "region", "recent_items", "exclude", "store_users"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ShopMLError(f"{name}: {len(values)} values for {n} user ids")


def request_from_frame(frame: pd.DataFrame, *, k: int, explain: bool) -> RecommendRequest:
    """A request for the users of ``frame``: ``user_id`` and optionally ``age``,
    ``gender``, ``region``, ``recent_items`` and ``exclude`` (lists of item ids)."""
    if "user_id" not in frame.columns:
        raise ShopMLError(f"the input needs a user_id column; it has {list(frame.columns)}")

    def column(name: str) -> list[Any] | None:
        if name not in frame.columns:
            return None
        return [
            None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in frame[name]
        ]

    def lists(name: str) -> list[list[str]] | None:
        values = column(name)
        return None if values is None else [list(v) if v is not None else [] for v in values]

    return RecommendRequest(
        user_ids=frame["user_id"].astype(str).tolist(),
        k=k,
        explain=explain,
        age=None if "age" not in frame else pd.to_numeric(frame["age"], errors="coerce").tolist(),
        gender=column("gender"),
        region=column("region"),
        recent_items=lists("recent_items"),
        exclude=lists("exclude"),
    )


def predict_frame(rec: Recommender, frame: pd.DataFrame, *, k: int, explain: bool) -> pd.DataFrame:
    """Recommendations for the users of ``frame`` (the pyfunc and the CLI share this):
    user_id, rank, item_id, score[, reasons]."""
    out = rec.recommend(request_from_frame(frame, k=k, explain=explain))
    if explain and "reasons" not in out.columns:
        out["reasons"] = pd.Series(dtype=str)
    return out


def recommend_in_chunks(
    rec: Recommender,
    frame: pd.DataFrame,
    *,
    k: int,
    explain: bool,
    chunk: int = 5_000,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """:func:`predict_frame` over ``chunk`` users at a time, ``progress(done, total)``
    after each."""
    parts = []
    for lo in range(0, len(frame), chunk):
        parts.append(predict_frame(rec, frame.iloc[lo : lo + chunk], k=k, explain=explain))
        if progress is not None:
            progress(min(lo + chunk, len(frame)), len(frame))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


USER_COLUMNS = ("user_id", "age", "gender", "region", "recent_items", "exclude")


def read_users_file(path: Path) -> pd.DataFrame:
    """A CSV or parquet file of users to recommend for: ``user_id`` and optionally
    ``age``, ``gender``, ``region``, ``recent_items`` and ``exclude`` (item ids, ``a|b`` in
    CSV). Bad values are refused naming the file, row and column."""
    if (why := why_not_a_file(path)) is not None:
        raise ShopMLError(f"{path} {why}")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise ShopMLError(f"{path}: cannot read users: {exc}") from exc
    has = ", ".join(map(str, frame.columns))
    if "user_id" not in frame.columns:
        raise ShopMLError(f"{path}: needs a user_id column; it has {has}")
    unknown = [c for c in frame.columns if c not in USER_COLUMNS]
    if unknown:
        raise ShopMLError(
            f"{path}: unknown column(s) {unknown}; the columns are {', '.join(USER_COLUMNS)}"
        )

    def refuse(column: str, bad: np.ndarray, what: str) -> None:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[column].iloc[row]
            raise ShopMLError(
                f"{path}, row {row + 1:,}, column {column!r}: {value!r} is not {what} "
                f"({int(bad.sum()):,} rows in all)"
            )

    refuse("user_id", frame["user_id"].isna().to_numpy(), "a user id")
    frame["user_id"] = frame["user_id"].astype(str)
    if "age" in frame.columns:
        age = pd.to_numeric(frame["age"], errors="coerce")
        given = frame["age"].notna().to_numpy()
        refuse("age", given & age.isna().to_numpy(), "an age in years")
        refuse("age", given & ~age.between(0, 120).to_numpy(), "an age between 0 and 120")
        frame["age"] = age
    for column in ("recent_items", "exclude"):
        if column in frame.columns:
            frame[column] = frame[column].map(
                lambda v: [s for s in v.split("|") if s] if isinstance(v, str) else
                ([] if v is None or (isinstance(v, float) and np.isnan(v)) else list(v))
            )  # fmt: skip
    return frame


def unknown_items(rec: Recommender, frame: pd.DataFrame) -> tuple[int, str | None]:
    """How many of the file's recent item ids the model does not know (they are ignored),
    and one of them."""
    if "recent_items" not in frame.columns:
        return 0, None
    ids = [i for items in frame["recent_items"] for i in items]
    known = set(rec.ctx.item_ids.tolist())
    missing = [i for i in ids if i not in known]
    return len(missing), (missing[0] if missing else None)
