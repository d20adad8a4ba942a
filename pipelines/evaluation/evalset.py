"""The frozen evaluation set of a snapshot: who is scored, on which held-out interactions.

The last ``holdout_days`` before the snapshot's end (the midnight after its last event)
are the evaluation window. Its users are everyone with a graded interaction in the
window (a seeded sample of ``max_users`` when there are more); their truth is the
strongest grade they gave each item there. The set is written once, to
``SNAPSHOT/evaluation/``, with the sha256 of every file and one hash over those and the
settings that shaped it. Every later evaluation on the snapshot reads the same rows and
checks the digests first, so a challenger and the champion are always scored on exactly
the same users and items; a changed set, or a request for different settings, is
refused.

Files: ``users.parquet`` (user_id, new, segment, age, gender, region), ``truth.parquet``
(user_id, item_id, relevance), ``items.parquet`` (item_id, category, available,
cold, history_users), ``seen.parquet`` (user_id, item_id touched before the window;
``allowed``: whether it may be shown again, ``buys``: purchase occasions, ``last_ts``: the
latest touch, for the baselines) and ``eval_set.json`` (written last).

**Repeats** (``[evaluate] repeats``): whether an item a shopper touched before the window
counts as a hit when they buy it again in the window. ``excluded`` never (the classic
protocol), ``allowed`` always, ``auto`` (default) follows the candidates' repeat policy
(``[candidates] repeats`` and its thresholds, :mod:`pipelines.candidates.repeats`) as
measured on the events before the window: re-bought groceries count, a second look at a
television does not. The resolved policy is frozen with the set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.candidates.config import CandidateConfig
from pipelines.candidates.repeats import repeat_stats
from pipelines.data.contract import DEFAULT_GRADES, EVENT_TYPES
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import (
    DEFAULT_HOLDOUT_DAYS,
    category_medians,
    holdout_window,
    load_timeline,
)
from pipelines.errors import ShopMLError, require_all
from pipelines.features.config import FeatureConfig
from pipelines.features.segments import assign_segments, fit_segments
from pipelines.features.user_profile import advance, new_state
from pipelines.io import publish, sha256_file, sha256_json, staging_folder, write_json

log = logging.getLogger(__name__)
FOLDER = "evaluation"
FORMAT_VERSION = 2  # 2: repeats (seen.parquet's allowed, buys, last_ts)
FILES = ("users", "truth", "items", "seen")
# The settings that decide which rows the set holds; the others only change the scoring.
FROZEN = ("holdout_days", "max_users", "grades", "min_grade", "repeats", "seed")
REPEATS = ("auto", "allowed", "excluded")
# The candidates' settings that decide the repeat policy under ``repeats = "auto"``.
REPEAT_RULE = ("repeats", "repeat_min_rate", "repeat_prior", "repeat_categories")


@dataclass(frozen=True)
class EvalConfig:
    """The ``[evaluate]`` table (docs/evaluation.md lists every option)."""

    holdout_days: float = DEFAULT_HOLDOUT_DAYS
    k: list[int] = field(default_factory=lambda: [5, 10, 20])
    headline_k: int = 10
    max_users: int = 20_000
    grades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRADES))
    min_grade: int = 1
    repeats: str = "auto"  # does a re-bought item count as a hit (module docstring)
    top_categories: int = 5
    min_slice_users: int = 30
    bootstrap: int = 1_000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.holdout_days > 0, "holdout_days must be > 0"),
            (len(self.k) > 0 and all(1 <= k <= 1000 for k in self.k), "k: values in 1..1000"),
            (self.headline_k in self.k, "headline_k must be one of k"),
            (self.max_users >= 1, "max_users must be >= 1"),
            (set(self.grades) == set(EVENT_TYPES), f"grades needs exactly {sorted(EVENT_TYPES)}"),
            (all(0 <= g <= 30 for g in self.grades.values()), "grades must be in 0..30"),
            (self.min_grade >= 1, "min_grade must be >= 1"),
            (self.repeats in REPEATS, f"repeats must be one of {', '.join(REPEATS)}"),
            (self.top_categories >= 0, "top_categories must be >= 0"),
            (self.min_slice_users >= 1, "min_slice_users must be >= 1"),
            (self.bootstrap >= 100, "bootstrap must be >= 100 draws"),
            (0.5 <= self.confidence < 1, "confidence must be in [0.5, 1)"),
        ]
        require_all(checks, context="evaluate config")

    @property
    def max_k(self) -> int:
        return max(self.k)

    def frozen(self, candidates: CandidateConfig | None = None) -> dict[str, Any]:
        """The settings frozen with the set; under ``repeats = "auto"`` also the
        candidates' repeat rule it follows."""
        d = asdict(self)
        d["holdout_days"] = float(self.holdout_days)  # 7 and 7.0 are one setting
        out = {name: d[name] for name in FROZEN}
        if self.repeats == "auto":
            c = asdict(candidates or CandidateConfig())
            out["repeat_rule"] = {name: c[name] for name in REPEAT_RULE}
        return json.loads(json.dumps(out))


