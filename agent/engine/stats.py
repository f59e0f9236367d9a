"""Latency statistics: the one implementation every runtime, the native harness and the gates share.

Percentiles use linear interpolation between order statistics (numpy's default, what spreadsheets and pandas
report). Their confidence intervals are distribution-free: the interval between two order statistics whose
ranks come from the binomial distribution of how many samples fall below the true quantile. A percentile is
*resolved* only when such an interval exists at the requested confidence, which needs a minimum number of
samples (p50: 6, p90: 36, p95: 72, p99: 368 at 95%): that is the validity rule.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Optional, Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95
# A regression verdict is two one-sided tests at 5% (TOST, as in equivalence testing): "fail" needs the 90%
# interval's low end above 1 (slower, at 95% confidence), "pass" its high end within the allowance (not slower than
# allowed, at 95% confidence). Identical builds then fail at most 5% of the time: the goal, and no more.
DECISION_CONFIDENCE = 0.90


def _binomial_cdf(n: int, q: float) -> np.ndarray:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, q), computed in log space (stable for large n)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    log_choose = np.concatenate(([0.0], np.cumsum(np.log((n - k + 1) / k))))
    ks = np.arange(n + 1, dtype=np.float64)
    log_pmf = log_choose + ks * math.log(q) + (n - ks) * math.log1p(-q)
    pmf = np.exp(log_pmf - log_pmf.max())
    pmf /= pmf.sum()
    return np.cumsum(pmf)


def quantile_ci_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> Optional[tuple[int, int]]:
    """1-based ranks (l, u) with P(X_(l) <= quantile_q <= X_(u)) >= confidence, or None if n is too small."""
    if n < 2 or not 0 < q < 1:
        return None
    alpha = 1.0 - confidence
    cdf = _binomial_cdf(n, q)  # cdf[k] = P(B <= k)
    # Lower rank: the largest l with P(B <= l-1) <= alpha/2.
    below = np.nonzero(cdf[: n] <= alpha / 2)[0]
    # Upper rank: the smallest u with P(B <= u-1) >= 1 - alpha/2.
    above = np.nonzero(cdf[: n] >= 1 - alpha / 2)[0]
    if below.size == 0 or above.size == 0:
        return None
    return int(below[-1]) + 1, int(above[0]) + 1


def min_samples(q: float, confidence: float = CONFIDENCE) -> int:
    """Fewest samples for which quantile q has a two-sided distribution-free interval."""
    alpha = 1.0 - confidence
    tail = max(q, 1 - q)
    return math.ceil(math.log(alpha / 2) / math.log(tail))


def percentile(sorted_values: np.ndarray, pct: float) -> float:
    return float(np.percentile(sorted_values, pct))


def percentile_of(values: np.ndarray, pct: float) -> float:
    """``percentile`` of values in any order (a slice of a run, such as one window of a sustained run)."""
    return percentile(np.sort(np.asarray(values, dtype=np.float64)), pct)


def summarize(latencies_ns: Sequence[int], wall_ns: Optional[int] = None,
              confidence: float = CONFIDENCE) -> dict:
    """Statistics of one measured phase, in milliseconds. ``wall_ns`` is the phase's wall time, from the
    first start to the last end (throughput uses it, so loop overhead counts against throughput)."""
    values = np.sort(np.asarray(latencies_ns, dtype=np.float64)) / 1e6
    n = int(values.size)
    if n == 0:
        raise ValueError("no latency samples to summarize")
    summary: dict = {
        "count": n,
        "min_ms": float(values[0]),
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std(ddof=1)) if n > 1 else 0.0,
        "max_ms": float(values[-1]),
    }
    ci: dict = {}
    resolved: dict = {}
    for pct in PERCENTILES:
        key = f"p{pct}"
        summary[f"{key}_ms"] = percentile(values, pct)
        ranks = quantile_ci_ranks(n, pct / 100, confidence)
        ci[key] = [float(values[ranks[0] - 1]), float(values[ranks[1] - 1])] if ranks else None
        resolved[key] = ranks is not None
    wall_s = (wall_ns / 1e9) if wall_ns else float(values.sum()) / 1e3
    summary["throughput_ips"] = n / wall_s if wall_s > 0 else None
    summary["ci_level"] = confidence
    summary["percentile_ci_ms"] = ci
    summary["p90_ci_ms"] = ci["p90"]
    summary["resolved"] = resolved
    return summary


def verdict(summary: dict, reached_min_runs: bool = True, reached_min_duration: bool = True,
            confidence: float = CONFIDENCE) -> dict:
    """Whether the run had enough samples for every percentile it reports and stayed stable (its ``interval``:
    no drift), with the reasons if not; ``warnings`` for what the interval already says (a noisy machine)."""
    interval = summary.get("interval") or {}
    reasons = stability_reasons(interval) if interval else []
    for key, ok in summary["resolved"].items():
        if not ok:
            need = min_samples(int(key[1:]) / 100, confidence)
            reasons.append(f"{key} needs at least {need} samples for a {confidence:.0%} interval; "
                           f"the run has {summary['count']}")
    if not reached_min_runs:
        reasons.append("max duration reached before the minimum number of runs")
    if not reached_min_duration:
        reasons.append("max duration reached before the minimum duration")
    return {"valid": not reasons, "reasons": reasons,
            "warnings": stability_warnings(interval) if interval else []}


# ---------------------------------------------------------------- between-run variation
#
# Latency samples of one run are not independent: noise comes in bursts of seconds (a neighbour on the host, a
# clock change, throttling, a migration to a little core), so an interval from one run's samples says how well that
# run was measured, not where the next run will land. Everything below works on *units*: the repeats of a run
# (each a fresh child process), or, for a run of one repeat, consecutive batches of its samples (batch means,
# which allow for autocorrelation within the batch length). A percentile is computed per unit, and intervals come
# from the spread between units, on the log scale (latency varies multiplicatively; a ratio's interval stays
# positive), with Student's t for the few units a run has.

MIN_BATCHES = 4  # a single run is cut into at most 10 batches, and at least this many, or its interval is None
MAX_BATCHES = 10
DRIFT_WARN_PCT = 10.0  # latency moving more than this between the first and the last quarter of a run
SPREAD_WARN_PCT = 25.0  # repeats (or batches) whose p50s differ more than this


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (bisection on t_cdf: exact to 1e-9, no SciPy on a board)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-10:
            break
    return (low + high) / 2.0


def units_of(per_repeat_ns: Sequence[Sequence[int]]) -> tuple[str, list[np.ndarray]]:
    """The units intervals come from: the repeats when there are two or more; else consecutive batches of the
    single run (in run order), as many as the samples allow up to MAX_BATCHES."""
    repeats = [np.asarray(r, dtype=np.float64) / 1e6 for r in per_repeat_ns if len(r)]
    if len(repeats) >= 2:
        return "between-repeats", repeats
    if not repeats:
        return "batch-means", []
    samples = repeats[0]
    batches = min(MAX_BATCHES, samples.size // min_samples(0.5))
    return "batch-means", [part for part in np.array_split(samples, batches)] if batches >= MIN_BATCHES else []


def log_interval(values: Sequence[float], confidence: float = CONFIDENCE, rerun: bool = False
                 ) -> Optional[tuple[float, float, float]]:
    """(center, low, high) of positive values on the log scale: the geometric mean and a t interval for it, or with
    ``rerun`` for where the geometric mean of another set of as many units would land (a prediction interval:
    sqrt(2) wider). None with fewer than two values."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    n = logs.size
    if n < 2 or not np.all(np.isfinite(logs)):
        return None
    center, spread = float(logs.mean()), float(logs.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * spread * math.sqrt((2.0 if rerun else 1.0) / n)
    return math.exp(center), math.exp(center - half), math.exp(center + half)


def drift_pct(latencies_ms: np.ndarray) -> Optional[float]:
    """How far latency moved during a run (samples in run order): median of the last quarter against the first."""
    quarter = latencies_ms.size // 4
    if quarter < 3:
        return None
    first, last = float(np.median(latencies_ms[:quarter])), float(np.median(latencies_ms[-quarter:]))
    return (last / first - 1.0) * 100.0 if first > 0 else None


def interval_summary(per_repeat_latencies_ns: Sequence[Sequence[int]], confidence: float = CONFIDENCE) -> dict:
    """The report's ``stats.interval``: for each percentile, the estimate (the geometric mean of the units'
    percentiles; ``pooled``: the percentile of all samples), the per-unit values, a confidence interval from the
    spread between units (``ci``) and the range an identical rerun's estimate is expected in (``rerun``); plus the
    run's drift and the spread between its units. Units are the repeats, or batches of a single run
    (docs/report.md, "Intervals")."""
    method, units = units_of(per_repeat_latencies_ns)
    pooled = np.sort(np.concatenate([np.asarray(r, dtype=np.float64) for r in per_repeat_latencies_ns
                                     if len(r)])) / 1e6 if any(len(r) for r in per_repeat_latencies_ns) else None
    result: dict = {"method": method, "confidence": confidence, "units": len(units)}
    for pct in PERCENTILES:
        key = f"p{pct}_ms"
        if pooled is None:
            result[key] = None
            continue
        per_unit = [percentile_of(u, pct) for u in units]
        ci, rerun = log_interval(per_unit, confidence), log_interval(per_unit, confidence, rerun=True)
        # The estimate is the typical unit's percentile (geometric mean), what the interval is about and what
        # the gates compare; the pooled percentile of all samples is kept beside it.
        result[key] = {"estimate": ci[0] if ci else percentile(pooled, pct), "pooled": percentile(pooled, pct),
                       "per_unit": per_unit, "ci": [ci[1], ci[2]] if ci else None,
                       "rerun": [rerun[1], rerun[2]] if rerun else None}
    in_order = np.concatenate([np.asarray(r, dtype=np.float64) for r in per_repeat_latencies_ns]) / 1e6 \
        if pooled is not None else np.empty(0)
    result["drift_pct"] = drift_pct(in_order)
    medians = [float(np.median(u)) for u in units]
    result["unit_spread_pct"] = (max(medians) / min(medians) - 1.0) * 100.0 if medians and min(medians) > 0 else None
    return result


def stability_reasons(interval: dict) -> list[str]:
    """Why a run's numbers would not repeat (validity reasons): its latency drifted during the run, or a single
    run too short for an interval from batches."""
    reasons = []
    drift = interval.get("drift_pct")
    if drift is not None and abs(drift) > DRIFT_WARN_PCT:
        reasons.append(f"latency drifted {drift:+.0f}% during the run (first quarter against the last); rerun with "
                       f"--repeats, on a quieter machine, or after --max-start-temp")
    if interval.get("method") == "batch-means":
        p90 = interval.get("p90_ms") or {}
        if not p90.get("ci"):
            reasons.append("too few samples for an interval from batches: run longer or with --repeats")
    return reasons


def stability_warnings(interval: dict) -> list[str]:
    """What a user should know but the interval already accounts for: units that disagree (a noisy machine)."""
    spread = interval.get("unit_spread_pct")
    if spread is None or spread <= SPREAD_WARN_PCT:
        return []
    what = "repeats" if interval.get("method") == "between-repeats" else "parts of the run"
    return [f"the {what} differ by up to {spread:.0f}% in p50: the machine was noisy (the interval is wide)"]


def ratio_interval(baseline: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE,
                   paired: bool = False) -> Optional[dict]:
    """candidate / baseline of per-unit values (e.g. each repeat's p90), with a t interval on the log scale:
    paired (the two were interleaved: unit i of each ran side by side, so the difference cancels shared noise) or
    Welch's (independent runs). None when a side has fewer than two units (or paired lengths differ)."""
    b, c = np.log(np.asarray(baseline, dtype=np.float64)), np.log(np.asarray(candidate, dtype=np.float64))
    if b.size < 2 or c.size < 2 or not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        return None
    if paired:
        if b.size != c.size:
            return None
        diffs = c - b
        diff, se, df = float(diffs.mean()), float(diffs.std(ddof=1)) / math.sqrt(diffs.size), diffs.size - 1.0
    else:
        vb, vc = float(b.var(ddof=1)) / b.size, float(c.var(ddof=1)) / c.size
        diff, se = float(c.mean() - b.mean()), math.sqrt(vb + vc)
        df = ((vb + vc) ** 2 / (vb ** 2 / (b.size - 1) + vc ** 2 / (c.size - 1)) if vb + vc > 0
              else b.size + c.size - 2.0)  # Welch-Satterthwaite
    half = t_quantile(0.5 + confidence / 2, df) * se
    return {"ratio": math.exp(diff), "ci": [math.exp(diff - half), math.exp(diff + half)], "log_se": se, "df": df,
            "method": "paired t on log" if paired else "Welch t on log", "n_baseline": int(b.size),
            "n_candidate": int(c.size)}


POOLING_ALPHA = 0.25  # the runs of a side count as differing when an F test says so at this level


def f_sf(f: float, df1: float, df2: float) -> float:
    """P(F > f) for Fisher's F distribution with (df1, df2) degrees of freedom."""
    if f <= 0:
        return 1.0
    return _incomplete_beta(df2 / 2.0, df1 / 2.0, df2 / (df2 + df1 * f))


def _satterthwaite(variance: float, pieces: Sequence[tuple[float, float]], fallback: float) -> float:
    """Welch-Satterthwaite degrees of freedom of a variance that is the sum of ``pieces`` (each a mean square times
    its coefficient, with that mean square's degrees of freedom); at least 1, ``fallback`` when every piece is 0."""
    squares = sum(piece ** 2 / df for piece, df in pieces)
    return max(variance ** 2 / squares, 1.0) if squares > 0 else fallback


def _run_components(sides: Sequence[Sequence[np.ndarray]]) -> Optional[tuple]:
    """The two levels of runs of units (log values), over one or more sides: (within-run variance, its degrees of
    freedom, the mean square of run means about their side's mean, its degrees of freedom, mean 1/n of the runs in
    it, the between-run variance). The between-run variance is the method-of-moments estimate, floored at 0, and 0
    when the runs do not differ more than their repeats explain (a preliminary F test at POOLING_ALPHA, Bancroft's
    "sometimes pool" rule: two or three runs' between-run estimate is too rough to pay for otherwise). None when
    either level has no degrees of freedom."""
    every = [r for side in sides for r in side]
    df_within = float(sum(r.size - 1 for r in every))
    df_between = float(sum(len(side) - 1 for side in sides))
    if df_between < 1 or df_within < 1:
        return None
    within = float(sum(((r - r.mean()) ** 2).sum() for r in every)) / df_within
    spread_runs = [side for side in sides if len(side) > 1]
    mean_square = float(sum((r.mean() - float(np.mean([x.mean() for x in side]))) ** 2
                            for side in spread_runs for r in side)) / df_between
    inverse_n = float(np.mean([1.0 / r.size for side in spread_runs for r in side]))
    expected = within * inverse_n
    shows = expected <= 0 or f_sf(mean_square / expected, df_between, df_within) < POOLING_ALPHA
    between = max(mean_square - expected, 0.0) if shows else 0.0
    return within, df_within, mean_square, df_between, inverse_n, between


def rerun_interval(runs: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> Optional[dict]:
    """Where another run's estimate (the geometric mean of its units) is expected, from this configuration's runs
    on this machine, the newest last (each its units' values): the newest run's estimate, widened by the between-run
    variance the runs show. Var(log another run - log this one) = 2 between + within (1/n + 1/n). None when the runs
    do not show between-run variation beyond their repeats (the run's own rerun interval then stands) or are too
    few."""
    logs = [np.log(np.asarray(r, dtype=np.float64)) for r in runs if len(r)]
    if len(logs) < 3 or not all(np.all(np.isfinite(r)) for r in logs):
        return None
    parts = _run_components([logs])
    if parts is None or not parts[5]:
        return None
    within, df_within, mean_square, df_between, inverse_n, between = parts
    n = logs[-1].size
    variance = 2.0 * between + 2.0 * within / n
    pieces = [(2.0 * mean_square, df_between), ((2.0 / n - 2.0 * inverse_n) * within, df_within)]
    dof = _satterthwaite(variance, pieces, df_within)
    center = float(logs[-1].mean())
    half = t_quantile(0.5 + confidence / 2, dof) * math.sqrt(variance)
    return {"rerun": [math.exp(center - half), math.exp(center + half)], "between_run_sd": math.sqrt(between),
            "runs": len(logs), "df": dof}


def runs_ratio_interval(baseline_runs: Sequence[Sequence[float]], candidate_runs: Sequence[Sequence[float]],
                        confidence: float = CONFIDENCE) -> Optional[dict]:
    """candidate / baseline when a side holds several runs, each with its units (a release measured on several
    days, each run with its repeats): a two-level interval. Repeats of one run share that run's level (the machine's
    state for its minutes), so a run's units are not independent of each other, and one run of the candidate
    against the baseline's runs can be off by the whole between-run variation. The two levels come from
    _run_components; each side's estimate is the mean of its run means, and the interval's degrees of freedom come
    from Welch-Satterthwaite over the two parts. With one run per side the between-run part cannot
    be estimated: None (the caller falls back to ratio_interval on the units, and says so)."""
    sides = []
    for runs in (baseline_runs, candidate_runs):
        logs = [np.log(np.asarray(r, dtype=np.float64)) for r in runs if len(r)]
        if not logs or not all(np.all(np.isfinite(r)) for r in logs):
            return None
        sides.append(logs)
    parts = _run_components(sides)
    if parts is None:
        return None
    within, df_within, mean_square, df_between, inverse_n, between = parts
    side_means = [float(np.mean([r.mean() for r in side])) for side in sides]
    # Var(side mean) = between / k + within * mean(1/n_r) / k, per side; in terms of the two mean squares:
    coef_between = sum(1.0 / len(side) for side in sides)
    coef_within = sum(sum(1.0 / r.size for r in side) / len(side) ** 2 for side in sides)
    variance = coef_between * between + coef_within * within
    pieces = ([(coef_between * mean_square, df_between), ((coef_within - coef_between * inverse_n) * within,
                                                          df_within)]
              if between > 0 else [(coef_within * within, df_within)])
    dof = _satterthwaite(variance, pieces, df_within)
    se = math.sqrt(variance)
    diff = side_means[1] - side_means[0]
    half = t_quantile(0.5 + confidence / 2, dof) * se
    return {"ratio": math.exp(diff), "ci": [math.exp(diff - half), math.exp(diff + half)], "log_se": se, "df": dof,
            "method": "two-level t on log (runs, repeats)", "between_run_sd": math.sqrt(between),
            "within_run_sd": math.sqrt(within), "between_part": coef_between * between,
            "n_baseline": sum(r.size for r in sides[0]), "n_candidate": sum(r.size for r in sides[1]),
            "runs_baseline": len(sides[0]), "runs_candidate": len(sides[1])}


PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def _runs(side: Sequence) -> list[list[float]]:
    """A side given as its units (one run, or units measured together) or as its runs' units (a list per run)."""
    if len(side) and all(isinstance(x, (list, tuple, np.ndarray)) for x in side):
        return [list(map(float, run)) for run in side if len(run)]
    return [list(map(float, side))] if len(side) else []


def with_known_between_runs(ratio: dict, between_sd: float, df: float, runs: tuple[int, int],
                            confidence: float) -> dict:
    """A ratio of sides measured apart, widened by a between-run variation known from elsewhere (this machine's
    history of the configuration, agent/engine/history.py): each side's mean gains between / its runs; the degrees
    of freedom come from Welch-Satterthwaite over the ratio's own part and the history's."""
    extra = between_sd ** 2 * (1.0 / runs[0] + 1.0 / runs[1])
    own = ratio["log_se"] ** 2
    variance = own + extra
    dof = _satterthwaite(variance, [(own, ratio["df"]), (extra, df)], df)
    half = t_quantile(0.5 + confidence / 2, dof) * math.sqrt(variance)
    diff = math.log(ratio["ratio"])
    return {**ratio, "ci": [math.exp(diff - half), math.exp(diff + half)], "log_se": math.sqrt(variance), "df": dof,
            "between_part": extra, "between_run_sd": between_sd, "between_run_source": "history",
            "method": ratio["method"] + " + the run history's between-run variation"}


def regression_verdict(baseline: Sequence, candidate: Sequence, max_regression_pct: float,
                       confidence: float = DECISION_CONFIDENCE, paired: bool = False, min_units: int = 3,
                       between_runs: Optional[tuple[float, float]] = None) -> dict:
    """Three outcomes, on per-unit values (each repeat's p90, say) of a baseline and a candidate. A side is a list
    of its units, or a list of runs (a list of units each): with several runs on a side, the between-run variation
    is estimated and counts (runs_ratio_interval); a single run of the candidate then inherits the baseline's.

    - fail: the candidate is slower beyond the allowance (point ratio > 1 + allowance) AND really slower (the
      interval's low end above 1);
    - pass: the interval's high end is within the allowance (the candidate is not slower by more than allowed);
    each one-sided at (1 + confidence) / 2: the default 90% interval makes both 95% statements;
    - inconclusive: neither yet; ``needed_units`` estimates how many units per side would decide it, from the
      spread seen so far.
    Fewer than ``min_units`` on a side is inconclusive too. ``between_runs`` (sd on the log scale, degrees of freedom):
    how much runs of this configuration differ on this machine, from its history; used for sides measured apart
    whose own runs do not show it (one run a side, or runs that agree)."""
    threshold = 1.0 + max_regression_pct / 100.0
    base_runs, cand_runs = _runs(baseline), _runs(candidate)
    flat_base = [v for run in base_runs for v in run]
    flat_cand = [v for run in cand_runs for v in run]
    result: dict = {"max_regression_pct": max_regression_pct, "confidence": confidence, "min_units": min_units,
                    "n_baseline": len(flat_base), "n_candidate": len(flat_cand), "paired": paired,
                    "runs_baseline": len(base_runs), "runs_candidate": len(cand_runs)}
    short = max(min_units - len(flat_base), min_units - len(flat_cand), 0)
    ratio = None
    if not short:
        two_level = None if paired else runs_ratio_interval(base_runs, cand_runs, confidence)
        ratio = two_level or ratio_interval(flat_base, flat_cand, confidence, paired)
        if ratio and not paired and between_runs and between_runs[0] > 0 and not ratio.get("between_part"):
            ratio = with_known_between_runs(ratio, between_runs[0], between_runs[1],
                                            (len(base_runs), len(cand_runs)), confidence)
    if ratio is None:  # needed_units is always a total per side (here: the minimum)
        need = max(min_units, 2)
        return {**result, "verdict": INCONCLUSIVE, "needed_units": need,
                "reason": f"needs at least {min_units} repeats on each side (has {len(flat_base)} and "
                          f"{len(flat_cand)})"}
    low, high = ratio["ci"]
    result.update(ratio=ratio["ratio"], ratio_ci=ratio["ci"], change_pct=(ratio["ratio"] - 1) * 100,
                  method=ratio["method"], between_runs_measured="between_run_sd" in ratio or paired)
    if "between_run_sd" in ratio:
        result.update(between_run_sd=ratio["between_run_sd"], within_run_sd=ratio.get("within_run_sd"),
                      between_run_source=ratio.get("between_run_source", "runs"))
    said = f"{ratio['ratio'] - 1:+.1%} vs the baseline ({confidence:.0%} interval {low:.3f}-{high:.3f}x)"
    if ratio["ratio"] > threshold and low > 1.0:
        return {**result, "verdict": FAIL, "needed_units": 0,
                "reason": f"{said}, beyond the allowed {max_regression_pct:g}%"}
    if high <= threshold:
        return {**result, "verdict": PASS, "needed_units": 0,
                "reason": f"{said}, within the allowed {max_regression_pct:g}%"}
    need = _units_to_decide(ratio, threshold, confidence, len(flat_base), len(flat_cand), paired)
    return {**result, "verdict": INCONCLUSIVE, "needed_units": need,
            "reason": f"{ratio['ratio'] - 1:+.1%} vs the baseline, interval {low:.3f}-{high:.3f}x: cannot tell yet "
                      f"whether it is within the allowed {max_regression_pct:g}%; needs about {need} repeats per side"}


MAX_UNITS_ESTIMATE = 1000


def _units_to_decide(ratio: dict, threshold: float, confidence: float, n_base: int, n_cand: int,
                     paired: bool) -> int:
    """Units per side at which the interval, at the spread seen so far, would clear the nearer boundary. More
    repeats shrink only the within-run part of the standard error; the between-run part (two-level intervals)
    needs more runs, so when it alone keeps the interval open, no number of repeats decides it."""
    log_ratio = math.log(ratio["ratio"])
    gap = (math.log(threshold) - log_ratio) if ratio["ratio"] <= threshold else log_ratio
    n_now = min(n_base, n_cand)
    between = ratio.get("between_part", 0.0)
    within = max(ratio["log_se"] ** 2 - between, 0.0) * n_now  # the per-unit scale of the within-run part
    if gap <= 0 or within + between <= 0:
        return MAX_UNITS_ESTIMATE
    if "between_part" in ratio:  # two-level: the degrees of freedom come from the runs; solve for n
        room = (gap / t_quantile(0.5 + confidence / 2, ratio["df"])) ** 2 - between
        if room <= 0 or within / room >= MAX_UNITS_ESTIMATE:
            return MAX_UNITS_ESTIMATE
        return max(int(within / room) + 1, n_now + 1)
    # t is at least the normal quantile, so no n below this one decides it (and none when it is this large)
    start = int(within / (gap / NormalDist().inv_cdf(0.5 + confidence / 2)) ** 2)
    if start >= MAX_UNITS_ESTIMATE:
        return MAX_UNITS_ESTIMATE
    for n in range(max(n_now + 1, start), MAX_UNITS_ESTIMATE + 1):
        df = n - 1.0 if paired else 2.0 * n - 2.0
        if t_quantile(0.5 + confidence / 2, df) * math.sqrt(within / n) < gap:
            return n
    return MAX_UNITS_ESTIMATE
