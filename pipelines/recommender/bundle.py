"""The recommender bundle: candidate generators + LightGBM re-ranker + what they answer from.

A :class:`Recommender` holds, as of one time ``now``: the interaction history, the side
information (content vectors, demographics, segments), the feature-store values, every
fitted generator and the ranker. ``recommend`` answers for any user id: known users from
their history, new users folded in from ``recent_items`` when given, users with nothing
from their demographics (cold start), never an error. ``save``/``load`` write and read
one folder (the MLflow pyfunc model carries it as an artifact).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feature_store.services import RECOMMENDER_RANKER
from pipelines.candidates import (
    GENERATORS,
    CandidateConfig,
    Context,
    Generator,
    History,
    SideInfo,
    UserBatch,
)
from pipelines.candidates.base import blank_rows, index_of, item_rows
from pipelines.candidates.repeats import Repeats, top_categories
from pipelines.data.timeline import Timeline
from pipelines.errors import ShopMLError
from pipelines.features.item_content import documents, tfidf
from pipelines.io import write_json
from pipelines.ranking.lambdamart import contributions, predict
from pipelines.recommender.reasons import reasons
from pipelines.recommender.rows import (
    STORE_ITEM_FEATURES,
    STORE_USER_FEATURES,
    Candidates,
    ItemSide,
    StoreFeatures,
    feature_names,
    features,
    union,
)
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.recommender.predict import RecommendRequest

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: purchase statistics and the repeat policy (repeats/)


def _user_ids(request: RecommendRequest) -> np.ndarray:
    return np.asarray([str(u) for u in request.user_ids], dtype=object)


def item_side(tl: Timeline) -> ItemSide:
    top_codes, top_names = top_categories(tl)
    return ItemSide(
        category=tl.category.astype(np.int64),
        top_category=top_codes,
        brand=tl.brand.astype(np.int64),
        price=tl.items["price"].to_numpy(dtype=np.float32),
        created=tl.items["created_s"].to_numpy(dtype=np.float64),
        categories=np.asarray(tl.categories, dtype=str),
        top_categories=np.asarray(top_names, dtype=str),
        brands=np.asarray(tl.brands, dtype=str),
        titles=tl.items["title"].astype(str).to_numpy(dtype=object),
        image_urls=_nullable(tl.items["image_url"])
        if "image_url" in tl.items.columns
        else np.array([], dtype=object),
    )


def _vectors(column: pd.Series, n: int) -> np.ndarray | None:
    """A column of float lists (None/empty where missing) as a dense matrix, zeros where
    missing; None when no row has a vector."""
    lengths = column.map(lambda v: len(v) if isinstance(v, (list, np.ndarray)) else 0).to_numpy()
    dim = int(lengths.max(initial=0))
    if dim == 0:
        return None
    out = np.zeros((n, dim), dtype=np.float32)
    full = np.flatnonzero(lengths == dim)
    if len(full):
        out[full] = np.vstack(list(column.to_numpy()[full])).astype(np.float32)
    return out


def _nullable(values: pd.Series) -> np.ndarray:
    """Object array with None where ``values`` is missing."""
    out = values.astype(object).to_numpy(copy=True)
    out[values.isna().to_numpy()] = None
    return out


@dataclass
class FeatureSource:
    """Where side information and feature-store values come from.

    With ``settings`` (a feature build of the same snapshot), everything is read through
    the feature store, point in time: the rows at or before the history's time. Without,
    content vectors are fitted here from the catalog text of the items that exist at that
    time (TF-IDF + SVD, as item_content does) and there are no segments or store values:
    the mode of benchmarks that split events at random, where a time-gridded store does
    not apply.
    """

    settings: Settings | None = None
    text_dim: int = 32
    seed: int = 0

    def side(self, tl: Timeline, now: float) -> tuple[SideInfo, StoreFeatures | None]:
        users = tl.users
        age = pd.to_numeric(users["age"], errors="coerce").to_numpy(dtype=float)
        gender, region = _nullable(users["gender"]), _nullable(users["region"])
        segment = np.full(tl.n_users, -1, dtype=np.int64)
        if self.settings is None:
            exists = tl.items["created_s"].to_numpy() < now
            fit_on = exists if exists.sum() >= 2 else np.ones(tl.n_items, dtype=bool)
            text = tfidf(documents(tl), fit_on, self.text_dim, self.seed)
            text[~exists] = 0.0
            image = (
                _vectors(tl.items["image_embedding"], tl.n_items)
                if "image_embedding" in tl.items.columns
                else None
            )
            content = SideInfo.content_vectors(text, image)
            return SideInfo(content, age, gender, region, segment), None

        # Feast is imported only when training reads the store: loading a bundle to serve
        # it needs neither Feast nor its 4 s import (measured here).
        from pipelines.features.store import get_training_frame

        stamp = pd.Timestamp(now, unit="s", tz="UTC")
        # exactly the `recommender_ranker` service: the user view, then the item views
        service = RECOMMENDER_RANKER
        u = get_training_frame(
            pd.DataFrame({"user_id": users["user_id"].astype(str), "event_timestamp": stamp}),
            [f"user_profile:{n}" for n in service["user_profile"]],
            settings=self.settings,
        )
        seg = pd.to_numeric(u["user_profile__segment"], errors="coerce")
        segment = seg.fillna(-1).to_numpy(dtype=np.int64)
        user_values = u[[f"user_profile__{n}" for n in STORE_USER_FEATURES]]
        i = get_training_frame(
            pd.DataFrame({"item_id": tl.items["item_id"].astype(str), "event_timestamp": stamp}),
            [f"{view}:{n}" for view in ("item_stats", "item_content") for n in service[view]],
            settings=self.settings,
        )
        item_values = i[[f"item_stats__{n}" for n in STORE_ITEM_FEATURES]]
        text_vectors = _vectors(i["item_content__text_embedding"], tl.n_items)
        image_vectors = _vectors(i["item_content__image_embedding"], tl.n_items)
        store_content = (
            None if text_vectors is None else SideInfo.content_vectors(text_vectors, image_vectors)
        )
        store = StoreFeatures(
            users=user_values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32),
            items=item_values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32),
        )
        return SideInfo(store_content, age, gender, region, segment), store


def fit_generators(
    tl: Timeline,
    selected: np.ndarray | slice,
    now: float,
    cfg: CandidateConfig,
    source: FeatureSource,
) -> tuple[Context, StoreFeatures | None, dict[str, Generator]]:
    """Fit every generator on the ``selected`` events as of ``now``."""
    started = time.perf_counter()
    history = History.from_timeline(tl, selected, now, cfg)
    side, store = source.side(tl, now)
    ctx = Context(
        history=history,
        side=side,
        user_ids=tl.users["user_id"].astype(str).to_numpy(dtype=object),
        item_ids=tl.items["item_id"].astype(str).to_numpy(dtype=object),
    )
    log.info(
        "history: %s users x %s items, %s interactions (%.1f s)",
        f"{history.shape[0]:,}", f"{history.shape[1]:,}", f"{history.matrix.nnz:,}",
        time.perf_counter() - started,
    )  # fmt: skip
    gens: dict[str, Generator] = {}
    for name, cls in GENERATORS.items():
        gen = cls(cfg)
        gen.fit(ctx)
        gens[name] = gen
        log.info("fitted %s in %.1f s", name, gen.fit_seconds)
    return ctx, store, gens


@dataclass
class Recommender:
    ctx: Context
    items: ItemSide
    genders: np.ndarray
    store: StoreFeatures | None
    generators: dict[str, Generator]
    booster: Any = None  # lightgbm.Booster
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        return list(self.generators)

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.sources, self.store is not None)

    @property
    def cfg(self) -> CandidateConfig:
        return next(iter(self.generators.values())).cfg

    # --- candidates and features for a batch
    def rows_for(
        self,
        batch_users: UserBatch,
        per_source: dict[str, int] | None = None,
        excluded: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[Candidates, np.ndarray]:
        """The candidates of a batch (never a seen or ``excluded`` item, only ``allowed``
        ones: default the items that exist) and their feature rows."""
        cands = union(
            self.generators,
            batch_users,
            per_source or self.cfg.per_source,
            self.ctx.history.item_exists if allowed is None else allowed,
            excluded=excluded,
            repeat_allowed=self.ctx.history.repeat_allowed,
        )
        x = features(cands, batch_users, self.ctx, self.items, self.genders, self.store)
        return cands, x

    def recommend(
        self,
        request: RecommendRequest,
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """Top ``request.k`` items per user: user_id, rank, item_id, score[, reasons].
        ``progress(done)`` is called with the number of users answered so far."""
        if self.booster is None:
            raise ShopMLError("this recommender has no trained ranker")
        users = _user_ids(request)
        excluded = (
            None if request.exclude is None else item_rows(list(request.exclude), self.ctx.item_ids)
        )

        allowed = self.in_category(request.category)

        def one(lo: int) -> pd.DataFrame:
            sl = slice(lo, lo + batch_size)
            batch = self._batch(request, users, sl)
            cands, x = self.rows_for(
                batch, excluded=None if excluded is None else excluded[sl], allowed=allowed
            )
            history = np.diff(batch.rows.indptr) > 0  # events or recent items, per user
            return self._top(users[sl], cands, x, predict(self.booster, x), request, history)

        # Batches in parallel threads: the heavy parts (matrix products, partitions,
        # LightGBM) release the GIL.
        starts = range(0, len(users), batch_size)
        if len(starts) == 1:  # one batch (a served request): no pool, no thread limits to set
            frame = one(0)
            if progress is not None:
                progress(len(users))
            return frame
        frames = []
        workers = max(1, min(os.cpu_count() or 1, 4))
        with threadpool_limits(1, "blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            for done, frame in enumerate(pool.map(one, starts), start=1):
                frames.append(frame)
                if progress is not None:
                    progress(min(done * batch_size, len(users)))
        if not frames:
            return pd.DataFrame(
                columns=["user_id", "rank", "item_id", "score", "title", "category"]
            )
        return pd.concat(frames, ignore_index=True)

    def in_category(self, category: str | None) -> np.ndarray | None:
        """Existing items of ``category`` or a category below it (None: no filter)."""
        if not category:
            return None
        c = category.strip().lower().rstrip("/")
        names = np.char.lower(self.items.categories.astype(str))
        match = (names == c) | np.char.startswith(names, c + "/")
        return self.ctx.history.item_exists & match[self.items.category]

    def _batch(self, request: RecommendRequest, users: np.ndarray, sl: slice) -> UserBatch:
        """The users ``sl`` of ``request`` as a batch (recent items and demographics for
        the users the model does not know)."""

        def column(values: Sequence[Any] | None, dtype: Any) -> np.ndarray | None:
            return None if values is None else np.asarray(values, dtype=dtype)[sl]

        recent = request.recent_items
        batch = self.ctx.batch(
            users[sl],
            recent_items=None if recent is None else recent[sl],
            age=column(request.age, float),
            gender=column(request.gender, object),
            region=column(request.region, object),
        )
        if request.store_users is not None and self.store is not None:
            width = self.store.users.shape[1]
            batch.store_users = np.array(
                [
                    np.full(width, np.nan) if v is None else np.asarray(v, float)
                    for v in request.store_users[sl]
                ],
                dtype=np.float32,
            ).reshape(-1, width)
        return batch

    def source_lists(
        self, request: RecommendRequest, *, batch_size: int = 1_000
    ) -> dict[str, pd.DataFrame]:
        """Each candidate source's own top ``request.k`` (user_id, rank, item_id, score):
        what the source would show alone, under the same repeat policy and cold start
        (``request.exclude`` and ``explain`` do not apply). The baselines of evaluation
        and benchmarks."""
        users = _user_ids(request)
        out: dict[str, list[pd.DataFrame]] = {name: [] for name in self.generators}
        for lo in range(0, len(users), batch_size):
            sl = slice(lo, lo + batch_size)
            batch = self._batch(request, users, sl)
            for name, gen in self.generators.items():
                idx, best = gen.top(batch, request.k)
                r, c = np.nonzero(idx >= 0)
                out[name].append(
                    pd.DataFrame(
                        {
                            "user_id": users[sl][r],
                            "rank": c + 1,
                            "item_id": self.ctx.item_ids[idx[r, c]],
                            "score": best[r, c].astype(float),
                        }
                    )
                )
        return {name: pd.concat(parts, ignore_index=True) for name, parts in out.items() if parts}

    def _top(
        self,
        users: np.ndarray,
        cands: Candidates,
        x: np.ndarray,
        score: np.ndarray,
        request: RecommendRequest,
        history: np.ndarray,
    ) -> pd.DataFrame:
        k = request.k
        order = np.lexsort((-score, cands.pos))
        pos = cands.pos[order]
        rank = np.arange(len(order)) - np.searchsorted(pos, pos, side="left")
        keep = order[rank < k]
        out = pd.DataFrame(
            {
                "user_id": users[cands.pos[keep]],
                "rank": rank[rank < k] + 1,
                "item_id": self.ctx.item_ids[cands.item[keep]],
                "score": score[keep].astype(np.float64),
                "title": [self.items.title(int(i)) for i in cands.item[keep]],
                "category": self.items.categories[self.items.category[cands.item[keep]]],
            }
        )
        if request.explain and len(keep):
            contrib = contributions(self.booster, x[keep])
            names = self.feature_names
            bought = x[keep, names.index("buy_count")] > 0
            out["reasons"] = [
                "; ".join(reasons(c, names, int(i), self.items, has_history=bool(h), bought=b))
                for c, i, h, b in zip(
                    contrib, cands.item[keep], history[cands.pos[keep]], bought, strict=True
                )
            ]
        return out

    # --- erasure
    def erase_users(self, user_ids: Sequence[str]) -> int:
        """Blank these shoppers' rows (docs/privacy.md): their id becomes a random
        tombstone nobody can ask for, their history, repeat purchases, demographics, store
        features and user factors are emptied; the shapes, the item side and every other
        shopper's rows stay as they were, so the bundle loads and answers everyone else the
        same. Returns how many rows were blanked."""
        codes = index_of(list(user_ids), self.ctx.user_ids)
        rows = np.unique(codes[codes >= 0])
        if not len(rows):
            return 0
        h, side = self.ctx.history, self.ctx.side
        h.matrix = blank_rows(h.matrix, rows)
        h.last_seen = blank_rows(h.last_seen, rows)
        h.user_events[rows] = 0
        h.user_last[rows] = np.nan
        h.user_mean_ts[rows] = np.nan
        if h.repeats is not None:
            for name in ("buys", "last_bought", "mean_gap_days"):
                setattr(h.repeats, name, blank_rows(getattr(h.repeats, name), rows))
        side.age[rows] = np.nan
        side.gender[rows] = None
        side.region[rows] = None
        side.segment[rows] = -1
        if self.store is not None:
            self.store.users[rows] = np.nan
        for gen in self.generators.values():
            state = gen.state() if hasattr(gen, "state") else {}
            if "user_factors" in state:
                state["user_factors"][rows] = 0
        # a new array, never an in-place write: index_of caches a hash table over the
        # old one that borrows its strings
        ids = self.ctx.user_ids.copy()
        ids[rows] = [f"erased-{secrets.token_hex(12)}" for _ in rows]
        self.ctx.user_ids = ids
        return len(rows)

    # --- persistence
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        h, side = self.ctx.history, self.ctx.side
        sp.save_npz(folder / "history_matrix.npz", h.matrix)
        sp.save_npz(folder / "history_last_seen.npz", h.last_seen)
        if h.repeats is not None:
            h.repeats.save(folder / "repeats")
        arrays: dict[str, Any] = {
            "item_exists": h.item_exists,
            "trending": h.trending,
            "popularity": h.popularity,
            "user_events": h.user_events,
            "user_last": h.user_last,
            "user_mean_ts": h.user_mean_ts,
            "item_mean_ts": h.item_mean_ts,
            "age": side.age,
            "segment": side.segment,
            "genders": self.genders.astype(str),
            **{
                f"items_{k}": v
                for k, v in asdict(self.items).items()
                if k not in ("titles", "image_urls")
            },
        }
        if side.content is not None:
            arrays["content"] = side.content
        if self.store is not None:
            arrays["store_users"] = self.store.users
            arrays["store_items"] = self.store.items
        np.savez(folder / "arrays.npz", **arrays)
        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array(self.ctx.user_ids, pa.string()),
                    "gender": pa.array(side.gender, pa.string()),
                    "region": pa.array(side.region, pa.string()),
                }
            ),
            folder / "users.parquet",
        )
        titles = self.items.titles if len(self.items.titles) else [None] * len(self.ctx.item_ids)
        item_columns = {
            "item_id": pa.array(self.ctx.item_ids, pa.string()),
            "title": pa.array(list(titles), pa.string()),
        }
        if len(self.items.image_urls):
            item_columns["image_url"] = pa.array(list(self.items.image_urls), pa.string())
        pq.write_table(pa.table(item_columns), folder / "items.parquet")
        for gen in self.generators.values():
            gen.save(folder / "generators")
        if self.booster is not None:
            self.booster.save_model(str(folder / "ranker.txt"))
        meta = {
            "format_version": FORMAT_VERSION,
            "now": h.now,
            "sources": self.sources,
            "feature_names": self.feature_names,
            "config": self.config,
            "meta": self.meta,
        }
        write_json(folder / "recommender.json", meta)

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        import lightgbm as lgb

        path = folder / "recommender.json"
        if not path.is_file():
            raise ShopMLError(f"{folder} is not a ShopML recommender bundle (no recommender.json)")
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ShopMLError(
                f"{folder}: bundle format {meta.get('format_version')} is not {FORMAT_VERSION}"
            )
        with np.load(folder / "arrays.npz", allow_pickle=False) as data:
            a = {k: data[k] for k in data.files}
        users = pq.read_table(folder / "users.parquet").to_pandas()
        items = pq.read_table(folder / "items.parquet").to_pandas()
        history = History(
            matrix=sp.load_npz(folder / "history_matrix.npz").tocsr(),
            last_seen=sp.load_npz(folder / "history_last_seen.npz").tocsr(),
            now=float(meta["now"]),
            item_exists=a["item_exists"],
            trending=a["trending"],
            popularity=a["popularity"],
            user_events=a["user_events"],
            user_last=a["user_last"],
            user_mean_ts=a["user_mean_ts"],
            item_mean_ts=a["item_mean_ts"],
            repeats=Repeats.load(folder / "repeats") if (folder / "repeats").is_dir() else None,
        )
        side = SideInfo(
            content=a.get("content"),
            age=a["age"],
            gender=_nullable(users["gender"]),
            region=_nullable(users["region"]),
            segment=a["segment"],
        )
        ctx = Context(
            history=history,
            side=side,
            user_ids=users["user_id"].to_numpy(dtype=object),
            item_ids=items["item_id"].to_numpy(dtype=object),
        )
        item_fields = {k.removeprefix("items_"): v for k, v in a.items() if k.startswith("items_")}
        if "title" in items.columns:
            item_fields["titles"] = items["title"].to_numpy(dtype=object)
        if "image_url" in items.columns:
            item_fields["image_urls"] = _nullable(items["image_url"])
        gens = {name: GENERATORS[name].load(folder / "generators", ctx) for name in meta["sources"]}
        store = (
            StoreFeatures(users=a["store_users"], items=a["store_items"])
            if "store_users" in a
            else None
        )
        booster = (
            lgb.Booster(model_file=str(folder / "ranker.txt"))
            if (folder / "ranker.txt").is_file()
            else None
        )
        rec = cls(
            ctx=ctx,
            items=ItemSide(**item_fields),
            genders=a["genders"].astype(str),
            store=store,
            generators=gens,
            booster=booster,
            config=meta.get("config", {}),
            meta=meta.get("meta", {}),
        )
        if rec.feature_names != meta["feature_names"]:
            raise ShopMLError(
                f"{folder}: the saved feature list does not match this ShopML version"
            )
        return rec
