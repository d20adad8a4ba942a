"""``shopml evaluate``: score a challenger (and the champion) on a snapshot's frozen
evaluation set, judge the gate, write the verdict and the reviewer's report, log them.

Every model is scored on the same rows (:mod:`pipelines.evaluation.evalset`) with the metrics of
:mod:`pipelines.ranking.metrics`, overall and per slice (new vs returning users, each user
segment, cold items, the top categories); the simple baselines (popularity, buy-again +
popularity, the challenger's best single candidate source) are scored on the same rows. Headline metrics get percentile bootstrap intervals, and the challenger - champion
difference a paired one. :mod:`pipelines.evaluation.gate` turns them into a verdict with one reason
per check; :mod:`pipelines.evaluation.report` writes ``report.html`` and ``summary.md``. With a
registered challenger, all of it goes to the challenger's MLflow run and model version.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.candidates import CandidateConfig
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ConfigError, ShopMLError
from pipelines.evaluation import report
from pipelines.evaluation.bootstrap import Interval
from pipelines.evaluation.evalset import EvalConfig, EvalSet, freeze_eval_set
from pipelines.evaluation.gate import GateConfig, Judgement, judge
from pipelines.evaluation.scoring import (
    ALL,
    BUY_AGAIN,
    POPULARITY,
    Comparison,
    ModelScores,
    buy_again_lists,
    popularity_lists,
    score_lists,
)
from pipelines.io import finite_or_none, folder_digest, write_json, write_text
from pipelines.keys import sign, signing_key
from pipelines.progress import progress_reporter
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import (
    CHAMPION,
    MODEL_NAME,
    ModelRef,
    alias_version,
    bundle_path,
    log_evaluation,
    resolve,
    served_name,
)
from pipelines.settings import Settings, check_tables, config_section
from pipelines.validation.validate import ensure_validated

log = logging.getLogger(__name__)
VERDICT_SIGNATURE = "verdict.sig"  # HMAC-SHA256 of verdict.json's bytes


@dataclass(frozen=True)
class EvaluateConfig:
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # whose repeat policy ``[evaluate] repeats = "auto"`` follows
    candidates: CandidateConfig = field(default_factory=CandidateConfig)

    def __post_init__(self) -> None:
        for check in self.gate.checks:
            if check.k not in self.evaluate.k:
                raise ConfigError(
                    f"gate check {check.metric}: k={check.k} is not among [evaluate] k "
                    f"{self.evaluate.k}"
                )

    @classmethod
    def from_toml(cls, path: str | Path) -> EvaluateConfig:
        """Tables ``[evaluate]`` and ``[gate]`` of a pipeline config file."""
        check_tables(path)
        return cls(
            evaluate=config_section(EvalConfig, path, "evaluate"),
            gate=config_section(GateConfig, path, "gate"),
            candidates=config_section(CandidateConfig, path, "candidates"),
        )


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` produced (paths, verdict and where it was logged)."""

    blessed: bool
    judgement: Judgement
    eval_set: EvalSet
    comparison: Comparison
    out_dir: Path
    verdict: dict[str, Any]
    run_id: str | None
    seconds: float

    @property
    def challenger(self) -> ModelScores:
        return self.comparison.challenger

    @property
    def champion(self) -> ModelScores | None:
        return self.comparison.champion

    @property
    def popularity(self) -> ModelScores:
        return self.comparison.popularity


def _request(es: EvalSet, k: int) -> RecommendRequest:
    """The evaluation users with their demographics (new shoppers get the cold start)."""
    users = es.users
    return RecommendRequest(
        users["user_id"].tolist(),
        k,
        age=users["age"].tolist(),
        gender=users["gender"].tolist(),
        region=users["region"].tolist(),
    )


def _model_lists(rec: Any, es: EvalSet, k: int, label: str) -> pd.DataFrame:
    n = len(es.users)
    with progress_reporter(f"scoring the {label}", "users") as update:
        return rec.recommend(_request(es, k), progress=lambda done: update(done, n))


