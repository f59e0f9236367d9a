"""Latency statistics: the one implementation every runtime, the native harness and the gates share.

Percentiles use linear interpolation between order statistics (numpy's default, what spreadsheets and pandas
report). Their confidence intervals are distribution-free: the interval between two order statistics whose
ranks come from the binomial distribution of how many samples fall below the true quantile. A percentile is
*resolved* only when such an interval exists at the requested confidence, which needs a minimum number of
samples (p50: 6, p90: 36, p95: 72, p99: 368 at 95%): that is the validity rule.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95


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


PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def regression_verdict(baseline: Sequence[float], candidate: Sequence[float], max_regression_pct: float,
                       confidence: float = CONFIDENCE, paired: bool = False, min_units: int = 3) -> dict:
    """Three outcomes, on per-unit values (each repeat's p90, say) of a baseline and a candidate:

    - fail: the candidate is slower beyond the allowance (point ratio > 1 + allowance) AND really slower (the
      interval's low end above 1);
    - pass: the interval's high end is within the allowance (the candidate is not slower by more than allowed);
    - inconclusive: neither yet; ``needed_units`` estimates how many units per side would decide it, from the
      spread seen so far.
    Fewer than ``min_units`` on a side is inconclusive too."""
    threshold = 1.0 + max_regression_pct / 100.0
    result: dict = {"max_regression_pct": max_regression_pct, "confidence": confidence, "min_units": min_units,
                    "n_baseline": len(baseline), "n_candidate": len(candidate), "paired": paired}
    short = max(min_units - len(baseline), min_units - len(candidate), 0)
    ratio = ratio_interval(baseline, candidate, confidence, paired) if not short else None
    if ratio is None:  # needed_units is always a total per side (here: the minimum)
        need = max(min_units, 2)
        return {**result, "verdict": INCONCLUSIVE, "needed_units": need,
                "reason": f"needs at least {min_units} repeats on each side (has {len(baseline)} and {len(candidate)})"}
    low, high = ratio["ci"]
    result.update(ratio=ratio["ratio"], ratio_ci=ratio["ci"], change_pct=(ratio["ratio"] - 1) * 100,
                  method=ratio["method"])
    said = f"{ratio['ratio'] - 1:+.1%} vs the baseline ({confidence:.0%} interval {low:.3f}-{high:.3f}x)"
    if ratio["ratio"] > threshold and low > 1.0:
        return {**result, "verdict": FAIL, "needed_units": 0,
                "reason": f"{said}, beyond the allowed {max_regression_pct:g}%"}
    if high <= threshold:
        return {**result, "verdict": PASS, "needed_units": 0,
                "reason": f"{said}, within the allowed {max_regression_pct:g}%"}
    need = _units_to_decide(ratio, threshold, confidence, len(baseline), len(candidate), paired)
    return {**result, "verdict": INCONCLUSIVE, "needed_units": need,
            "reason": f"{ratio['ratio'] - 1:+.1%} vs the baseline, interval {low:.3f}-{high:.3f}x: cannot tell yet "
                      f"whether it is within the allowed {max_regression_pct:g}%; needs about {need} repeats per side"}


MAX_UNITS_ESTIMATE = 1000


def _units_to_decide(ratio: dict, threshold: float, confidence: float, n_base: int, n_cand: int,
                     paired: bool) -> int:
    """Units per side at which the interval, at the spread seen so far, would clear the nearer boundary."""
    log_ratio = math.log(ratio["ratio"])
    gap = (math.log(threshold) - log_ratio) if ratio["ratio"] <= threshold else log_ratio
    n_now = min(n_base, n_cand)
    spread = ratio["log_se"] * math.sqrt(n_now)  # the per-unit scale of the standard error
    if gap <= 0 or spread <= 0:
        return MAX_UNITS_ESTIMATE
    for n in range(n_now + 1, MAX_UNITS_ESTIMATE + 1):
        df = n - 1.0 if paired else 2.0 * n - 2.0
        if t_quantile(0.5 + confidence / 2, df) * spread / math.sqrt(n) < gap:
            return n
    return MAX_UNITS_ESTIMATE
