"""The promotion gate and the bootstrap: hand-made metric inputs, exact reasons."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import ConfigError
from pipelines.evaluation.bootstrap import Interval, bootstrap_means
from pipelines.evaluation.evaluate import EvaluateConfig
from pipelines.evaluation.gate import Check, GateConfig, judge

POP = {"all": {"ndcg@10": 0.250, "recall@10": 0.20}, "new_users": {"ndcg@10": 0.10}}


def values(ndcg: float, recall: float = 0.30, new: float = 0.12) -> dict[str, dict[str, float]]:
    return {"all": {"ndcg@10": ndcg, "recall@10": recall}, "new_users": {"ndcg@10": new}}


def test_blessed_with_a_reason_per_check() -> None:
    cfg = GateConfig(
        [Check("ndcg@10", min=0.05, relative=0.01), Check("recall@10", absolute=-0.01)]
    )
    j = judge(cfg, values(0.412), popularity=POP, champion=values(0.398, recall=0.305))
    assert j.blessed
    assert [o.reason for o in j.outcomes] == [
        "ndcg@10 0.412, needs ≥ 0.0500: pass",
        "ndcg@10 0.412 vs champion 0.398: +3.5%, needs ≥ +1.0%: pass",
        "recall@10 0.300 vs champion 0.305: -0.0050, needs ≥ -0.0100: pass",
    ]
    assert [o.kind for o in j.outcomes] == ["value", "change", "change"]
    assert j.notes == []


def test_not_blessed_when_any_check_fails() -> None:
    cfg = GateConfig([Check("ndcg@10", over_popularity=0.0, relative=0.01)])
    j = judge(cfg, values(0.400), popularity=POP, champion=values(0.398))
    assert not j.blessed
    assert [o.passed for o in j.outcomes] == [True, False]
    assert j.outcomes[0].reason == "ndcg@10 0.400 vs popularity 0.250: +60.0%, needs ≥ +0.0%: pass"
    assert j.outcomes[1].reason == "ndcg@10 0.400 vs champion 0.398: +0.5%, needs ≥ +1.0%: fail"
    low = judge(cfg, values(0.2), popularity=POP, champion=None)
    assert not low.blessed
    assert low.outcomes[0].reason.endswith("-20.0%, needs ≥ +0.0%: fail")


def test_no_champion_means_value_thresholds_only_and_says_so() -> None:
    cfg = GateConfig([Check("ndcg@10", min=0.3, max=0.9, relative=0.5)])
    j = judge(cfg, values(0.412), popularity=POP, champion=None)
    assert j.blessed
    assert [o.kind for o in j.outcomes] == ["value"]
    assert j.outcomes[0].reason == "ndcg@10 0.412, needs between 0.300 and 0.900: pass"
    assert j.notes == [
        "no champion yet: change thresholds against a champion were skipped; "
        "value and baseline thresholds only"
    ]


def test_change_thresholds_in_both_directions() -> None:
    # lower is better: the change must be <= the threshold
    lower = GateConfig([Check("ndcg@10", relative=-0.05, direction="lower")])
    assert judge(lower, values(0.30), popularity=POP, champion=values(0.40)).blessed  # -25%
    worse = judge(lower, values(0.39), popularity=POP, champion=values(0.40))
    assert not worse.blessed
    assert worse.outcomes[0].reason == "ndcg@10 0.390 vs champion 0.400: -2.5%, needs ≤ -5.0%: fail"
    # higher is better with a negative allowance: at most 0.02 worse
    allowance = GateConfig([Check("ndcg@10", absolute=-0.02)])
    assert judge(allowance, values(0.385), popularity=POP, champion=values(0.40)).blessed
    assert not judge(allowance, values(0.375), popularity=POP, champion=values(0.40)).blessed
    # a champion at 0: any gain is an infinite relative change
    up = judge(
        GateConfig([Check("ndcg@10", relative=0.1)]),
        values(0.01),
        popularity=POP,
        champion=values(0.0),
    )
    assert up.blessed and "+inf%" in up.outcomes[0].reason


def test_ci_checks_judge_the_interval_bound() -> None:
    cfg = GateConfig([Check("ndcg@10", absolute=0.0, use_ci=True)])
    diff = {("all", "ndcg@10"): Interval(0.014, -0.002, 0.030)}
    j = judge(cfg, values(0.412), popularity=POP, champion=values(0.398), differences=diff)
    assert not j.blessed  # the mean gain is positive but the interval reaches below 0
    assert j.outcomes[0].reason == (
        "ndcg@10 0.412 vs champion 0.398: +0.0140 (95% CI -0.0020 to +0.0300), "
        "the CI's lower bound needs ≥ +0.0000: fail"
    )
    diff = {("all", "ndcg@10"): Interval(0.014, 0.004, 0.030)}
    assert judge(
        cfg, values(0.412), popularity=POP, champion=values(0.398), differences=diff
    ).blessed


def test_small_or_missing_slices_are_skipped_not_failed() -> None:
    cfg = GateConfig(
        [Check("ndcg@10", slice="new_users", min=0.5), Check("ndcg@10", slice="segment=9", min=0.5)]
    )
    j = judge(
        cfg,
        values(0.4),
        popularity=POP,
        champion=None,
        slice_users={"new_users": 12},
        min_slice_users=30,
    )
    assert j.blessed
    assert [o.passed for o in j.outcomes] == [None, None]
    assert (
        j.outcomes[0].reason
        == "ndcg@10 (new_users): skipped, only 12 user(s) in the slice, 30 needed"
    )
    assert "no slice 'segment=9'" in j.outcomes[1].reason
    j = judge(
        cfg,
        values(0.4),
        popularity=POP,
        champion=None,
        slice_users={"new_users": 40},
        min_slice_users=30,
    )
    assert not j.blessed
    assert j.outcomes[0].reason == "ndcg@10 (new_users) 0.120, needs ≥ 0.500: fail"


def test_gate_config_from_toml_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "gate.toml"
    good.write_text(
        '[evaluate]\nk = [10, 20]\n\n[[gate.checks]]\nmetric = "ndcg@20"\nmin = 0.1\n\n'
        '[[gate.checks]]\nmetric = "coverage@10"\nabsolute = -0.05\nuse_ci = true\n'
    )
    cfg = EvaluateConfig.from_toml(good)
    assert cfg.gate.checks == [
        Check("ndcg@20", min=0.1),
        Check("coverage@10", absolute=-0.05, use_ci=True),
    ]
    assert cfg.evaluate.k == [10, 20]
    cases = {
        '[[gate.checks]]\nmetric = "ndcg@10"\nminimum = 1\n': r"unknown check setting\(s\) \['minimum'\]",
        '[[gate.checks]]\nmetric = "auc@10"\nmin = 1\n': "'auc@10' is not NAME@K",
        '[[gate.checks]]\nmetric = "ndcg@10"\n': "set at least one of",
        '[[gate.checks]]\nmetric = "ndcg@50"\nmin = 0.1\n': r"k=50 is not among \[evaluate\] k",
        '[[gate.checks]]\nmetric = "ndcg@10"\nmin = 0.1\ndirection = "up"\n': "direction must be",
        "[gates]\n": r"unknown table\(s\) \['gates'\]",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            EvaluateConfig.from_toml(bad)


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    true_mean, hits, trials = 1.0, 0, 300
    for t in range(trials):
        sample = rng.exponential(true_mean, size=200)
        (iv,) = bootstrap_means(sample, draws=500, confidence=0.95, seed=t)
        hits += iv.low <= true_mean <= iv.high
    assert 0.91 <= hits / trials <= 0.985  # nominal 0.95


def test_paired_bootstrap_of_a_difference_and_missing_values() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(size=1_000)
    b = a - 0.01 + rng.normal(0, 0.001, size=1_000)  # always about 0.01 better
    diff, alone = bootstrap_means(np.column_stack([a - b, a]), draws=300, seed=0)
    assert diff.low > 0.0099 and diff.high < 0.0101  # paired: tight around +0.01
    assert alone.high - alone.low > 0.02  # one model alone: wide
    x = np.array([[1.0, np.nan], [3.0, 5.0]])
    first, second = bootstrap_means(x, draws=200, seed=0)
    assert first.mean == pytest.approx(2.0) and second.mean == pytest.approx(5.0)
    assert second.low == pytest.approx(5.0) and second.high == pytest.approx(5.0)


def test_an_evaluation_too_small_to_judge_does_not_bless() -> None:
    values = {"all": {"ndcg@10": 0.5}}
    cfg = GateConfig([Check("ndcg@10", min=0.1)])
    small = judge(cfg, values, popularity=values, champion=None, slice_users={"all": 52})
    assert not small.blessed
    (size,) = [o for o in small.outcomes if o.kind == "size"]
    assert size.reason == (
        "too few users to judge: 52 in the evaluation set, 100 needed ([gate] min_users); "
        "their intervals are too wide to tell models apart: fail"
    )
    allowed = replace(cfg, allow_few_users=True, min_users=60)
    ok = judge(allowed, values, popularity=values, champion=None, slice_users={"all": 52})
    assert ok.blessed and any("judged anyway" in n for n in ok.notes)
    enough = judge(cfg, values, popularity=values, champion=None, slice_users={"all": 100})
    assert enough.blessed and not [o for o in enough.outcomes if o.kind == "size"]


def test_a_wide_interval_is_flagged() -> None:
    values = {"all": {"ndcg@10": 0.10}}
    cfg = GateConfig([Check("ndcg@10", min=0.01)])
    wide = {("all", "ndcg@10"): Interval(0.10, 0.05, 0.16)}
    narrow = {("all", "ndcg@10"): Interval(0.10, 0.09, 0.11)}
    flagged = judge(cfg, values, popularity=values, champion=None, intervals=wide)
    assert flagged.notes == [
        "wide interval: ndcg@10 0.1000 [0.0500, 0.1600] spans 110% of its value (more than 50%)"
    ]
    assert judge(cfg, values, popularity=values, champion=None, intervals=narrow).notes == []
    with pytest.raises(ConfigError, match="min_users must be >= 1"):
        GateConfig(min_users=0)


BUY_AGAIN = {"all": {"ndcg@10": 0.310, "recall@10": 0.25}, "new_users": {"ndcg@10": 0.10}}
SOURCE = {"all": {"ndcg@10": 0.290, "recall@10": 0.28}, "new_users": {"ndcg@10": 0.05}}
BASELINES = {"popularity": POP, "buy-again + popularity": BUY_AGAIN, "best source (als)": SOURCE}


def test_over_baselines_judges_against_the_best_simple_baseline() -> None:
    cfg = GateConfig([Check("ndcg@10", over_baselines=0.0)])
    # above popularity (0.25) and the best source (0.29), below buy-again (0.31): refused
    j = judge(cfg, values(0.300), popularity=POP, baselines=BASELINES, champion=None)
    assert not j.blessed
    assert j.outcomes[0].reason == (
        "ndcg@10 0.300 vs best baseline (buy-again + popularity) 0.310: -3.2%, needs ≥ +0.0%: fail"
    )
    assert j.outcomes[0].reference == 0.310
    ok = judge(cfg, values(0.320), popularity=POP, baselines=BASELINES, champion=None)
    assert ok.blessed
    # per slice, the best baseline of that slice: popularity and buy-again tie on new users,
    # the first listed is named
    new = GateConfig([Check("ndcg@10", slice="new_users", over_baselines=-0.05)])
    j = judge(new, values(0.400, new=0.096), popularity=POP, baselines=BASELINES, champion=None)
    assert j.blessed
    assert "vs best baseline (popularity) 0.100: -4.0%" in j.outcomes[0].reason
    # lower-is-better metrics pick the lowest baseline
    low = {"a": {"all": {"ndcg@10": 0.2}}, "b": {"all": {"ndcg@10": 0.1}}}
    j = judge(
        GateConfig([Check("ndcg@10", over_baselines=0.0, direction="lower")]),
        {"all": {"ndcg@10": 0.15}},
        popularity=low["a"],
        baselines=low,
        champion=None,
    )
    assert "best baseline (b)" in j.outcomes[0].reason and not j.blessed


def test_the_default_gate_never_blesses_a_model_below_buy_again() -> None:
    cfg = GateConfig()
    champion, challenger = values(0.280), values(0.305)
    for v in (champion, challenger):
        v["all"]["coverage@10"] = 0.5
    j = judge(cfg, challenger, popularity=POP, baselines=BASELINES, champion=champion)
    assert not j.blessed  # +9% over the champion, +22% over popularity, below buy-again
    failed = [o for o in j.outcomes if o.passed is False]
    assert [o.kind for o in failed] == ["baseline"]
    assert "buy-again + popularity" in failed[0].reason
    # without the baselines, only popularity is known: the same model passes
    assert judge(cfg, challenger, popularity=POP, champion=champion).blessed


def test_a_check_needs_a_threshold_and_over_baselines_is_one() -> None:
    assert Check("ndcg@10", over_baselines=0.0).over_baselines == 0.0
    with pytest.raises(ConfigError, match="over_baselines"):
        Check("ndcg@10")