def score_baselines(es: EvalSet, cfg: EvalConfig, rec: Recommender) -> dict[str, ModelScores]:
    """Popularity, buy-again + popularity (when the set lets anything count again) and
    the best single source of ``rec`` on the headline metric, scored on ``es``."""
    k = cfg.max_k
    out = {POPULARITY: score_lists(popularity_lists(es, k), es, cfg, label=POPULARITY)}
    if bool(es.seen["allowed"].any()):
        out[BUY_AGAIN] = score_lists(buy_again_lists(es, k), es, cfg, label=BUY_AGAIN)
    headline = f"ndcg@{cfg.headline_k}"
    with progress_reporter("scoring each candidate source", "sources") as update:
        lists = rec.source_lists(_request(es, k))
        scored = {}
        for i, (name, frame) in enumerate(lists.items(), start=1):
            scored[name] = score_lists(frame, es, cfg, label=f"source: {name}")
            update(i, len(lists))
    if scored:
        best = max(scored, key=lambda n: scored[n].values[ALL].get(headline, -1.0))
        out[f"best source ({best})"] = scored[best]
    return out


def _check_unseen(rec: Any, es: EvalSet, label: str, uri: str) -> str:
    """The model's training time; refuse a model that learned from the window's events."""
    until = datetime.fromtimestamp(float(rec.ctx.history.now), tz=UTC)
    if until > es.start:
        raise ShopMLError(
            f"the {label} {uri} was trained on events until {until:%Y-%m-%d %H:%M} UTC, after "
            f"the evaluation window starts ({es.start:%Y-%m-%d %H:%M} UTC): it has seen the "
            f"held-out interactions. Train with --train-until {es.start:%Y-%m-%d} (the default "
            "holds out [evaluate] holdout_days), or evaluate on a later snapshot"
        )
    return until.isoformat()


def score_model(
    ref: Any, es: EvalSet, cfg: EvalConfig, settings: Settings, label: str
) -> tuple[ModelScores, Recommender]:
    """Load the model behind ``ref``, refuse it if it saw the window, score its lists."""
    bundle = bundle_path(ref.uri, settings)
    rec = Recommender.load(bundle)
    until = _check_unseen(rec, es, label, ref.uri)
    started = time.perf_counter()
    lists = _model_lists(rec, es, cfg.max_k, label)
    scores = score_lists(
        lists,
        es,
        cfg,
        label=label,
        uri=ref.uri,
        version=ref.version,
        train_until=until,
        scores=lists["score"].to_numpy(dtype=float),
    )
    scores.seconds = time.perf_counter() - started
    scores.bundle_sha256 = folder_digest(bundle)
    return scores, rec


