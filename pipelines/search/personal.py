"""The shopper's interest tags for search: time-decayed affinity to categories and brands,
and the price band, as of a time — the founding design's "weight adjustment by
interest tags".

The weights are the user_profile feature view's (:func:`pipelines.features.user_profile.advance`:
every event weighted by its type and halved every ``half_life_days``), so search and
recommendations read the same interests. For training, profiles are taken at the start
of each UTC day that has queries and hold only events strictly before it: a query's
personal features never see its own or any later event. A served model keeps the
profiles at the snapshot's end.

Per (shopper, item) the re-ranker reads:

- ``user_category_share``: the shopper's weight on the item's category ÷ their total;
- ``user_top_category_share``: the same for the item's top-level category;
- ``user_brand_share``: the same for the item's brand (0 for an unbranded item);
- ``price_vs_user``: ``log(category median / price)`` of the item minus the shopper's mean
  of that over their purchases (how much cheaper or dearer than they usually buy);
- ``user_events``: ``log(1 + events)`` before the time;
- ``user_taste_cosine``: the cosine between the item's text embedding and the shopper's
  taste — the same decayed, event-weighted sum of the embeddings of the items they
  touched (style words, brands and nouns of what they like, beyond the category).

An anonymous or unknown shopper gets missing values (NaN), which LightGBM routes as missing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.candidates.base import blank_rows
from pipelines.data.contract import EVENT_TYPES
from pipelines.data.timeline import DAY, Timeline, category_medians
from pipelines.features.config import FeatureConfig
from pipelines.features.user_profile import UserState, advance, new_state

PERSONAL = (
    "user_category_share", "user_top_category_share", "user_brand_share", "price_vs_user",
    "user_events", "user_taste_cosine",
)  # fmt: skip


@dataclass
class ItemTags:
    """Per index row: category, top-level category and brand codes, and the price gap."""

    category: np.ndarray
    top: np.ndarray
    brand: np.ndarray
    gap: np.ndarray  # log(category median / price), NaN where unknown
    n_tops: int
    category_top: np.ndarray  # per category code: its top-level code

    @classmethod
    def of(cls, tl: Timeline, t: float) -> ItemTags:
        tops = pd.Series(tl.categories).astype(str).str.split("/").str[0]
        top_codes, top_names = pd.factorize(tops)
        price = tl.items["price"].to_numpy(dtype=np.float64)
        med = category_medians(tl, t)[tl.category]
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.log(med / price)
        return cls(
            tl.category.astype(np.int64),
            top_codes[tl.category].astype(np.int64),
            tl.brand.astype(np.int64),
            np.where(np.isfinite(gap), gap, np.nan),
            len(top_names),
            top_codes.astype(np.int64),
        )


@dataclass
class Profiles:
    """Every shopper's interest tags at one time (rows = users)."""

    user_row: dict[str, int]
    category: sp.csr_matrix
    top: sp.csr_matrix
    brand: sp.csr_matrix
    gap_mean: np.ndarray
    events: np.ndarray
    taste: np.ndarray  # (users, dim), rows L2-normalised (zeros without history)
    vectors: np.ndarray  # (items, dim): the index's item embeddings

    @classmethod
    def of_state(
        cls, state: UserState, tl: Timeline, tags: ItemTags, taste: np.ndarray, vectors: np.ndarray
    ) -> Profiles:
        cat = state.category_weight.tocsr()
        to_top = sp.csr_matrix(
            (np.ones(len(tl.categories)), (np.arange(len(tl.categories)), tags.category_top)),
            shape=(len(tl.categories), tags.n_tops),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            gap_mean = state.log_price_gap_sum / state.purchases
        return cls(
            {str(u): i for i, u in enumerate(tl.users["user_id"])},
            cat,
            (cat @ to_top).tocsr(),
            state.brand_weight.tocsr(),
            np.where(state.purchases > 0, gap_mean, np.nan),
            state.total.astype(np.float64),
            (taste / np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)).astype(
                np.float32
            ),
            vectors,
        )

    def features(self, user: str | None, rows: np.ndarray, tags: ItemTags) -> np.ndarray:
        """(len(rows), len(PERSONAL)); NaN for an anonymous or unknown shopper."""
        out = np.full((len(rows), len(PERSONAL)), np.nan, dtype=np.float32)
        u = self.user_row.get(user) if user is not None else None
        if u is None:
            return out
        for j, (m, codes) in enumerate(
            ((self.category, tags.category), (self.top, tags.top), (self.brand, tags.brand))
        ):
            row = m.getrow(u)
            total = float(row.sum())
            dense = np.zeros(m.shape[1])
            dense[row.indices] = row.data
            c = codes[rows]
            share = np.where(c >= 0, dense[np.maximum(c, 0)], 0.0) / max(total, 1e-12)
            out[:, j] = share if total > 0 else 0.0
        out[:, 3] = tags.gap[rows] - self.gap_mean[u]
        out[:, 4] = np.log1p(self.events[u])
        out[:, 5] = np.asarray(self.vectors[rows]) @ self.taste[u]
        return out

    def erase_users(self, user_ids: Sequence[str]) -> int:
        """Blank these shoppers' rows (docs/privacy.md): a random tombstone for the id,
        empty tags, no price gap, no events, a zero taste vector; others unchanged.
        Returns how many rows were blanked."""
        rows = sorted({self.user_row[u] for u in user_ids if u in self.user_row})
        if not rows:
            return 0
        at = np.asarray(rows)
        for name in ("category", "top", "brand"):
            setattr(self, name, blank_rows(getattr(self, name), at))
        self.gap_mean[at] = np.nan
        self.events[at] = 0
        self.taste[at] = 0
        by_row = {r: u for u, r in self.user_row.items()}
        for r in rows:
            del self.user_row[by_row[r]]
            self.user_row[f"erased-{secrets.token_hex(12)}"] = r
        return len(rows)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("category", "top", "brand"):
            sp.save_npz(folder / f"{name}.npz", getattr(self, name))
        users = sorted(self.user_row, key=self.user_row.__getitem__)
        pd.DataFrame(
            {"user_id": users, "gap_mean": self.gap_mean, "events": self.events}
        ).to_parquet(folder / "users.parquet", index=False)
        np.save(folder / "taste.npy", self.taste, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, vectors: np.ndarray) -> Profiles:
        users = pd.read_parquet(folder / "users.parquet")
        cat, top, brand = (
            sp.load_npz(folder / f"{n}.npz").tocsr() for n in ("category", "top", "brand")
        )
        return cls(
            {str(u): i for i, u in enumerate(users["user_id"])},
            cat,
            top,
            brand,
            users["gap_mean"].to_numpy(dtype=np.float64),
            users["events"].to_numpy(dtype=np.float64),
            np.load(folder / "taste.npy", allow_pickle=False),
            vectors,
        )


