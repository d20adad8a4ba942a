"""Point-in-time ranker rows from the query log.

A logged query at time t is scored as the search model would have scored it then: the
shopper's interest tags (:mod:`pipelines.search.personal`), each item's popularity and
conversion, and the category intent all come from events and queries strictly before
the start of t's UTC day. :class:`AsOf` advances all of them day by day, so a training
run costs about one pass over the events and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from pipelines.data.timeline import DAY, PURCHASE, Timeline
from pipelines.features.config import FeatureConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.labels import Logged
from pipelines.search.personal import ItemTags, Profiles, sweep
from pipelines.search.query import CategoryIntent
from pipelines.search.ranker import RowBuilder, Rows

log = logging.getLogger(__name__)
VIEW = 0  # EVENT_TYPES order: view, add_to_cart, purchase, search_click


def query_log(
    index: SearchIndex, queries: pd.DataFrame
) -> tuple[np.ndarray, list[str], list[list[int]]]:
    """(ts seconds ascending, texts, clicked category codes) of every logged query."""
    if queries.empty:
        return np.zeros(0), [], []
    ts = ((queries["ts"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(
        np.float64
    )
    order = np.argsort(ts, kind="stable")
    code = pd.Series(index.category_code, index=index.item_ids)
    cats = [
        [int(code[i]) for i in ids if i in code.index] if ids is not None else []
        for ids in queries["clicked_item_ids"].to_numpy()[order]
    ]
    return ts[order], list(queries["text"].astype(str).to_numpy()[order]), cats


def item_counts(tl: Timeline, t: float, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Events per item and purchases per view, over events before ``t``."""
    end = tl.before(t)
    item, et = tl.item[:end], tl.etype[:end]
    events = np.bincount(item, minlength=n_items).astype(np.float64)
    views = np.bincount(item[et == VIEW], minlength=n_items).astype(np.float64)
    buys = np.bincount(item[et == PURCHASE], minlength=n_items).astype(np.float64)
    return events, buys / np.maximum(views, 1.0)


class AsOf:
    """The index's popularity, conversion and intent, and the shoppers' profiles, at
    ascending times."""

    def __init__(
        self, index: SearchIndex, tl: Timeline, queries: pd.DataFrame, fcfg: FeatureConfig
    ) -> None:
        if not np.array_equal(tl.items["item_id"].to_numpy(), index.item_ids):
            raise ValueError("the index and the timeline list the items in different orders")
        self.index, self.tl, self.fcfg = index, tl, fcfg
        self.q_ts, self.q_text, self.q_cats = query_log(index, queries)
        self.tags = ItemTags.of(tl, float(tl.ts[0]) if len(tl.ts) else 0.0)  # codes only

    def days(self, times: np.ndarray) -> Iterator[tuple[float, SearchIndex, Profiles, ItemTags]]:
        """For each distinct day start of ``times`` (ascending): the index, the profiles
        and the items' price gaps (category medians of the items existing then) as of
        that instant."""
        starts = np.unique(np.floor(np.asarray(times) / DAY) * DAY)
        intent = CategoryIntent(self.index.intent.categories, {})
        done = 0
        profiles = sweep(self.tl, starts, self.fcfg, self.tags, np.asarray(self.index.vectors))
        for t, prof in profiles:
            upto = int(np.searchsorted(self.q_ts, t, side="left"))
            intent.add(self.q_text[done:upto], self.q_cats[done:upto], self.index.analyzer)
            done = upto
            pop, conv = item_counts(self.tl, t, len(self.index.item_ids))
            yield t, self.index.with_state(intent.copy(), pop, conv), prof, ItemTags.of(self.tl, t)


def rows(asof: AsOf, data: Logged, *, personal: bool = True) -> Rows:
    """Ranker rows of the logged queries, each scored as of the start of its day."""
    b = RowBuilder()
    day = np.floor(data.ts / DAY) * DAY
    for t, idx, prof, tags in asof.days(data.ts):
        for i in np.flatnonzero(day == t):
            c = idx.candidates(data.texts[i])
            p = prof.features(data.users[i], c.items, tags) if personal else None
            b.add(idx, c, data.labels[i], p, data.unexamined[i])
    return b.rows()
