"""Energy from sampled power, and from cumulative counters. Pure functions on (t_ns, value) points.

Energy per inference = integral over the measured window of (P - P_idle) dt / inferences: the idle
baseline (mean power over an idle period before the run) removes what the board draws doing nothing, so
the figure is what the model costs. Power is integrated with the trapezoidal rule; at the window's edges
the power is interpolated linearly between the samples either side, never extrapolated past the samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

from edgebench.agent.sensors.rapl import counter_delta

Point = Tuple[int, float]  # (t_ns, value)


def _interp(a: Point, b: Point, t: int) -> float:
    if b[0] == a[0]:
        return b[1]
    return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])


def clip(points: Sequence[Point], t0_ns: int, t1_ns: int) -> List[Point]:
    """The points inside [t0, t1], with interpolated points added at t0 and t1 where samples straddle them.
    A window that starts before the first sample (or ends after the last) is cut to the samples."""
    pts = sorted(points)
    out: List[Point] = []
    for i, p in enumerate(pts):
        if i > 0 and pts[i - 1][0] < t0_ns < p[0]:
            out.append((t0_ns, _interp(pts[i - 1], p, t0_ns)))
        if t0_ns <= p[0] <= t1_ns:
            out.append(p)
        if i > 0 and pts[i - 1][0] < t1_ns < p[0]:
            out.append((t1_ns, _interp(pts[i - 1], p, t1_ns)))
    return out


def trapezoid_j(points: Sequence[Point]) -> float:
    """Integral of power (W) over time: joules."""
    pts = sorted(points)
    return sum((b[0] - a[0]) / 1e9 * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))


def mean_power_w(points: Sequence[Point], t0_ns: int, t1_ns: int) -> Optional[float]:
    """Time-weighted mean power over [t0, t1]; a single sample in the window is its own mean."""
    pts = clip(points, t0_ns, t1_ns)
    if not pts:
        return None
    span = pts[-1][0] - pts[0][0]
    if span <= 0:
        return sum(v for _, v in pts) / len(pts)
    return trapezoid_j(pts) / (span / 1e9)


def idle_baseline_w(points: Sequence[Point], t0_ns: int, t1_ns: int) -> Optional[float]:
    """Mean power over an idle period: the baseline subtracted from the run's power."""
    return mean_power_w(points, t0_ns, t1_ns)


def peak_power_w(points: Sequence[Point], t0_ns: int, t1_ns: int) -> Optional[float]:
    pts = [v for t, v in points if t0_ns <= t <= t1_ns]
    return max(pts) if pts else None


@dataclass
class EnergyResult:
    source: str  # the reading id the power came from
    window_s: float  # the part of the window the samples cover
    inferences: int
    samples: int
    energy_j: float  # integral of P over the window
    idle_w: Optional[float]
    net_energy_j: float  # integral of (P - P_idle); may be negative if the baseline was noisy
    energy_per_inference_mj: Optional[float]
    avg_w: float
    peak_w: float

    def to_dict(self) -> dict:
        return asdict(self)


def energy_per_inference(points: Sequence[Point], t0_ns: int, t1_ns: int, inferences: int,
                         idle_w: Optional[float] = None, source: str = "") -> Optional[EnergyResult]:
    """Energy over [t0, t1] from power samples, net of the idle baseline, per inference.
    None when fewer than two samples cover the window."""
    pts = clip(points, t0_ns, t1_ns)
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    window_s = (pts[-1][0] - pts[0][0]) / 1e9
    energy = trapezoid_j(pts)
    net = energy - (idle_w or 0.0) * window_s
    per_inf = net / inferences * 1e3 if inferences > 0 else None
    return EnergyResult(source, window_s, inferences, len(pts), energy, idle_w, net, per_inf,
                        energy / window_s, max(v for _, v in pts))


def unwrap_counter(points: Sequence[Point], max_range: Optional[float]) -> List[Point]:
    """A wrapping cumulative counter made monotonic (the first point becomes 0)."""
    pts = sorted(points)
    if not pts:
        return []
    out, total = [(pts[0][0], 0.0)], 0.0
    for a, b in zip(pts, pts[1:]):
        total += counter_delta(a[1], b[1], max_range)
        out.append((b[0], total))
    return out


def counter_energy_j(points: Sequence[Point], max_range_j: Optional[float], t0_ns: int, t1_ns: int) -> float:
    """Energy (J) a cumulative counter (RAPL energy in J, NVML total energy) gained over [t0, t1],
    with wrap-around undone and the edges interpolated."""
    pts = clip(unwrap_counter(points, max_range_j), t0_ns, t1_ns)
    return pts[-1][1] - pts[0][1] if len(pts) >= 2 else 0.0


def counter_power(points: Sequence[Point], max_range: Optional[float]) -> List[Point]:
    """Power series from a cumulative energy counter in J: the mean power between consecutive reads,
    stamped at the later read."""
    pts = sorted(points)
    return [(b[0], counter_delta(a[1], b[1], max_range) / ((b[0] - a[0]) / 1e9))
            for a, b in zip(pts, pts[1:]) if b[0] > a[0]]
