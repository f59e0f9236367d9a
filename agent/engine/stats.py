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
    """Whether the run had enough samples for every percentile it reports, with the reasons if not."""
    reasons = []
    for key, ok in summary["resolved"].items():
        if not ok:
            need = min_samples(int(key[1:]) / 100, confidence)
            reasons.append(f"{key} needs at least {need} samples for a {confidence:.0%} interval; "
                           f"the run has {summary['count']}")
    if not reached_min_runs:
        reasons.append("max duration reached before the minimum number of runs")
    if not reached_min_duration:
        reasons.append("max duration reached before the minimum duration")
    return {"valid": not reasons, "reasons": reasons}


def quantile_regression(baseline_ns: Sequence[int], candidate_ns: Sequence[int], q: float = 0.9,
                        max_regression_pct: float = 0.0, confidence: float = CONFIDENCE, resamples: int = 1000,
                        seed: int = 0) -> dict:
    """Did the candidate's quantile ``q`` regress beyond ``max_regression_pct`` against the baseline?

    Percentile bootstrap of the ratio candidate_q / baseline_q (both samples resampled independently).
    ``regressed`` needs both: the point ratio is beyond the allowance, AND the regression is real: the
    one-sided lower confidence bound of the ratio is above 1. Run-to-run noise of the same distribution then
    fails only ~(1 - confidence)/2 of the time at most, and a true regression well past the allowance fails
    nearly always once both samples are large. ``decided`` is False when either sample is too small to
    estimate the quantile with a distribution-free interval (stats.min_samples)."""
    base = np.asarray(baseline_ns, dtype=np.float64)
    cand = np.asarray(candidate_ns, dtype=np.float64)
    need = min_samples(q, confidence)
    result: dict = {"quantile": q, "baseline_n": int(base.size), "candidate_n": int(cand.size), "min_samples": need,
                    "max_regression_pct": max_regression_pct, "confidence": confidence}
    if base.size < need or cand.size < need:
        result.update(decided=False, regressed=None, reason=f"needs at least {need} samples on each side")
        return result
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for start in range(0, resamples, 100):  # in blocks: bounded memory for large samples
        count = min(100, resamples - start)
        b = np.quantile(base[rng.integers(0, base.size, (count, base.size))], q, axis=1)
        c = np.quantile(cand[rng.integers(0, cand.size, (count, cand.size))], q, axis=1)
        ratios[start:start + count] = c / b
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    point = float(np.quantile(cand, q) / np.quantile(base, q))
    regressed = point > 1 + max_regression_pct / 100 and low > 1.0
    result.update(decided=True, regressed=bool(regressed), ratio=point, ratio_ci=[float(low), float(high)],
                  change_pct=(point - 1) * 100)
    return result
