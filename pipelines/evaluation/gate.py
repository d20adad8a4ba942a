"""The promotion gate: thresholds on a challenger's offline metrics, with a reason per check.

Like TFX's Evaluator, a check on one metric (optionally on one slice) may hold:

- value thresholds: ``min`` / ``max`` on the challenger's value;
- baseline thresholds: ``over_baselines``, the relative change against the best of the
  simple baselines scored on the same evaluation set (popularity, buy-again + popularity,
  the challenger's best single candidate source; 0.0 = at least as good as the best of
  them), and ``over_popularity``, against popularity alone;
- change thresholds against the champion: ``absolute`` (challenger - champion) and
  ``relative`` ((challenger - champion) / champion), judged in the check's ``direction``
  (higher is better: the change must be >= the threshold; lower: <=). With ``use_ci`` the
  bound of the bootstrap interval of the difference is judged instead of its mean (the
  lower bound when higher is better), so only a change that clears the threshold with
  the configured confidence passes.

Without a champion, change thresholds are skipped and the verdict says so. A check on a
slice with fewer than ``min_slice_users`` users is skipped (too few to read). The model is
blessed when no check fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipelines.errors import ConfigError
from pipelines.evaluation.bootstrap import Interval
from pipelines.ranking.metrics import BEYOND_ACCURACY, METRICS

Direction = Literal["higher", "lower"]
Values = Mapping[str, Mapping[str, float]]  # slice -> metric name ("ndcg@10") -> value


@dataclass(frozen=True)
class Check:
    """One ``[[gate.checks]]`` entry."""

    metric: str
    slice: str = "all"
    min: float | None = None
    max: float | None = None
    over_popularity: float | None = None
    over_baselines: float | None = None
    absolute: float | None = None
    relative: float | None = None
    direction: Direction = "higher"
    use_ci: bool = False

    def __post_init__(self) -> None:
        name, _, k = self.metric.partition("@")
        if name not in (*METRICS, *BEYOND_ACCURACY) or not k.isdigit():
            raise ConfigError(
                f"gate check: metric {self.metric!r} is not NAME@K with NAME one of "
                f"{', '.join((*METRICS, *BEYOND_ACCURACY))}"
            )
        if self.direction not in ("higher", "lower"):
            raise ConfigError(f"gate check {self.metric}: direction must be 'higher' or 'lower'")
        thresholds = (
            self.min, self.max, self.over_popularity, self.over_baselines, self.absolute,
            self.relative,
        )  # fmt: skip
        if all(v is None for v in thresholds):
            raise ConfigError(
                f"gate check {self.metric}: set at least one of min, max, over_popularity, "
                "over_baselines, absolute, relative"
            )

    @property
    def k(self) -> int:
        return int(self.metric.partition("@")[2])


def _default_checks() -> list[Check]:
    return [
        Check("ndcg@10", over_baselines=0.0, relative=-0.01),
        Check("recall@10", relative=-0.02),
        Check("coverage@10", absolute=-0.05),
        Check("ndcg@10", slice="new_users", over_popularity=-0.05),
    ]


@dataclass(frozen=True)
class GateConfig:
    """The ``[gate]`` table: ``[[gate.checks]]`` entries, and the size below which an
    evaluation is too small to judge (docs/evaluation.md)."""

    checks: list[Check] = field(default_factory=_default_checks)
    # Fewer evaluation users than this: "too few users to judge", not blessed, unless
    # allow_few_users (then only a note). 100 users give a 95% interval of nDCG@10 about
    # +-0.05 wide on a typical shop: wider than the differences a gate must see.
    min_users: int = 100
    allow_few_users: bool = False
    # A headline interval wider than this share of its mean is flagged in the notes.
    max_relative_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.min_users < 1:
            raise ConfigError("gate config: min_users must be >= 1")
        if not self.max_relative_interval > 0:
            raise ConfigError("gate config: max_relative_interval must be > 0")
        parsed = []
        for entry in self.checks:
            if isinstance(entry, Check):
                parsed.append(entry)
                continue
            if not isinstance(entry, dict):
                raise ConfigError("gate config: each [[gate.checks]] entry must be a table")
            unknown = sorted(set(entry) - {f for f in Check.__dataclass_fields__})
            if unknown:
                raise ConfigError(
                    f"gate config: unknown check setting(s) {unknown}; known: "
                    f"{sorted(Check.__dataclass_fields__)}"
                )
            if "metric" not in entry:
                raise ConfigError("gate config: a [[gate.checks]] entry has no metric")
            parsed.append(Check(**entry))
        object.__setattr__(self, "checks", parsed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checks": [asdict(c) for c in self.checks],
            "min_users": self.min_users,
            "allow_few_users": self.allow_few_users,
            "max_relative_interval": self.max_relative_interval,
        }


@dataclass(frozen=True)
class Outcome:
    """One judged threshold. ``passed`` is None when the check was skipped."""

    kind: Literal["size", "value", "baseline", "change"]
    metric: str
    slice: str
    passed: bool | None
    reason: str
    value: float | None = None
    reference: float | None = None
    threshold: float | None = None
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Judgement:
    blessed: bool
    outcomes: list[Outcome]
    notes: list[str]


def _num(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:.4f}" if abs(v) < 0.1 else f"{v:.3f}"


def _pct(v: float) -> str:
    if math.isinf(v):
        return "+inf%" if v > 0 else "-inf%"
    return f"{v * 100:+.1f}%"


def _rel(value: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


def _label(check: Check) -> str:
    return check.metric if check.slice == "all" else f"{check.metric} ({check.slice})"


def judge(
    cfg: GateConfig,
    challenger: Values,
    *,
    popularity: Values,
    champion: Values | None,
    baselines: Mapping[str, Values] | None = None,
    differences: Mapping[tuple[str, str], Interval] | None = None,
    slice_users: Mapping[str, int] | None = None,
    min_slice_users: int = 1,
    confidence: float = 0.95,
    intervals: Mapping[tuple[str, str], Interval] | None = None,
    unit: str = "users",
) -> Judgement:
    """Judge every check of ``cfg``; ``differences`` maps (slice, metric) to the bootstrap
    interval of challenger - champion (needed by ``use_ci`` checks), ``intervals`` the
    challenger's own (wide ones are flagged); ``baselines`` every simple baseline by name
    (``over_baselines`` checks judge against the best; default: popularity alone)."""
    every_baseline = dict(baselines or {"popularity": popularity})
    outcomes: list[Outcome] = []
    notes: list[str] = []
    n_all = (slice_users or {}).get("all")
    if n_all is not None and n_all < cfg.min_users:
        reason = (
            f"too few {unit} to judge: {n_all:,} in the evaluation set, {cfg.min_users:,} "
            f"needed ({'[gate]' if unit == 'users' else '[search_gate]'} min_users); their intervals are too wide to tell models apart"
        )
        if cfg.allow_few_users:
            notes.append(reason + " (judged anyway: [gate] allow_few_users)")
        else:
            outcomes.append(
                Outcome(
                    "size", unit, "all", False, reason + ": fail",
                    value=float(n_all), threshold=float(cfg.min_users),
                )
            )  # fmt: skip
    for (slice_name, metric), iv in sorted((intervals or {}).items()):
        width = iv.high - iv.low
        if slice_name == "all" and iv.mean > 0 and width / iv.mean > cfg.max_relative_interval:
            notes.append(
                f"wide interval: {metric} {iv.mean:.4f} [{iv.low:.4f}, {iv.high:.4f}] spans "
                f"{width / iv.mean:.0%} of its value (more than {cfg.max_relative_interval:.0%})"
            )
    differences = differences or {}
    if champion is None and any(
        c.absolute is not None or c.relative is not None for c in cfg.checks
    ):
        notes.append(
            "no champion yet: change thresholds against a champion were skipped; "
            "value and baseline thresholds only"
        )
    if not cfg.checks:
        notes.append("the gate has no checks: blessed by default")
    for check in cfg.checks:
        label = _label(check)
        n = (slice_users or {}).get(check.slice)
        if check.slice not in challenger or (n is not None and n < min_slice_users):
            why = (
                f"no slice {check.slice!r} in this evaluation set"
                if check.slice not in challenger
                else f"only {n} {'user(s)' if unit == 'users' else unit} in the slice, "
                f"{min_slice_users} needed"
            )
            outcomes.append(
                Outcome("value", check.metric, check.slice, None, f"{label}: skipped, {why}")
            )
            continue
        value = challenger[check.slice].get(check.metric, math.nan)
        outcomes.extend(_value_outcomes(check, label, value))
        if check.over_popularity is not None:
            outcomes.append(
                _baseline_outcome(
                    check, label, value, "popularity", popularity, check.over_popularity
                )
            )
        if check.over_baselines is not None:
            name, best = best_of(every_baseline, check.slice, check.metric, check.direction)
            outcomes.append(
                _baseline_outcome(
                    check, label, value, f"best baseline ({name})", best, check.over_baselines
                )
            )
        if champion is not None:
            outcomes.extend(
                _change_outcomes(
                    check,
                    label,
                    value,
                    champion,
                    differences.get((check.slice, check.metric)),
                    confidence,
                )
            )
    blessed = all(o.passed is not False for o in outcomes)
    return Judgement(blessed, outcomes, notes)


def _verdict_word(ok: bool) -> str:
    return "pass" if ok else "fail"


def _value_outcomes(check: Check, label: str, value: float) -> list[Outcome]:
    if check.min is None and check.max is None:
        return []
    ok = not math.isnan(value)
    if check.min is not None and ok:
        ok = value >= check.min
    if check.max is not None and ok:
        ok = value <= check.max
    if check.min is not None and check.max is not None:
        need = f"needs between {_num(check.min)} and {_num(check.max)}"
    elif check.min is not None:
        need = f"needs ≥ {_num(check.min)}"
    else:
        need = f"needs ≤ {_num(check.max)}"  # type: ignore[arg-type]
    threshold = check.min if check.min is not None else check.max
    return [
        Outcome(
            "value",
            check.metric,
            check.slice,
            ok,
            f"{label} {_num(value)}, {need}: {_verdict_word(ok)}",
            value=value,
            threshold=threshold,
        )
    ]


def _compare(check: Check, measure: float, threshold: float) -> bool:
    if math.isnan(measure):
        return False
    return measure >= threshold if check.direction == "higher" else measure <= threshold


def _sign(check: Check) -> str:
    return "≥" if check.direction == "higher" else "≤"


def best_of(
    baselines: Mapping[str, Values], slice_name: str, metric: str, direction: Direction
) -> tuple[str, Values]:
    """The baseline best on ``metric`` in ``slice_name`` (the highest when higher is
    better): its name and values. Baselines without the metric there are passed over."""
    sign = 1.0 if direction == "higher" else -1.0
    scored = [
        (sign * v, name)
        for name, values in baselines.items()
        if not math.isnan(v := values.get(slice_name, {}).get(metric, math.nan))
    ]
    if not scored:
        name = next(iter(baselines))
        return name, baselines[name]
    name = max(scored, key=lambda t: t[0])[1]  # the first listed wins a tie
    return name, baselines[name]


def _baseline_outcome(
    check: Check, label: str, value: float, name: str, baseline: Values, threshold: float
) -> Outcome:
    base = baseline.get(check.slice, {}).get(check.metric, math.nan)
    lift = _rel(value, base) if not (math.isnan(value) or math.isnan(base)) else math.nan
    ok = _compare(check, lift, threshold)
    return Outcome(
        "baseline",
        check.metric,
        check.slice,
        ok,
        f"{label} {_num(value)} vs {name} {_num(base)}: {_pct(lift)}, "
        f"needs {_sign(check)} {_pct(threshold)}: {_verdict_word(ok)}",
        value=value,
        reference=base,
        threshold=threshold,
    )


def _change_outcomes(
    check: Check,
    label: str,
    value: float,
    champion: Values,
    interval: Interval | None,
    confidence: float,
) -> list[Outcome]:
    ref = champion.get(check.slice, {}).get(check.metric, math.nan)
    diff = value - ref
    out = []
    # the interval bound that must clear the threshold: the worse end in the check's direction
    bound = None
    if check.use_ci and interval is not None:
        bound = interval.low if check.direction == "higher" else interval.high
    level = f"{confidence * 100:g}%"
    for kind, threshold in (("absolute", check.absolute), ("relative", check.relative)):
        if threshold is None:
            continue
        if kind == "relative":
            shown, measure = _pct(_rel(value, ref)), _rel(value, ref)
            need = _pct(threshold)
            if bound is not None and interval is not None:
                measure = _rel(ref + bound, ref)
                ci_text = f" ({level} CI {_pct(_rel(ref + interval.low, ref))} to {_pct(_rel(ref + interval.high, ref))})"
        else:
            shown, measure = f"{diff:+.4f}", diff
            need = f"{threshold:+.4f}"
            if bound is not None and interval is not None:
                measure = bound
                ci_text = f" ({level} CI {interval.low:+.4f} to {interval.high:+.4f})"
        ok = _compare(check, measure, threshold)
        if bound is not None:
            end = "lower" if check.direction == "higher" else "upper"
            rule = f"the CI's {end} bound needs {_sign(check)} {need}"
            text = f"{label} {_num(value)} vs champion {_num(ref)}: {shown}{ci_text}, {rule}"
        else:
            text = f"{label} {_num(value)} vs champion {_num(ref)}: {shown}, needs {_sign(check)} {need}"
        if check.use_ci and interval is None:
            text += " (no interval for this metric: judged on the point estimate)"
        out.append(
            Outcome(
                "change",
                check.metric,
                check.slice,
                ok,
                f"{text}: {_verdict_word(ok)}",
                value=value,
                reference=ref,
                threshold=threshold,
                ci=None if interval is None else (interval.low, interval.high),
            )
        )
    return out
