"""Scoring recommendation lists on a frozen evaluation set: every metric at every k,
overall and per slice, the simple baselines on the same rows, bootstrap intervals.

Baselines (docs/evaluation.md): ``popularity`` (the items most shoppers touched before the
window), ``buy-again + popularity`` (the items a shopper bought on two or more occasions,
most often first, then popularity) and the best single candidate source of the
challenger (its own top list). Every baseline skips the items a shopper touched that may
not be shown again (the set's repeat policy).

Slices (docs/evaluation.md): ``all``, ``new_users`` / ``returning_users``, each user
``segment=<s>``, ``cold_items`` and the most frequent categories ``category=<c>`` (at the
shallowest category-path level with more than one value, so a catalog under one root such
as MovieLens' "Movies/..." is sliced by genre). Item slices judge only their truth items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.errors import ShopMLError
from pipelines.evaluation.bootstrap import Interval, bootstrap_means
from pipelines.evaluation.evalset import EvalConfig, EvalSet
from pipelines.ranking.metrics import (
    METRICS,
    catalog_coverage,
    intra_list_diversity,
    novelty,
    per_user_ranked,
    positions,
)

ALL = "all"


@dataclass
class ModelScores:
    """One model's scores on one evaluation set."""

    label: str  # challenger | champion | popularity
    uri: str | None
    version: int | None
    train_until: str | None
    eval_set_hash: str
    slices: dict[str, pd.DataFrame]  # slice -> per-user table (columns "ndcg@10", ...)
    values: dict[str, dict[str, float]]  # slice -> metric -> mean (coverage only on "all")
    scores: np.ndarray  # the model's scores of its top-k items (empty for the baseline)
    seconds: float = 0.0
    bundle_sha256: str = ""  # io.folder_digest of the bundle that was scored

    def headline(self, cfg: EvalConfig) -> list[str]:
        k = cfg.headline_k
        return [f"{m}@{k}" for m in (*METRICS, "novelty", "ild")]


POPULARITY = "popularity"
BUY_AGAIN = "buy-again + popularity"


def popularity_lists(es: EvalSet, k: int, first: pd.DataFrame | None = None) -> pd.DataFrame:
    """The baseline: items available at the window's start by how many shoppers touched
    them before it (ties by item id), minus what each user touched that may not be shown
    again. ``first`` (user_id, item_id in order) puts those items ahead for their users."""
    items = es.items[es.items["available"]].sort_values(
        ["history_users", "item_id"], ascending=[False, True]
    )
    order = items["item_id"].to_numpy(dtype=object)
    counts = items["history_users"].to_numpy(dtype=float)
    position = pd.Series(np.arange(len(order)), index=order)
    banned = es.seen[~es.seen["allowed"]]
    if first is not None:  # listed ahead: never a second time from popularity
        banned = pd.concat([banned[["user_id", "item_id"]], first[["user_id", "item_id"]]])
    seen_pos = banned.assign(p=position.reindex(banned["item_id"]).to_numpy())
    seen_pos = seen_pos.dropna(subset=["p"])
    by_user = {
        u: np.unique(g.to_numpy(dtype=np.int64)) for u, g in seen_pos.groupby("user_id")["p"]
    }
    ahead = (
        {}
        if first is None
        else {
            u: position.reindex(g).dropna().to_numpy(dtype=np.int64)
            for u, g in first.groupby("user_id", sort=False)["item_id"]
        }
    )
    users: list[str] = []
    ranks: list[int] = []
    picks: list[np.ndarray] = []
    empty = np.array([], dtype=np.int64)
    for u in es.users["user_id"]:
        skip = by_user.get(u, empty)
        pool = np.arange(min(k + len(skip), len(order)))
        top = np.concatenate([ahead.get(u, empty), np.setdiff1d(pool, skip, assume_unique=True)])
        top = top[:k]
        users.extend([u] * len(top))
        ranks.extend(range(1, len(top) + 1))
        picks.append(top)
    chosen = np.concatenate(picks) if picks else empty
    return pd.DataFrame(
        {"user_id": users, "rank": ranks, "item_id": order[chosen], "score": counts[chosen]}
    )