@dataclass(frozen=True)
class EvalSet:
    folder: Path
    hash: str
    snapshot_id: str
    start: datetime
    end: datetime
    users: pd.DataFrame
    truth: pd.DataFrame
    items: pd.DataFrame
    seen: pd.DataFrame
    history_users: int  # shoppers with any event before the window (novelty's denominator)
    config: dict[str, Any]
    repeat_policy: dict[str, Any] = field(default_factory=dict)  # what counts again

    def describe(self) -> dict[str, Any]:
        """The JSON-ready summary every verdict and report carries."""
        return {
            "hash": self.hash,
            "snapshot_id": self.snapshot_id,
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "users": len(self.users),
            "new_users": int(self.users["new"].sum()),
            "truth_rows": len(self.truth),
            "config": self.config,
            "repeats": {k: v for k, v in self.repeat_policy.items() if k != "categories"},
            "folder": str(self.folder),
        }


def freeze_eval_set(
    snapshot: str | Path, cfg: EvalConfig, candidates: CandidateConfig | None = None
) -> EvalSet:
    """The snapshot's evaluation set: read (and verified) when it exists, else built and
    written once (``candidates``: whose repeat policy ``repeats = "auto"`` follows).
    Raises :class:`ShopMLError` when the stored set was changed or was frozen with other
    settings."""
    snap = Snapshot.open(snapshot)
    folder = snap.path / FOLDER
    if (folder / "eval_set.json").is_file():
        es = load_eval_set(folder)
        if es.snapshot_id != snap.id:
            raise ShopMLError(
                f"{folder} belongs to snapshot {es.snapshot_id[:12]}, not {snap.id[:12]}; "
                "the snapshot folder was replaced: delete the evaluation folder to freeze anew"
            )
        wanted = cfg.frozen(candidates)
        if es.config != wanted:
            diff = ", ".join(
                f"{k} {es.config.get(k)!r} (asked {wanted.get(k)!r})"
                for k in sorted(set(wanted) | set(es.config))
                if es.config.get(k) != wanted.get(k)
            )
            raise ShopMLError(
                f"the evaluation set of {snap.path} was frozen with other settings: {diff}. "
                "One frozen set per snapshot keeps every model comparable; use the same "
                "[evaluate] settings, or a new snapshot"
            )
        return es
    return _build(snap, cfg, candidates or CandidateConfig(), folder)


