"""Ranker labels and rows: each candidate graded by the user's strongest next interaction.

:class:`Labels` holds the grade of every (user, item) pair in a label window (purchase 3 >
add_to_cart 2 > view or search_click 1 > none 0, configurable); :func:`ranker_rows` asks
the fitted sources for candidates, computes their features (:mod:`.rows`) and labels
them, keeping every positive and a sample of the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.data.contract import EVENT_TYPES
from pipelines.data.timeline import Timeline

if TYPE_CHECKING:
    from pipelines.recommender.bundle import Recommender


@dataclass
class Labels:
    """Each (user, item)'s grade from the label events, as sorted keys user * n_items + item."""

    keys: np.ndarray
    grades: np.ndarray
    n_items: int

    @classmethod
    def from_events(
        cls, tl: Timeline, selected: np.ndarray | slice, grades: dict[str, int]
    ) -> Labels:
        grade_of = np.array([grades[t] for t in EVENT_TYPES], dtype=np.int8)
        key = tl.user[selected].astype(np.int64) * tl.n_items + tl.item[selected]
        g = grade_of[tl.etype[selected]]
        frame = pd.DataFrame({"k": key, "g": g}).groupby("k", sort=True)["g"].max()
        return cls(frame.index.to_numpy(np.int64), frame.to_numpy(np.int8), tl.n_items)

    def users(self) -> np.ndarray:
        """User codes with at least one graded event."""
        return np.unique(self.keys[self.grades > 0] // self.n_items)

    def of(self, user_codes: np.ndarray, items: np.ndarray) -> np.ndarray:
        key = user_codes.astype(np.int64) * self.n_items + items
        at = np.clip(np.searchsorted(self.keys, key), 0, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(len(key), dtype=np.int8)
        return np.where(self.keys[at] == key, self.grades[at], 0).astype(np.int8)

    def truth(
        self, user_ids: np.ndarray, item_ids: np.ndarray, users: np.ndarray, *, graded: bool = False
    ) -> pd.DataFrame:
        """The truth of ``users`` for the metric functions: every graded item, binary or
        with its grade as ``relevance``."""
        sel = np.isin(self.keys // self.n_items, users) & (self.grades > 0)
        k = self.keys[sel]
        out = pd.DataFrame(
            {"user_id": user_ids[k // self.n_items], "item_id": item_ids[k % self.n_items]}
        )
        if graded:
            out["relevance"] = self.grades[sel].astype(float)
        return out


@dataclass
class RankerData:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per user, in order
    users: np.ndarray  # user code per group
    source_lists: pd.DataFrame  # user_id, rank, item_id, source: each source's top list
    candidate_recall: float  # share of label positives that made it into the candidates


def ranker_rows(
    rec: Recommender,
    users: np.ndarray,
    labels: Labels,
    batch_users: int,
    eval_at: int,
    progress: Callable[[int], None] | None = None,
    *,
    negatives: int | None = None,
    seed: int = 0,
) -> RankerData:
    """Candidates, features and labels for ``users`` (codes); users without a positive
    candidate are left out (they carry no ranking signal). With ``negatives``, each user
    keeps every positive candidate and at most that many of the others, at random."""
    rng = np.random.default_rng(seed)
    xs, ys, groups, kept, lists = [], [], [], [], []
    found = positives = 0
    user_ids = rec.ctx.user_ids
    for lo in range(0, len(users), batch_users):
        codes = users[lo : lo + batch_users]
        batch = rec.ctx.batch(user_ids[codes])
        cands, x = rec.rows_for(batch)
        y = labels.of(codes[cands.pos], cands.item)
        per_user_pos = np.bincount(cands.pos[y > 0], minlength=len(codes))
        found += int((y > 0).sum())
        positives += int(np.isin(labels.keys[labels.grades > 0] // labels.n_items, codes).sum())
        keep_user = per_user_pos > 0
        keep = keep_user[cands.pos]
        if negatives is not None:  # every positive, and a random sample of the rest
            noise = rng.random(len(y))
            neg = y == 0
            order = np.lexsort(
                (noise, ~neg, cands.pos)
            )  # per user: negatives in random order first
            first_of_user = np.searchsorted(cands.pos[order], cands.pos[order], side="left")
            rank = np.empty(len(y), dtype=np.int64)
            rank[order] = np.arange(len(y)) - first_of_user
            keep &= ~neg | (rank < negatives)
        xs.append(x[keep])
        ys.append(y[keep])
        groups.append(np.bincount(cands.pos[keep], minlength=len(codes))[keep_user])
        kept.append(codes[keep_user])
        for s, name in enumerate(rec.sources):
            r = cands.ranks[:, s]
            top = np.isfinite(r) & (r <= eval_at)
            lists.append(
                pd.DataFrame(
                    {
                        "user_id": user_ids[codes[cands.pos[top]]],
                        "rank": r[top].astype(int),
                        "item_id": rec.ctx.item_ids[cands.item[top]],
                        "source": name,
                    }
                )
            )
        if progress is not None:
            progress(min(lo + batch_users, len(users)))
    return RankerData(
        x=np.vstack(xs) if xs else np.empty((0, len(rec.feature_names)), np.float32),
        y=np.concatenate(ys) if ys else np.empty(0, np.int8),
        groups=np.concatenate(groups) if groups else np.empty(0, np.int64),
        users=np.concatenate(kept) if kept else np.empty(0, np.int64),
        source_lists=pd.concat(lists, ignore_index=True) if lists else pd.DataFrame(),
        candidate_recall=found / max(positives, 1),
    )
