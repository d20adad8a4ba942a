"""Shopper segments: KMeans on a profile vector, k chosen by silhouette.

The model is fitted once, on profiles as of the *first* grid time of a build, and then
assigns segments at every later grid time. A model fitted on later data would leak the
future into earlier feature rows. Shoppers without any event yet get segment -1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from pipelines.data.timeline import DAY, Timeline
from pipelines.features.config import WINDOWS_DAYS, FeatureConfig
from pipelines.features.user_profile import TYPE_NAMES, UserState, activity_counts
from pipelines.io import write_json

MAX_CATEGORY_DIMS = 50
log = logging.getLogger(__name__)


@dataclass
class SegmentModel:
    scaler: StandardScaler
    kmeans: MiniBatchKMeans | None  # None when too few shoppers to cluster
    category_level: int  # path depth used for the category shares; 0 = none
    categories: list[str]
    silhouette: dict[int, float]
    fitted_at: float
    age_mean: float
    note: str = ""

    @property
    def k(self) -> int:
        return 0 if self.kmeans is None else int(self.kmeans.n_clusters)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, folder / "segments.joblib")
        summary = {**describe(self), "fitted_at": self.fitted_at}
        write_json(folder / "segments.json", summary)


def _category_level(categories: list[str]) -> int:
    """The deepest category path level with at most MAX_CATEGORY_DIMS values (0 = none)."""
    best = 0
    depth = max((len(c.split("/")) for c in categories), default=0)
    for level in range(1, depth + 1):
        names = {"/".join(c.split("/")[:level]) for c in categories}
        if 1 < len(names) <= MAX_CATEGORY_DIMS:
            best = level
    return best


def profile_vectors(
    tl: Timeline,
    state: UserState,
    t: float,
    cfg: FeatureConfig,
    model_cats: list[str],
    level: int,
    age_mean: float,
) -> np.ndarray:
    """The vector segments are computed from (docs/features.md lists its parts)."""
    counts = activity_counts(tl, t, cfg)
    longest = max(WINDOWS_DAYS)
    parts: list[np.ndarray] = [
        np.log1p(counts[f"{name}_{longest}d"]).astype(np.float64) for name in TYPE_NAMES
    ]
    parts.append(np.log1p(state.total))
    recency = (t - state.last_ts) / DAY
    parts.append(np.log1p(np.nan_to_num(recency, nan=365.0)))
    sensitivity = np.where(
        state.purchases > 0, state.log_price_gap_sum / np.maximum(state.purchases, 1), 0.0
    )
    parts.append(sensitivity)
    age = tl.users["age"].to_numpy(dtype=np.float64, na_value=np.nan)
    parts.append(np.nan_to_num(age, nan=age_mean))
    gender = tl.users["gender"].astype("string").fillna("").str.upper().to_numpy()
    parts.append((gender == "F").astype(np.float64))
    parts.append((gender == "M").astype(np.float64))
    if level:
        groups = np.array(
            ["/".join(str(c).split("/")[:level]) for c in tl.categories], dtype=object
        )
        index = {name: j for j, name in enumerate(model_cats)}
        mapping = np.array([index.get(g, -1) for g in groups])
        weights = state.category_weight.tocoo()
        dense = np.zeros((tl.n_users, len(model_cats)))
        ok = mapping[weights.col] >= 0
        np.add.at(dense, (weights.row[ok], mapping[weights.col[ok]]), weights.data[ok])
        dense /= np.maximum(dense.sum(axis=1, keepdims=True), 1e-12)
        parts.extend(dense.T)
    return np.column_stack(parts)


def fit_segments(tl: Timeline, state: UserState, t: float, cfg: FeatureConfig) -> SegmentModel:
    """Fit the scaler and KMeans on shoppers with history at ``t``; k by silhouette on a sample.

    Only what is known at ``t`` shapes the model: the categories of items existing then,
    the ages of shoppers signed up by then.
    """
    existing = tl.items["created_s"].to_numpy() < t
    known = sorted({str(c) for c in tl.items["category"].to_numpy()[existing]})
    level = _category_level(known)
    cats = sorted({"/".join(c.split("/")[:level]) for c in known}) if level else []
    signed_up = tl.users["signup_s"].to_numpy() < t
    ages = tl.users["age"].to_numpy(dtype=np.float64, na_value=np.nan)[signed_up]
    age_mean = float(np.nanmean(ages)) if np.isfinite(ages).any() else 0.0
    x = profile_vectors(tl, state, t, cfg, cats, level, age_mean)[state.total > 0]
    scaler = StandardScaler().fit(x) if len(x) else StandardScaler()
    if len(x) < cfg.segment_k_min * 10:
        note = (
            f"no segments: {len(x)} shopper(s) with history at the first feature time, "
            f"{cfg.segment_k_min * 10} needed (use a later --as-of or fewer --history-days)"
        )
        log.warning(note)
        return SegmentModel(scaler, None, level, cats, {}, t, age_mean, note)
    z = scaler.transform(x)
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(len(z), size=min(cfg.segment_sample, len(z)), replace=False)
    scores: dict[int, float] = {}
    models: dict[int, MiniBatchKMeans] = {}
    for k in range(cfg.segment_k_min, min(cfg.segment_k_max, len(z) - 1) + 1):
        km = MiniBatchKMeans(n_clusters=k, random_state=cfg.seed, n_init=3, batch_size=4096).fit(z)
        labels = km.predict(z[sample])
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(z[sample], labels))
        models[k] = km
    best = max(scores, key=lambda k: scores[k]) if scores else None
    return SegmentModel(
        scaler, models.get(best) if best else None, level, cats, scores, t, age_mean
    )


def assign_segments(
    model: SegmentModel, tl: Timeline, state: UserState, t: float, cfg: FeatureConfig
) -> np.ndarray:
    seg = np.full(tl.n_users, -1, dtype=np.int64)
    has = state.total > 0
    if model.kmeans is None or not has.any():
        return seg
    x = profile_vectors(tl, state, t, cfg, model.categories, model.category_level, model.age_mean)[
        has
    ]
    seg[has] = model.kmeans.predict(model.scaler.transform(x))
    return seg


def describe(model: SegmentModel) -> dict[str, Any]:
    return {
        "k": model.k,
        "silhouette": model.silhouette,
        "category_level": model.category_level,
        "note": model.note,
    }