def evaluate(
    *,
    model_uri: str,
    snapshot_uri: str | Path,
    settings: Settings,
    cfg: EvaluateConfig | None = None,
    champion_uri: str | None = None,
    use_champion: bool = True,
    out_dir: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> Evaluation:
    """Score ``model_uri`` (and the champion: ``champion_uri``, else the registry's
    ``champion`` alias when there is one) on the frozen set of ``snapshot_uri``, judge the
    gate and write ``verdict.json``, ``report.html``, ``summary.md``, ``metrics.json``."""
    started = time.perf_counter()
    cfg = cfg or EvaluateConfig()
    ecfg = cfg.evaluate
    ensure_validated(Snapshot.open(snapshot_uri))  # never score on a quarantined snapshot
    es = freeze_eval_set(snapshot_uri, ecfg, cfg.candidates)
    ref = resolve(model_uri, settings)
    challenger, rec = score_model(ref, es, ecfg, settings, "challenger")
    notes: list[str] = []
    champ_ref: ModelRef | None = None
    if use_champion:
        champ_ref = (
            resolve(champion_uri, settings) if champion_uri else _registry_champion(ref, settings)
        )
    champion = None
    if champ_ref is not None:
        if champ_ref.version is not None and (champ_ref.name, champ_ref.version) == (
            ref.name,
            ref.version,
        ):
            notes.append(f"the model is the champion itself (version {ref.version})")
        champion, _ = score_model(champ_ref, es, ecfg, settings, "champion")
    baselines = score_baselines(es, ecfg, rec)
    del rec
    cmp = Comparison.of(challenger, champion, baselines, ecfg)
    judgement = judge(
        cfg.gate,
        challenger.values,
        popularity=cmp.popularity.values,
        baselines={name: b.values for name, b in baselines.items()},
        champion=None if champion is None else champion.values,
        differences=cmp.diff,
        slice_users={name: len(t) for name, t in challenger.slices.items()},
        min_slice_users=ecfg.min_slice_users,
        confidence=ecfg.confidence,
        intervals=cmp.own,
    )
    judgement.notes.extend(notes)
    folder = Path(out_dir) if out_dir else _default_out(settings, ref, es)
    folder.mkdir(parents=True, exist_ok=True)
    doc = _metrics_doc(es, cmp)
    write_json(folder / "metrics.json", doc)
    files = report.write(folder, es, ecfg, judgement, cmp)
    verdict = _verdict(es, cfg, judgement, ref, champ_ref, challenger, files, use_champion)
    write_signed_verdict(folder, verdict, settings)
    run_id = None
    if log_to_mlflow and ref.version is not None:
        run_id = log_evaluation(ref, folder, verdict, challenger.values[ALL])
    return Evaluation(
        blessed=judgement.blessed,
        judgement=judgement,
        eval_set=es,
        comparison=cmp,
        out_dir=folder,
        verdict=verdict,
        run_id=run_id,
        seconds=time.perf_counter() - started,
    )


def write_signed_verdict(folder: Path, verdict: dict[str, Any], settings: Settings) -> None:
    """``verdict.json`` and its signature ``verdict.sig``: promotion trusts a verdict only
    with this signature (pipelines/keys.py)."""
    write_json(folder / "verdict.json", verdict)
    key = signing_key(settings, create=True)
    write_text(folder / VERDICT_SIGNATURE, sign((folder / "verdict.json").read_bytes(), key))


def run_context() -> dict[str, Any]:
    """The DAG run that evaluates (Airflow exports it to every task; its approval is the
    only one that can promote on the verdict) and the time."""
    return {
        "dag_id": os.environ.get("AIRFLOW_CTX_DAG_ID") or None,
        "dag_run": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _registry_champion(ref: Any, settings: Settings) -> Any:
    """The champion of the served model ``ref`` is a challenger of (its own name, or the
    name without ``-candidates``)."""
    return alias_version(served_name(ref.name or MODEL_NAME), CHAMPION, settings)


def _default_out(settings: Settings, ref: Any, es: EvalSet) -> Path:
    who = f"{ref.name}-v{ref.version}" if ref.version is not None else Path(ref.uri).name
    return settings.home / "evaluations" / f"{who}-{es.hash[:12]}"


def _ivs(ivs: dict[tuple[str, str], Interval]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (s, m), iv in ivs.items():
        out.setdefault(s, {})[m] = iv.as_dict()
    return out


def _metrics_doc(es: EvalSet, cmp: Comparison) -> dict[str, Any]:
    def model(s: ModelScores, ivs: dict[tuple[str, str], Interval]) -> dict[str, Any]:
        return {
            "uri": s.uri,
            "version": s.version,
            "train_until": s.train_until,
            "eval_set_hash": s.eval_set_hash,
            "values": finite_or_none(s.values),
            "intervals": _ivs(ivs),
            "slice_users": {name: len(t) for name, t in s.slices.items()},
            "seconds": round(s.seconds, 2),
        }

    return {
        "eval_set": es.describe(),
        "challenger": model(cmp.challenger, cmp.own),
        "champion": None if cmp.champion is None else model(cmp.champion, cmp.champ_own),
        "popularity": model(cmp.popularity, cmp.baseline_own[POPULARITY]),
        "baselines": {
            name: {**model(b, cmp.baseline_own[name]), "difference": _ivs(cmp.baseline_diff[name])}
            for name, b in cmp.baselines.items()
        },
        "difference_intervals": _ivs(cmp.diff),
    }


def _verdict(
    es: EvalSet,
    cfg: EvaluateConfig,
    judgement: Judgement,
    ref: Any,
    champ_ref: Any,
    challenger: ModelScores,
    files: dict[str, str],
    use_champion: bool,
) -> dict[str, Any]:
    return {
        "blessed": judgement.blessed,
        # the bundle's digest: promotion serves exactly the files that were scored
        "model": {
            "uri": ref.uri,
            "name": ref.name,
            "version": ref.version,
            "bundle_sha256": challenger.bundle_sha256,
        },
        "champion": None
        if champ_ref is None
        else {"uri": champ_ref.uri, "name": champ_ref.name, "version": champ_ref.version},
        "eval_set": es.describe(),
        "checks": [asdict(o) for o in judgement.outcomes],
        "reasons": [o.reason for o in judgement.outcomes],
        "notes": judgement.notes,
        "gate": cfg.gate.as_dict(),
        "files": files,
        "train_until": challenger.train_until,
        # False when `--no-champion` ignored one: such a verdict cannot bless a promotion
        # while a champion is served
        "compared_with_champion": use_champion,
        **run_context(),
    }
