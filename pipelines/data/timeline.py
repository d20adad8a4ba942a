"""A snapshot's events as time-sorted integer arrays, the base of every feature.

Ids become integer codes into the users and items tables (through Arrow's
``index_in``, so ten million ids cost a second, not a minute), event types become
small integers, and timestamps epoch seconds, all sorted by time. "Events before t"
is then a prefix found by binary search, and "events in the window [t - w, t)" a slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.data.contract import EVENT_TYPES
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ShopMLError

DAY = 86_400  # seconds; every duration in days is converted with this one constant
VIEW, CART, PURCHASE, SEARCH_CLICK = (
    EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "purchase", "search_click")
)


def _codes(values: pa.ChunkedArray, universe: pa.Array, what: str) -> np.ndarray:
    codes = pc.index_in(values, value_set=universe)
    if codes.null_count:
        first = values.filter(pc.is_null(codes))[0].as_py()
        raise ShopMLError(
            f"events reference {codes.null_count:,} unknown {what}(s), e.g. {first!r}; validate the snapshot first"
        )
    return codes.to_numpy(zero_copy_only=False).astype(np.int32)


def _seconds(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False) / 1e6


@dataclass
class Timeline:
    users: pd.DataFrame  # row i = user code i
    items: pd.DataFrame  # row j = item code j
    user: np.ndarray  # per event, time-sorted
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray  # epoch seconds, ascending
    category: np.ndarray  # per item: code into `categories`
    categories: np.ndarray
    brand: np.ndarray  # per item: code into `brands`, -1 for none
    brands: np.ndarray
    order: np.ndarray  # per sorted event: its row in events.parquet
    session: np.ndarray | None = None  # per sorted event: a session code (int64), if loaded

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def before(self, t: float) -> int:
        """Number of events strictly before ``t`` (they are the prefix ``[:n]``)."""
        return int(np.searchsorted(self.ts, t, side="left"))

    def window(self, t: float, days: float) -> slice:
        """Events in ``[t - days, t)``."""
        return slice(self.before(t - days * DAY), self.before(t))


def snapshot_end(snap: Snapshot) -> datetime:
    """The first UTC midnight after the snapshot's last event: the default feature time
    and the end of the snapshot's evaluation window."""
    last = datetime.fromisoformat(snap.manifest["event_time"]["max"].replace("Z", "+00:00"))
    day = datetime(last.year, last.month, last.day, tzinfo=UTC)
    return datetime.fromtimestamp(day.timestamp() + DAY, tz=UTC)


# The evaluation window of a snapshot, in days: `[evaluate] holdout_days` sets both the
# window the gate scores and where training stops by default.
DEFAULT_HOLDOUT_DAYS = 7.0


def holdout_window(snap: Snapshot, holdout_days: float) -> tuple[datetime, datetime]:
    """The evaluation window ``[start, end)``: the last ``holdout_days`` before
    :func:`snapshot_end`. Training stops at ``start`` by default, so the gate scores
    interactions no model has seen."""
    end = snapshot_end(snap)
    return datetime.fromtimestamp(end.timestamp() - holdout_days * DAY, tz=UTC), end


def load_timeline(snap: Snapshot) -> Timeline:
    """Read the tables a feature build needs and turn events into sorted codes."""
    users_t = snap.read("users")
    item_cols = ["item_id", "title", "description", "category", "brand", "price", "created_ts"]
    if "image_url" in snap.manifest["tables"]["items"]["columns"]:
        item_cols.append("image_url")
    if snap.manifest.get("image_embedding_dim"):
        item_cols.append("image_embedding")
    items_t = snap.read("items", columns=item_cols)
    ev = snap.read("events", columns=["user_id", "item_id", "event_type", "ts", "session_id"])

    user = _codes(ev.column("user_id"), users_t.column("user_id").combine_chunks(), "user")
    item = _codes(ev.column("item_id"), items_t.column("item_id").combine_chunks(), "item")
    etype = (
        pc.index_in(ev.column("event_type"), value_set=pa.array(EVENT_TYPES))
        .to_numpy(zero_copy_only=False)
        .astype(np.int8)
    )
    ts = _seconds(ev.column("ts"))
    order = np.argsort(ts, kind="stable")

    items = items_t.to_pandas()
    cat_codes, categories = pd.factorize(items["category"])
    brand_codes, brands = pd.factorize(items["brand"])  # null brand -> -1
    users = users_t.to_pandas()
    users["signup_s"] = _seconds(users_t.column("signup_ts"))
    items["created_s"] = _seconds(items_t.column("created_ts"))
    return Timeline(
        users=users,
        items=items,
        user=user[order],
        item=item[order],
        etype=etype[order],
        ts=ts[order],
        category=cat_codes.astype(np.int32),
        categories=np.asarray(categories, dtype=object),
        brand=brand_codes.astype(np.int32),
        brands=np.asarray(brands, dtype=object),
        order=order,
        session=_sessions(ev.column("session_id"), user, ts)[order],
    )


def _sessions(column: pa.ChunkedArray, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """A session code per event (file order): its ``session_id``, or where that is null,
    the shopper's UTC day (one visit a day)."""
    sid = pd.Series(column.to_pandas(), dtype=object)
    missing = sid.isna().to_numpy()
    if missing.any():
        day = np.floor(ts / DAY).astype(np.int64)
        own = "\x00" + pd.Series(user, dtype=str) + "@" + pd.Series(day, dtype=str)
        sid = sid.where(~missing, own)  # "\x00...": never equal to a real session id
    codes, _ = pd.factorize(sid)
    return codes.astype(np.int64)


def session_codes(tl: Timeline, selected: np.ndarray | slice) -> np.ndarray:
    """The session code of the events ``selected``: the loaded ``session``, or without
    one, the shopper's UTC day."""
    if tl.session is not None:
        return tl.session[selected]
    day = np.floor(tl.ts[selected] / DAY).astype(np.int64)
    return tl.user[selected].astype(np.int64) * 1_000_000 + day


def category_medians(tl: Timeline, t: float) -> np.ndarray:
    """Median price per category over the items that exist at ``t`` (NaN where none do yet)."""
    exists = tl.items["created_s"].to_numpy() < t
    medians = pd.Series(tl.items["price"].to_numpy()[exists]).groupby(tl.category[exists]).median()
    return medians.reindex(range(len(tl.categories))).to_numpy()


def feature_times(tl: Timeline, as_of: float, history_days: int, every_days: float) -> np.ndarray:
    """The grid of times features are computed at: ``as_of`` and every ``every_days`` back
    ``history_days``, keeping only times after the first event."""
    steps = int(np.floor(history_days / every_days + 1e-9))
    times = as_of - np.arange(steps, -1, -1) * every_days * DAY
    first = tl.ts[0] if len(tl.ts) else as_of
    kept = times[times > first]
    return kept if len(kept) else np.array([as_of])
