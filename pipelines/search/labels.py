"""Search labels from a snapshot's judgments: per query, item row -> integer grade.

``label = round(relevance - lowest relevance in the judgments)``; the evaluation's gain
is ``2^label - 1`` (for CrowdFlower's median relevance 1-4: ``2^(r-1) - 1``). Judgments
of items not in the catalog are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.data.snapshot import Snapshot
from pipelines.errors import ContractError
from pipelines.search.engine import SearchIndex


@dataclass
class Judged:
    queries: list[str]
    labels: list[dict[int, int]]
    truth: pd.DataFrame  # user_id (= query), item_id, relevance (= gain)


def judged(snap: Snapshot, index: SearchIndex) -> Judged:
    """The snapshot's judgments as per-query labels over ``index``'s item rows."""
    if not snap.has("judgments") or not snap.rows("judgments"):
        raise ContractError(str(snap.path), "the snapshot has no judgments to benchmark search on")
    j = snap.read("judgments").to_pandas()
    row = pd.Series(np.arange(len(index.item_ids)), index=index.item_ids)
    j = j[j["item_id"].isin(row.index)]
    low = float(j["relevance"].min())
    j = j.assign(
        row=row[j["item_id"]].to_numpy(), label=np.floor(j["relevance"] - low + 0.5).astype(int)
    )
    queries, labels = [], []
    for q, g in j.groupby("query", sort=True):
        queries.append(str(q))
        labels.append(dict(zip(g["row"].astype(int), g["label"].astype(int), strict=True)))
    truth = pd.DataFrame(
        {"user_id": j["query"], "item_id": j["item_id"], "relevance": 2.0 ** j["label"] - 1.0}
    )
    return Judged(queries, labels, truth)


def held_out(query: str, share: float) -> bool:
    """Whether a judged query belongs to the evaluation share: the first 32 bits of the
    sha256 of its text (trimmed, case-folded), as a fraction, fall below ``share``. The
    rule depends on the text alone, so every snapshot and every model holds out the same
    queries, and a champion trained on an earlier snapshot never saw the ones it is
    scored on."""
    digest = hashlib.sha256(query.strip().casefold().encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def split_judged(data: Judged, share: float) -> tuple[Judged, Judged]:
    """(training queries, evaluation queries) of ``data`` by :func:`held_out`."""
    test = [held_out(q, share) for q in data.queries]

    def part(keep: bool) -> Judged:
        picked = [i for i, t in enumerate(test) if t == keep]
        names = {data.queries[i] for i in picked}
        return Judged(
            [data.queries[i] for i in picked],
            [data.labels[i] for i in picked],
            data.truth[data.truth["user_id"].isin(names)].reset_index(drop=True),
        )

    return part(False), part(True)


GRADE_OF_EVENT = {"search_click": 1, "add_to_cart": 2, "purchase": 3}


@dataclass
class Logged:
    """Queries of the log with their clicks, as training or test rows."""

    texts: list[str]
    users: list[str | None]
    ts: np.ndarray  # epoch seconds
    labels: list[dict[int, int]]  # item row -> grade (click 1, add to cart 2, purchase 3)
    unexamined: list[set[int]]  # shown below the last click: no label either way

    def __len__(self) -> int:
        return len(self.texts)

    def truth(self) -> pd.DataFrame:
        """user_id = the query's position in the log, item_id = the item row, relevance = gain."""
        rows = [
            (str(q), int(r), 2.0**g - 1.0)
            for q, lab in enumerate(self.labels)
            for r, g in lab.items()
            if g > 0
        ]
        return pd.DataFrame(rows, columns=["user_id", "item_id", "relevance"])


def logged(
    snap: Snapshot, index: SearchIndex, *, start: float = -np.inf, end: float = np.inf
) -> Logged:
    """The log's queries in ``[start, end)`` that got at least one click, with graded
    labels: a click is 1, the clicked item added to the cart with the query's id 2, bought
    3. Position bias: a shopper rarely looks below their last click, so shown items below
    it are left unlabelled (neither relevant nor not) instead of counted as rejected —
    the "skip-above" reading of clicks (Joachims 2002); shown items above the last click
    and not clicked are label 0 like every other candidate."""
    if not snap.rows("queries"):
        return Logged([], [], np.zeros(0), [], [])
    q = snap.read("queries").to_pandas()
    ts = ((q["ts"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(np.float64)
    keep = (ts >= start) & (ts < end)
    q, ts = q[keep].reset_index(drop=True), ts[keep]
    row = pd.Series(np.arange(len(index.item_ids)), index=index.item_ids)
    grades: dict[tuple[str, str], int] = {}
    if snap.rows("events"):
        ev = snap.read("events", columns=["query_id", "item_id", "event_type"]).to_pandas()
        ev = ev[ev["query_id"].notna() & ev["event_type"].isin(list(GRADE_OF_EVENT))]
        g = ev.assign(grade=ev["event_type"].map(GRADE_OF_EVENT)).groupby(["query_id", "item_id"])
        grades = {k: int(v) for k, v in g["grade"].max().items()}
    out = Logged([], [], np.zeros(0), [], [])
    times = []
    for i, rec in enumerate(q.itertuples(index=False)):
        clicked = [
            c
            for c in (rec.clicked_item_ids if rec.clicked_item_ids is not None else [])
            if c in row.index
        ]
        if not clicked:
            continue
        labels = {int(row[c]): max(1, grades.get((rec.query_id, c), 1)) for c in clicked}
        shown = list(rec.shown_item_ids) if getattr(rec, "shown_item_ids", None) is not None else []
        last = max((p for p, s in enumerate(shown) if s in set(clicked)), default=len(shown))
        below = {int(row[s]) for s in shown[last + 1 :] if s in row.index} - set(labels)
        out.texts.append(str(rec.text))
        user = rec.user_id if isinstance(rec.user_id, str) and rec.user_id else None
        out.users.append(user)
        out.labels.append(labels)
        out.unexamined.append(below)
        times.append(ts[i])
    out.ts = np.asarray(times, dtype=np.float64)
    return out