def sweep(
    tl: Timeline, times: np.ndarray, cfg: FeatureConfig, tags: ItemTags, vectors: np.ndarray
) -> Iterator[tuple[float, Profiles]]:
    """(t, the profiles at t) for the ascending ``times``: events strictly before t."""
    state = new_state(tl)
    taste = np.zeros((tl.n_users, vectors.shape[1]), dtype=np.float64)
    h = cfg.half_life_days * DAY
    kinds = np.array([cfg.event_weights[name] for name in EVENT_TYPES])
    for t in times:
        t = float(t)
        new = slice(state.done, tl.before(t))
        decay = 0.0 if not np.isfinite(state.t) else 2.0 ** (-(t - state.t) / h)
        w = kinds[tl.etype[new]] * 2.0 ** (-(t - tl.ts[new]) / h)
        touch = sp.csr_matrix((w, (tl.user[new], tl.item[new])), shape=(tl.n_users, tl.n_items))
        taste = taste * decay + np.asarray(touch @ vectors)
        advance(state, tl, t, cfg, category_medians(tl, t))
        yield t, Profiles.of_state(state, tl, tags, taste, vectors)


def save_tags(tags: ItemTags, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "item_tags.npz", category=tags.category, top=tags.top, brand=tags.brand,
             gap=tags.gap, n_tops=np.array([tags.n_tops]), category_top=tags.category_top)  # fmt: skip


def load_tags(folder: Path) -> ItemTags:
    z = np.load(folder / "item_tags.npz", allow_pickle=False)
    return ItemTags(
        z["category"], z["top"], z["brand"], z["gap"], int(z["n_tops"][0]), z["category_top"]
    )
