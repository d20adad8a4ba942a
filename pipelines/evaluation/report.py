"""The reviewer's evidence: a self-contained ``report.html`` (plots inlined as PNG) and a
short ``summary.md`` (the body of the approval request).

Plots: headline metrics with their bootstrap intervals (challenger, champion, popularity),
the per-slice change of nDCG against the champion (or popularity without one), and the
distributions of per-user nDCG and of the models' recommendation scores.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.evaluation.bootstrap import Interval
from pipelines.evaluation.evalset import EvalConfig, EvalSet
from pipelines.evaluation.gate import Judgement, Outcome
from pipelines.evaluation.scoring import Comparison, Intervals, ModelScores
from pipelines.io import sha256_file, write_text
from pipelines.ranking.metrics import METRICS

COLORS = {"challenger": "#1f6feb", "champion": "#8250df", "popularity": "#9a9a9a"}
MARK = {True: "✅", False: "❌", None: "⏭"}


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _ci(iv: Interval | None, signed: bool = False) -> str:
    if iv is None or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return ""
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(iv.low)}, {f.format(iv.high)}]"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_bars(models: list[ModelScores], ivs: dict[str, Intervals], k: int) -> str:
    """Grouped bars of the accuracy metrics at ``k`` with the intervals as error bars."""
    plt = _pyplot()
    names = [f"{m}@{k}" for m in METRICS]
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for j, s in enumerate(models):
        vals = np.array([s.values["all"].get(n, np.nan) for n in names])
        err = None
        own = ivs.get(s.label, {})
        if own:
            lo = np.array([own[("all", n)].low if ("all", n) in own else np.nan for n in names])
            hi = np.array([own[("all", n)].high if ("all", n) in own else np.nan for n in names])
            err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        ax.bar(
            x + (j - (len(models) - 1) / 2) * width,
            vals,
            width,
            yerr=err,
            capsize=3,
            label=s.label,
            color=COLORS.get(s.label),
        )
    ax.set_xticks(x, names)
    ax.set_ylabel("mean over evaluation users")
    ax.set_title(f"Headline metrics at k={k} (bars: 95% bootstrap intervals)")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def slice_deltas(challenger: ModelScores, reference: ModelScores, metric: str) -> str:
    """Horizontal bars: challenger - reference per slice, with each slice's user count."""
    plt = _pyplot()
    names = [s for s in challenger.values if metric in challenger.values[s]]
    deltas = np.array(
        [challenger.values[s][metric] - reference.values[s].get(metric, np.nan) for s in names]
    )
    fig, ax = plt.subplots(figsize=(8.5, 0.35 * len(names) + 1.2))
    colors = ["#2da44e" if d >= 0 else "#cf222e" for d in np.nan_to_num(deltas)]
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(deltas), color=colors)
    labels = [f"{s} ({len(challenger.slices[s]):,} users)" for s in names]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"{metric}: challenger − {reference.label}")
    ax.set_title(f"Per-slice change of {metric} against the {reference.label}")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def distributions(models: list[ModelScores], metric: str) -> str:
    """Per-user ``metric`` histograms (left) and the models' top-k score histograms (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    bins = np.linspace(0, 1, 21)
    for s in models:
        values = s.slices["all"][metric].to_numpy(dtype=float)
        left.hist(
            values, bins=bins, histtype="step", lw=1.6, label=s.label, color=COLORS.get(s.label)
        )
    left.set_xlabel(f"per-user {metric}")
    left.set_ylabel("users")
    left.set_yscale("log")
    left.legend(frameon=False)
    left.set_title(f"Distribution of per-user {metric}")
    scored = [s for s in models if len(s.scores)]
    for s in scored:
        right.hist(
            s.scores, bins=40, histtype="step", lw=1.6, label=s.label, color=COLORS.get(s.label)
        )
    right.set_xlabel("ranker score of recommended items")
    right.set_title("Recommendation score distribution")
    if scored:
        right.legend(frameon=False)
    return _png(fig)


def _outcome_rows(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        word = {True: "pass", False: "fail", None: "skipped"}[o.passed]
        rows.append(
            f'<tr class="{word}"><td>{word}</td><td>{html.escape(o.kind)}</td>'
            f"<td>{html.escape(o.reason)}</td></tr>"
        )
    return "\n".join(rows)


def _headline_rows(names: list[str], cmp: Comparison) -> str:
    challenger, champion, popularity = cmp.challenger, cmp.champion, cmp.popularity
    own, champ_own, diff = cmp.own, cmp.champ_own, cmp.diff
    rows = []
    for n in names:
        c = challenger.values["all"].get(n)
        ch = None if champion is None else champion.values["all"].get(n)
        d = None if ch is None or c is None else c - ch
        rows.append(
            "<tr>"
            f"<td>{html.escape(n)}</td><td>{_fmt(c)} <small>{_ci(own.get(('all', n)))}</small></td>"
            f"<td>{_fmt(ch)} <small>{_ci(champ_own.get(('all', n)))}</small></td>"
            f"<td>{'–' if d is None else f'{d:+.4f}'} <small>{_ci(diff.get(('all', n)), True)}</small></td>"
            f"<td>{_fmt(popularity.values['all'].get(n))}</td></tr>"
        )
    return "\n".join(rows)


def _baseline_rows(cmp: Comparison, k: int) -> str:
    """One row per simple baseline: its nDCG, recall and hit rate at ``k`` (with the
    interval of nDCG) and the challenger's paired difference in nDCG."""
    key = f"ndcg@{k}"
    best, _ = cmp.best_baseline(key)
    rows = []
    for name, b in cmp.baselines.items():
        v = b.values["all"]
        diff = cmp.baseline_diff[name].get(("all", key))
        c = cmp.challenger.values["all"].get(key)
        d = "–" if c is None or v.get(key) is None else f"{c - v[key]:+.4f}"
        mark = " <small>(best)</small>" if name == best else ""
        rows.append(
            f"<tr><td>{html.escape(name)}{mark}</td>"
            f"<td>{_fmt(v.get(key))} <small>{_ci(cmp.baseline_own[name].get(('all', key)))}</small></td>"
            f"<td>{_fmt(v.get(f'recall@{k}'))}</td><td>{_fmt(v.get(f'hit_rate@{k}'))}</td>"
            f"<td>{d} <small>{_ci(diff, True)}</small></td></tr>"
        )
    return "\n".join(rows)


