"""Recommendations for a batch of requests in as few bundle calls as possible.

Requests are grouped by model version and by what a bundle call fixes for all its users
(``k``, ``explain``, ``category``, whether user features come with it); inside a group a
shopper appears once per call. Each group is one :meth:`Recommender.recommend` call, whose
rows are handed back to each request by its user id. A shopper's list does not depend on
who else is in the call (every feature is per shopper or per item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import pandas as pd

from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest


@dataclass(frozen=True)
class Ask:
    rec: Recommender
    request: RecommendRequest  # one user


V = TypeVar("V")


def _first(values: Sequence[V] | None) -> V | None:
    return None if values is None else values[0]


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def recommend_batch(asks: Sequence[Ask]) -> list[pd.DataFrame | BaseException]:
    out: list[pd.DataFrame | BaseException | None] = [None] * len(asks)
    pending = list(range(len(asks)))
    while pending:
        groups: dict[tuple[object, ...], list[int]] = {}
        later = []
        for i in pending:
            r = asks[i].request
            key = (id(asks[i].rec), r.k, r.explain, r.category, r.store_users is not None)
            members = groups.setdefault(key, [])
            if any(asks[j].request.user_ids[0] == r.user_ids[0] for j in members):
                later.append(i)  # the same shopper twice: the next call
            else:
                members.append(i)
        for members in groups.values():
            first = asks[members[0]].request
            reqs = [asks[i].request for i in members]
            combined = RecommendRequest(
                user_ids=[r.user_ids[0] for r in reqs],
                k=first.k,
                explain=first.explain,
                category=first.category,
                age=[_nan(_first(r.age)) for r in reqs],
                gender=[_first(r.gender) for r in reqs],
                region=[_first(r.region) for r in reqs],
                recent_items=[list(_first(r.recent_items) or []) for r in reqs],
                exclude=[list(_first(r.exclude) or []) for r in reqs],
                store_users=[_first(r.store_users) for r in reqs]
                if first.store_users is not None
                else None,
            )
            try:
                frame = asks[members[0]].rec.recommend(combined)
            except Exception as exc:
                for i in members:
                    out[i] = exc
                continue
            by_user = {u: g for u, g in frame.groupby("user_id", sort=False)}
            for i in members:
                user = asks[i].request.user_ids[0]
                out[i] = by_user.get(user, frame.iloc[0:0]).reset_index(drop=True)
        pending = later
    return [o if o is not None else RuntimeError("no answer") for o in out]