def _build(snap: Snapshot, cfg: EvalConfig, candidates: CandidateConfig, folder: Path) -> EvalSet:
    start, end = holdout_window(snap, cfg.holdout_days)
    tl = load_timeline(snap)
    t0, t1 = start.timestamp(), end.timestamp()
    n_before = tl.before(t0)
    if n_before == 0:
        raise ShopMLError(
            f"snapshot {snap.path} has no events before its evaluation window "
            f"({start:%Y-%m-%d} to {end:%Y-%m-%d}); lower [evaluate] holdout_days"
        )
    held_out = slice(n_before, tl.before(t1))
    grade_of = np.array([cfg.grades[t] for t in EVENT_TYPES], dtype=np.int64)
    key = tl.user[held_out].astype(np.int64) * tl.n_items + tl.item[held_out]
    grade = pd.Series(grade_of[tl.etype[held_out]]).groupby(key).max()
    grade = grade[grade >= cfg.min_grade]
    keys = grade.index.to_numpy(np.int64)
    # the latest touch of each (user, item) before the window; its index: the pairs touched
    last_touch = (
        pd.Series(tl.ts[:n_before])
        .groupby(tl.user[:n_before].astype(np.int64) * tl.n_items + tl.item[:n_before])
        .max()
    )
    before_key = last_touch.index.to_numpy(np.int64)
    stats = repeat_stats(tl, slice(0, n_before), t0, candidates)
    if cfg.repeats == "auto":
        allowed = stats.allowed
    else:
        allowed = np.full(tl.n_items, cfg.repeats == "allowed")
    # an item touched before counts again only where repeats are allowed
    fresh = ~np.isin(keys, before_key) | allowed[keys % tl.n_items]
    keys, grade = keys[fresh], grade[fresh]
    user_codes = np.unique(keys // tl.n_items)
    if len(user_codes) == 0:
        raise ShopMLError(
            f"snapshot {snap.path}: no user has a new graded interaction in the evaluation "
            f"window {start:%Y-%m-%d} to {end:%Y-%m-%d}; raise [evaluate] holdout_days"
        )
    if len(user_codes) > cfg.max_users:
        rng = np.random.default_rng(cfg.seed)
        user_codes = np.sort(rng.choice(user_codes, size=cfg.max_users, replace=False))
    keep = np.isin(keys // tl.n_items, user_codes)
    keys, grades = keys[keep], grade.to_numpy()[keep]

    user_ids = tl.users["user_id"].astype(str).to_numpy()
    item_ids = tl.items["item_id"].astype(str).to_numpy()
    events_before = np.bincount(tl.user[:n_before], minlength=tl.n_users)
    users = pd.DataFrame(
        {
            "user_id": user_ids[user_codes],
            "new": events_before[user_codes] == 0,
            "segment": _segments(tl, t0)[user_codes],
            "age": pd.to_numeric(tl.users["age"], errors="coerce").to_numpy(float)[user_codes],
            "gender": tl.users["gender"].astype(object).to_numpy()[user_codes],
            "region": tl.users["region"].astype(object).to_numpy()[user_codes],
        }
    )
    truth = pd.DataFrame(
        {
            "user_id": user_ids[keys // tl.n_items],
            "item_id": item_ids[keys % tl.n_items],
            "relevance": grades.astype(np.int64),
        }
    )
    pair_users = before_key // tl.n_items
    history_users = np.bincount(before_key % tl.n_items, minlength=tl.n_items)
    categories = tl.categories[tl.category].astype(str)
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "category": categories,
            "available": tl.items["created_s"].to_numpy() < t0,
            "cold": history_users == 0,
            "history_users": history_users.astype(np.int64),
        }
    )
    in_eval = np.isin(pair_users, user_codes)
    seen_users, seen_items = pair_users[in_eval], before_key[in_eval] % tl.n_items
    seen = pd.DataFrame(
        {
            "user_id": user_ids[seen_users],
            "item_id": item_ids[seen_items],
            "allowed": allowed[seen_items],
            "buys": np.asarray(stats.buys[seen_users, seen_items]).ravel().astype(np.int64),
            "last_ts": last_touch.to_numpy(dtype=float)[in_eval],
        }
    )
    n_history = int((events_before > 0).sum())
    tables = {"users": users, "truth": truth, "items": items, "seen": seen}
    policy = {
        "repeats": cfg.repeats,
        "allowed_items": int(allowed.sum()),
        "categories": stats.policy if cfg.repeats == "auto" else {},
    }
    return _write(snap, cfg, candidates, folder, tables, start, end, n_history, policy)


def _segments(tl: Any, t: float) -> np.ndarray:
    """Shopper segments as of ``t``, with the feature store's clustering (docs/features.md),
    fitted on what was known at ``t`` only; -1 for shoppers without history."""
    fcfg = FeatureConfig()
    state = new_state(tl)
    advance(state, tl, t, fcfg, category_medians(tl, t))
    model = fit_segments(tl, state, t, fcfg)
    return assign_segments(model, tl, state, t, fcfg)


def _digest(manifest: dict[str, Any]) -> str:
    body = {k: manifest[k] for k in ("snapshot_id", "window_start", "window_end", "config")}
    body["files"] = manifest["files"]
    return sha256_json(body)


def _write(
    snap: Snapshot,
    cfg: EvalConfig,
    candidates: CandidateConfig,
    folder: Path,
    tables: dict[str, pd.DataFrame],
    start: datetime,
    end: datetime,
    history_users: int,
    policy: dict[str, Any],
) -> EvalSet:
    with staging_folder(folder) as tmp:
        files = {}
        for name in FILES:
            path = tmp / f"{name}.parquet"
            tables[name].to_parquet(path, index=False)
            files[name] = sha256_file(path)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "snapshot_id": snap.id,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "config": cfg.frozen(candidates),
            "files": files,
            "history_users": history_users,
            "repeat_policy": policy,
            "counts": {name: len(t) for name, t in tables.items()},
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        manifest["hash"] = _digest(manifest)
        write_json(tmp / "eval_set.json", manifest)
        # the set appears whole or not at all
        if not publish(tmp, folder, exists=lambda: (folder / "eval_set.json").is_file()):
            log.info("another process froze %s first; using it", folder)
    es = load_eval_set(folder)
    log.info(
        "froze the evaluation set of %s: %s users, %s truth rows, window %s to %s (hash %s)",
        snap.path,
        f"{len(es.users):,}",
        f"{len(es.truth):,}",
        f"{start:%Y-%m-%d}",
        f"{end:%Y-%m-%d}",
        es.hash[:12],
    )
    return es


def load_eval_set(folder: str | Path) -> EvalSet:
    """Read a frozen set, refusing it when any file or the manifest changed since."""
    folder = Path(folder)
    path = folder / "eval_set.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ShopMLError(f"{path}: cannot read the evaluation set ({exc})") from exc
    refuse = (
        f"the evaluation set {folder} changed after it was frozen ({{}}); scores on it would "
        "not compare with earlier ones. Delete the folder to freeze a new set (earlier "
        "evaluations then no longer compare)"
    )
    for name in FILES:
        f = folder / f"{name}.parquet"
        if not f.is_file():
            raise ShopMLError(refuse.format(f"{f.name} is missing"))
        if sha256_file(f) != manifest.get("files", {}).get(name):
            raise ShopMLError(refuse.format(f"{f.name} differs from its recorded sha256"))
    if manifest.get("hash") != _digest(manifest):
        raise ShopMLError(refuse.format("eval_set.json was edited"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShopMLError(
            f"the evaluation set {folder} was frozen by an older ShopML (format "
            f"{manifest.get('format_version')}, this one writes {FORMAT_VERSION}); delete the "
            "folder to freeze it anew (earlier evaluations then no longer compare)"
        )
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in FILES}
    return EvalSet(
        folder=folder,
        hash=manifest["hash"],
        snapshot_id=manifest["snapshot_id"],
        start=datetime.fromisoformat(manifest["window_start"]),
        end=datetime.fromisoformat(manifest["window_end"]),
        users=tables["users"],
        truth=tables["truth"],
        items=tables["items"],
        seen=tables["seen"],
        history_users=int(manifest["history_users"]),
        config=manifest["config"],
        repeat_policy=manifest.get("repeat_policy", {}),
    )