def buy_again_lists(es: EvalSet, k: int) -> pd.DataFrame:
    """The buy-again baseline: each shopper's items bought on two or more occasions before
    the window that may be shown again, most occasions first (the latest on ties), then
    popularity. With repeats excluded it is the popularity baseline."""
    seen = es.seen
    again = seen[seen["allowed"] & (seen["buys"] >= 2)]
    again = again.sort_values(
        ["user_id", "buys", "last_ts", "item_id"], ascending=[True, False, False, True]
    )
    return popularity_lists(es, k, first=again.groupby("user_id", sort=False).head(k))


def category_groups(category: pd.Series) -> pd.Series:
    """Each item's category path cut at the shallowest level with more than one value."""
    paths = category.astype(str).str.split("/")
    depth = int(paths.map(len).max()) if len(paths) else 1
    for level in range(1, depth + 1):
        groups = pd.Series(["/".join(p[:level]) for p in paths], index=category.index)
        if groups.nunique() > 1:
            return groups
    return category.astype(str)


def _slices(es: EvalSet, cfg: EvalConfig) -> dict[str, tuple[pd.Index, pd.DataFrame]]:
    """slice name -> (its users, the truth it is judged on)."""
    users = es.users.set_index("user_id")
    out: dict[str, tuple[pd.Index, pd.DataFrame]] = {ALL: (users.index, es.truth)}

    def of_users(mask: pd.Series) -> tuple[pd.Index, pd.DataFrame]:
        idx = users.index[mask.to_numpy()]
        return idx, es.truth[es.truth["user_id"].isin(idx)]

    out["new_users"] = of_users(users["new"])
    out["returning_users"] = of_users(~users["new"])
    for seg in sorted(s for s in users["segment"].unique() if s >= 0):
        out[f"segment={seg}"] = of_users(users["segment"] == seg)
    item = es.items.set_index("item_id")
    truth = es.truth.join(item[["cold"]], on="item_id")
    truth["group"] = category_groups(item["category"]).reindex(truth["item_id"]).to_numpy()

    def of_items(mask: pd.Series) -> tuple[pd.Index, pd.DataFrame]:
        t = truth.loc[mask.to_numpy(), ["user_id", "item_id", "relevance"]]
        return pd.Index(t["user_id"].unique()), t

    out["cold_items"] = of_items(truth["cold"])
    top = truth["group"].value_counts().head(cfg.top_categories)
    for cat in top.index:
        out[f"category={cat}"] = of_items(truth["group"] == cat)
    return out


def score_lists(
    recs: pd.DataFrame,
    es: EvalSet,
    cfg: EvalConfig,
    *,
    label: str,
    uri: str | None = None,
    version: int | None = None,
    train_until: str | None = None,
    scores: np.ndarray | None = None,
) -> ModelScores:
    """Every metric at every configured k, per slice, for the lists ``recs`` (``scores``:
    the model's scores of its listed items, for the report's distribution plot)."""
    popularity = es.items.set_index("item_id")["history_users"]
    category = es.items.set_index("item_id")["category"]
    catalog = pd.Index(es.items.loc[es.items["available"], "item_id"])
    slices: dict[str, pd.DataFrame] = {}
    values: dict[str, dict[str, float]] = {}
    ranked = {k: positions(recs, k) for k in cfg.k}  # normalised once, judged many times
    beyond = {}
    for k, r in ranked.items():
        beyond[f"novelty@{k}"] = novelty(r, popularity, es.history_users, k)
        beyond[f"ild@{k}"] = intra_list_diversity(r, category, k)
    for name, (users, truth) in _slices(es, cfg).items():
        table = pd.DataFrame(index=users)
        for k, r in ranked.items():
            mine = r if name == ALL else r[r["user_id"].isin(users)]
            metrics = per_user_ranked(mine, truth, k).reindex(users, fill_value=0.0)
            for m in METRICS:
                table[f"{m}@{k}"] = metrics[m]
        if not name.startswith(("cold_items", "category=")):  # user slices: lists' qualities
            for col, series in beyond.items():
                table[col] = series.reindex(users)
        slices[name] = table
        values[name] = {
            str(c): float(table[c].mean()) if len(table) else math.nan for c in table.columns
        }
    for k, r in ranked.items():
        values[ALL][f"coverage@{k}"] = catalog_coverage(r, catalog, k)
    return ModelScores(
        label=label,
        uri=uri,
        version=version,
        train_until=train_until,
        eval_set_hash=es.hash,
        slices=slices,
        values=values,
        scores=np.array([]) if scores is None else scores,
    )