def _repeats_text(es: EvalSet) -> str:
    policy = es.repeat_policy
    mode = policy.get("repeats", es.config.get("repeats", "excluded"))
    if mode == "excluded":
        return "excluded: an item a shopper touched before the window never counts as a hit"
    if mode == "allowed":
        return "allowed: a re-bought item counts as a hit"
    allowed = sorted(
        c for c, p in policy.get("categories", {}).items() if p.get("repeats") == "allowed"
    )
    never = sorted(
        c for c, p in policy.get("categories", {}).items() if p.get("repeats") != "allowed"
    )
    shown = ", ".join(allowed[:8]) + (" …" if len(allowed) > 8 else "")
    return (
        f"auto (the candidates' policy): re-bought items count in {len(allowed)} top-level "
        f"categories ({html.escape(shown) or 'none'}), not in {len(never)}"
    )


def _slice_rows(cmp: Comparison, k: int, min_users: int) -> str:
    challenger, champion, popularity = cmp.challenger, cmp.champion, cmp.popularity
    rows = []
    for name, table in challenger.slices.items():
        few = " <small>(too few to judge)</small>" if len(table) < min_users else ""
        cells = [f"<td>{html.escape(name)}</td><td>{len(table):,}{few}</td>"]
        for m in ("ndcg", "recall", "hit_rate"):
            key = f"{m}@{k}"
            c = challenger.values[name].get(key)
            ch = None if champion is None else champion.values[name].get(key)
            p = popularity.values[name].get(key)
            delta = "" if ch is None or c is None else f" <small>({c - ch:+.4f})</small>"
            cells.append(f"<td>{_fmt(c)}{delta}</td><td>{_fmt(p)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa}.banner{padding:1rem;border-radius:6px;font-size:1.2rem;font-weight:600}
.blessed{background:#dafbe1;border:1px solid #2da44e}.rejected{background:#ffebe9;border:1px solid #cf222e}
tr.fail td{background:#fff5f5}tr.fail td:first-child{color:#cf222e;font-weight:600}tr.pass td:first-child{color:#1a7f37;font-weight:600}tr.skipped td{color:#57606a}small{color:#57606a}img{max-width:100%}
code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
"""


def render_html(es: EvalSet, cfg: EvalConfig, judgement: Judgement, cmp: Comparison) -> str:
    k = cfg.headline_k
    challenger, champion, popularity = cmp.challenger, cmp.champion, cmp.popularity
    models = cmp.models
    reference = champion if champion is not None else popularity
    accuracy = [f"{m}@{k}" for m in METRICS]
    beyond = [f"coverage@{k}", f"novelty@{k}", f"ild@{k}"]
    bars = metric_bars(models, {"challenger": cmp.own, "champion": cmp.champ_own}, k)
    deltas = slice_deltas(challenger, reference, f"ndcg@{k}")
    dists = distributions(models, f"ndcg@{k}")
    verdict = "BLESSED" if judgement.blessed else "NOT BLESSED"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in judgement.notes)
    champ_text = (
        "none (first model: value and baseline thresholds only)"
        if champion is None
        else f"<code>{html.escape(str(champion.uri))}</code>, trained until {html.escape(str(champion.train_until))}"
    )
    d = es.describe()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ShopML evaluation: {html.escape(str(challenger.uri))}</title>
<style>{_CSS}</style></head><body>
<h1>Offline evaluation of <code>{html.escape(str(challenger.uri))}</code></h1>
<div class="banner {"blessed" if judgement.blessed else "rejected"}">{verdict}: {sum(o.passed is True for o in judgement.outcomes)} passed, {sum(o.passed is False for o in judgement.outcomes)} failed, {sum(o.passed is None for o in judgement.outcomes)} skipped</div>
<ul>{notes}</ul>
<h2>Gate checks</h2>
<table><tr><th>result</th><th>kind</th><th>reason</th></tr>
{_outcome_rows(judgement.outcomes)}
</table>
<h2>Models and evaluation set</h2>
<table>
<tr><th>challenger</th><td><code>{html.escape(str(challenger.uri))}</code>, trained until {html.escape(str(challenger.train_until))}</td></tr>
<tr><th>champion</th><td>{champ_text}</td></tr>
<tr><th>baselines</th><td>popularity: items by shoppers who touched them before the window; buy-again + popularity: each shopper's items bought on two or more occasions, most often first, then popularity; the challenger's best single candidate source. Each skips what may not be shown again</td></tr>
<tr><th>repeats</th><td>{_repeats_text(es)}</td></tr>
<tr><th>evaluation set</th><td>hash <code>{d["hash"][:16]}</code> of snapshot <code>{d["snapshot_id"][:12]}</code>; window {es.start:%Y-%m-%d %H:%M} to {es.end:%Y-%m-%d %H:%M} UTC; {d["users"]:,} users ({d["new_users"]:,} new), {d["truth_rows"]:,} relevant (user, item) pairs</td></tr>
<tr><th>intervals</th><td>{cfg.confidence * 100:g}% percentile bootstrap over users, {cfg.bootstrap:,} draws; the difference is paired</td></tr>
</table>
<h2>Simple baselines at k={k}</h2>
<p>Scored on the same users and items; the last column is the challenger's paired difference in nDCG.</p>
<table><tr><th>baseline</th><th>ndcg [CI]</th><th>recall</th><th>hit rate</th><th>challenger − baseline [CI]</th></tr>
{_baseline_rows(cmp, k)}
</table>
<h2>Headline metrics at k={k}</h2>
<table><tr><th>metric</th><th>challenger [CI]</th><th>champion [CI]</th><th>difference [CI]</th><th>popularity</th></tr>
{_headline_rows(accuracy + beyond, cmp)}
</table>
<img alt="headline metrics with confidence intervals" src="data:image/png;base64,{bars}">
<h2>Slices</h2>
<p>nDCG, recall and hit rate at k={k} per slice (in brackets: challenger − champion).
Item slices judge only the truth items of that slice; user slices all of a user's truth.</p>
<table><tr><th>slice</th><th>users</th><th>ndcg challenger</th><th>ndcg popularity</th><th>recall challenger</th><th>recall popularity</th><th>hit rate challenger</th><th>hit rate popularity</th></tr>
{_slice_rows(cmp, k, cfg.min_slice_users)}
</table>
<img alt="per-slice deltas" src="data:image/png;base64,{deltas}">
<h2>Distributions</h2>
<img alt="score distributions" src="data:image/png;base64,{dists}">
<p><small>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by ShopML. Metric definitions: docs/evaluation.md.</small></p>
</body></html>
"""


def render_summary(
    es: EvalSet, cfg: EvalConfig, judgement: Judgement, cmp: Comparison, report_path: Path
) -> str:
    k = cfg.headline_k
    challenger, champion, own, diff = cmp.challenger, cmp.champion, cmp.own, cmp.diff
    verdict = "✅ BLESSED" if judgement.blessed else "❌ NOT BLESSED"
    champ = "none yet" if champion is None else f"`{champion.uri}`"
    lines = [
        f"## {verdict}: `{challenger.uri}`",
        "",
        f"Champion: {champ}. Evaluation set `{es.hash[:12]}` (snapshot `{es.snapshot_id[:12]}`, "
        f"window {es.start:%Y-%m-%d} to {es.end:%Y-%m-%d}, {len(es.users):,} users).",
        "",
        "| check | reason |",
        "|---|---|",
        *[f"| {MARK[o.passed]} | {o.reason} |" for o in judgement.outcomes],
        "",
        f"| metric@{k} | challenger [{cfg.confidence * 100:g}% CI] | champion | difference [CI] |",
        "|---|---|---|---|",
    ]
    for m in (*METRICS, "coverage"):
        n = f"{m}@{k}"
        c = challenger.values["all"].get(n)
        ch = None if champion is None else champion.values["all"].get(n)
        d = "–" if ch is None or c is None else f"{c - ch:+.4f} {_ci(diff.get(('all', n)), True)}"
        lines.append(f"| {m} | {_fmt(c)} {_ci(own.get(('all', n)))} | {_fmt(ch)} | {d} |")
    key = f"ndcg@{k}"
    lines += ["", f"| baseline | {key} | challenger − baseline [CI] |", "|---|---|---|"]
    for name, b in cmp.baselines.items():
        v = b.values["all"].get(key)
        c = challenger.values["all"].get(key)
        d = "–" if v is None or c is None else f"{c - v:+.4f}"
        lines.append(
            f"| {name} | {_fmt(v)} | {d} {_ci(cmp.baseline_diff[name].get(('all', key)), True)} |"
        )
    if champion is not None:
        changes = sorted(
            (challenger.values[s][key] - champion.values[s][key], s)
            for s in challenger.values
            if key in challenger.values[s] and s != "all"
        )
        worst = [f"{s} {v:+.4f}" for v, s in changes[:3] if math.isfinite(v)]
        if worst:
            lines += ["", f"Weakest slices ({key} vs champion): " + ", ".join(worst) + "."]
    if judgement.notes:
        lines += ["", *(f"- {n}" for n in judgement.notes)]
    lines += ["", f"Full report: {report_path}"]
    return "\n".join(lines) + "\n"


def write(
    folder: Path, es: EvalSet, cfg: EvalConfig, judgement: Judgement, cmp: Comparison
) -> dict[str, str]:
    """Write report.html and summary.md into ``folder``; return their sha256."""
    report = folder / "report.html"
    summary = folder / "summary.md"
    write_text(report, render_html(es, cfg, judgement, cmp))
    write_text(summary, render_summary(es, cfg, judgement, cmp, report.resolve()))
    return {"report.html": sha256_file(report), "summary.md": sha256_file(summary)}