def intervals(
    scores: ModelScores,
    cfg: EvalConfig,
    other: ModelScores | None = None,
    *,
    slices: tuple[str, ...] | None = None,
) -> dict[tuple[str, str], Interval]:
    """Bootstrap intervals of the headline metrics per slice (``slices``: only those;
    default every slice): of ``scores`` alone, or of the paired difference
    ``scores - other`` (the same users resampled for both)."""
    if other is not None and other.eval_set_hash != scores.eval_set_hash:
        raise ShopMLError(
            f"{scores.label} and {other.label} were scored on different evaluation sets "
            f"({scores.eval_set_hash[:12]} vs {other.eval_set_hash[:12]}); refusing to "
            "compare them: evaluate both on the same frozen set"
        )
    out: dict[tuple[str, str], Interval] = {}
    wanted = scores.headline(cfg)
    for name, table in scores.slices.items():
        if slices is not None and name not in slices:
            continue
        cols = [c for c in wanted if c in table.columns]
        x = table[cols].to_numpy(dtype=float)
        if other is not None:
            x = x - other.slices[name].reindex(table.index)[cols].to_numpy(dtype=float)
        for col, iv in zip(
            cols,
            bootstrap_means(x, draws=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed),
            strict=True,
        ):
            out[(name, col)] = iv
    return out


Intervals = dict[tuple[str, str], Interval]


@dataclass(frozen=True)
class Comparison:
    """The models scored on one evaluation set, with their bootstrap intervals: of the
    challenger and the champion on the overall slice, and of their paired difference on
    every slice (empty without a champion)."""

    challenger: ModelScores
    champion: ModelScores | None
    baselines: dict[str, ModelScores]  # name -> scores; "popularity" always among them
    own: Intervals
    champ_own: Intervals
    diff: Intervals
    baseline_own: dict[str, Intervals]  # each baseline's own intervals (overall slice)
    baseline_diff: dict[str, Intervals]  # challenger - baseline, paired (overall slice)

    @classmethod
    def of(
        cls,
        challenger: ModelScores,
        champion: ModelScores | None,
        baselines: dict[str, ModelScores],
        cfg: EvalConfig,
    ) -> Comparison:
        if POPULARITY not in baselines:
            raise ValueError("the baselines must include popularity")
        return cls(
            challenger=challenger,
            champion=champion,
            baselines=baselines,
            own=intervals(challenger, cfg, slices=(ALL,)),
            champ_own={} if champion is None else intervals(champion, cfg, slices=(ALL,)),
            diff={} if champion is None else intervals(challenger, cfg, champion),
            baseline_own={n: intervals(b, cfg, slices=(ALL,)) for n, b in baselines.items()},
            baseline_diff={
                n: intervals(challenger, cfg, b, slices=(ALL,)) for n, b in baselines.items()
            },
        )

    @property
    def popularity(self) -> ModelScores:
        return self.baselines[POPULARITY]

    def best_baseline(self, metric: str, slice_name: str = ALL) -> tuple[str, float]:
        """The baseline with the highest ``metric`` on ``slice_name`` (name, value)."""
        values = {
            n: b.values.get(slice_name, {}).get(metric, math.nan) for n, b in self.baselines.items()
        }
        finite = {n: v for n, v in values.items() if not math.isnan(v)}
        if not finite:
            return POPULARITY, math.nan
        name = max(finite, key=lambda n: finite[n])
        return name, finite[name]

    @property
    def models(self) -> list[ModelScores]:
        return [
            s for s in (self.challenger, self.champion, *self.baselines.values()) if s is not None
        ]
