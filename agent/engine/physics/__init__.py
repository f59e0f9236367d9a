"""The physics of a run: temperature, clocks, power and throttling, sampled beside the latencies.

The sensors are read from the parent process (the benchmark child never pays for them), on the monotonic
clock the child's latency samples use, so every latency sample can be lined up with the board's state.
Around the measured run: an optional wait until the board is cool, an idle power baseline, the sampler, and
afterwards a summary: per-sensor statistics over the measured window, energy per inference, throttling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

from edgebench.agent import sensors as sensor_api
from edgebench.agent.engine import stats
from edgebench.agent.engine.physics import energy, throttle
from edgebench.agent.engine.physics.sampler import Sampler, Series, series_of
from edgebench.agent.errors import EdgebenchError, UsageError
from edgebench.agent.sensors.base import CLOCK_LIMIT_ROLES

log = logging.getLogger(__name__)


@dataclass
class PhysicsSettings:
    rate_hz: float = 10.0
    root: str = "/"  # another tree (a recorded board, a bind-mounted /sys) instead of this machine's
    idle_s: float = 1.0  # idle power baseline before the run, when there is a power sensor
    max_start_temp_c: Optional[float] = None  # wait until every temperature is at or below this
    cooldown_timeout_s: float = 300.0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class BoardTooHot(EdgebenchError):
    """The board did not cool down (or stop throttling) before the start-temperature timeout."""


WATCHED_KINDS = ("temperature", "frequency", "power")


class Quantity(NamedTuple):
    """What a reading id in the series holds (the series itself keeps values only)."""

    kind: str
    unit: str
    role: str


def watched(q: Quantity) -> bool:
    """Readings that change with the load and are summarised per window: temperatures, running clocks, power
    (clock limits are provenance, not samples)."""
    return q.kind in WATCHED_KINDS and q.role not in CLOCK_LIMIT_ROLES


def relative(series: Series, origin_ns: int) -> list:
    return [[t - origin_ns, values] for t, values in series]


def _stats(points: list) -> Optional[dict]:
    values = [v for _, v in points]
    if not values:
        return None
    return {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
            "mean": sum(values) / len(values), "samples": len(values)}


class RunPhysics:
    def __init__(self, settings: PhysicsSettings, clock: Callable[[], int] = time.perf_counter_ns):
        self.settings = settings
        self.clock = clock
        self.fs, self.runner = sensor_api.target(settings.root)
        self.sensors = sensor_api.discover(self.fs, self.runner)
        self.initial = sensor_api.read_all(self.sensors)
        self.limits = throttle.limits_from_readings(self.initial)
        power = sensor_api.pick_power(self.initial)
        self.power_id = power.sensor if power else None
        self.units: Dict[str, Quantity] = {r.sensor: Quantity(r.kind, r.unit, r.role) for r in self.initial}
        self.wait: Optional[dict] = None
        self.idle_w: Optional[float] = None
        self.sampler = Sampler(self.sensors, settings.rate_hz, clock=clock)

    # ------------------------------------------------------------ before the run

    def hottest(self) -> tuple[Optional[str], Optional[float], bool]:
        """(sensor, °C) of the hottest temperature now, and whether a throttle bit is set now."""
        with self.sampler.lock:  # between repeats the sampler thread reads the same sensors
            readings = sensor_api.read_all(self.sensors)
        temps = [(r.sensor, float(r.value)) for r in readings if r.kind == "temperature"
                 and not isinstance(r.value, str)]
        sensor, temp = max(temps, key=lambda item: item[1]) if temps else (None, None)
        return sensor, temp, throttle.pi_limited_now(readings)

    def wait_until_cool(self, progress: Optional[Callable[[str, int, float], None]] = None) -> None:
        limit = self.settings.max_start_temp_c
        if limit is None:
            return
        started = time.monotonic()
        sensor, temp, throttled = self.hottest()
        start_temp = temp
        if temp is None:
            self.wait = {"max_start_temp_c": limit, "waited_s": 0.0, "note": "no temperature sensor: not waited"}
            return
        while temp > limit or throttled:
            waited = time.monotonic() - started
            if waited >= self.settings.cooldown_timeout_s:
                state = "throttled" if throttled and temp <= limit else f"at {temp:.1f} °C ({sensor})"
                raise BoardTooHot(f"the board is still {state} after {waited:.0f}s of waiting "
                                  f"(--max-start-temp {limit:g}, --cooldown-timeout "
                                  f"{self.settings.cooldown_timeout_s:g}s)")
            if progress:
                progress("cooldown", 0, waited)
            time.sleep(min(1.0, max(0.05, self.settings.cooldown_timeout_s / 50)))
            sensor, temp, throttled = self.hottest()
        self.wait = {"max_start_temp_c": limit, "waited_s": round(time.monotonic() - started, 3),
                     "start_temp_c": start_temp, "temp_at_start_c": temp, "sensor": sensor}

    def measure_idle(self) -> None:
        """Mean power while nothing runs, to subtract from the run's power (energy of the inference alone)."""
        if self.power_id is None or self.settings.idle_s <= 0:
            return
        idle = Sampler(self.sensors, self.settings.rate_hz, only=[self.power_id], clock=self.clock)
        idle.start()
        time.sleep(self.settings.idle_s)
        points = series_of(idle.stop(), self.power_id)
        self.idle_w = energy.idle_baseline_w(points, points[0][0], points[-1][0]) if points else None

    # ------------------------------------------------------------ the run

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> Series:
        return self.sampler.stop() if self.sampler.running else self.sampler.series

    def summarize(self, series: Series, origin_ns: int, wall_ns: int, runs: int,
                  windows: Optional[Sequence[Tuple[int, int, int]]] = None) -> dict:
        """Statistics over the measured window [origin, origin + wall] (or over the measured ``windows``,
        (start ns, end ns, runs) each, of a run's repeats), energy, throttling from ``origin``, the raw series."""
        windows = list(windows) if windows else [(origin_ns, origin_ns + wall_ns, runs)]
        inside = [(t, v) for t, v in series if any(start <= t <= end for start, end, _ in windows)]
        per_sensor = {}
        for sensor_id, q in self.units.items():
            if watched(q):
                summary = _stats(series_of(inside, sensor_id))
                if summary:
                    per_sensor[sensor_id] = {"kind": q.kind, "unit": q.unit, **summary}
        events = throttle.detect_throttling(series, self.limits)
        in_run = [e for e in events if e.onset_ns >= origin_ns - int(1e9 / self.settings.rate_hz)]
        return {
            "sensors": [s.name for s in self.sensors],
            "rate_hz": self.settings.rate_hz,
            "root": self.settings.root,
            "wait": self.wait,
            "window": per_sensor,
            "energy": self.energy(series, windows),
            "throttling": {
                "detected": bool(in_run),
                "onset_s": (min(e.onset_ns for e in in_run) - origin_ns) / 1e9 if in_run else None,
                "events": [{**e.to_dict(), "onset_s": (e.onset_ns - origin_ns) / 1e9} for e in in_run],
                "checks": {"pi_throttle_bits": self.limits.pi_sensors, "clock_below_max": list(self.limits.clocks),
                           "passive_trip": list(self.limits.passive_trips)},
            },
            "sampler": self.sampler.overhead(),
            "errors": self.sampler.errors(),
            # [offset from the first measured run (ns), {reading id: value}]
            "samples": relative(series, origin_ns),
        }

    def energy(self, series: Series, windows: Sequence[Tuple[int, int, int]]) -> Optional[dict]:
        """Energy per inference over measured windows ((start ns, end ns, runs) each): the integrals summed over
        the windows, shared by their inferences; None without a power sensor."""
        if self.power_id is None:
            return None
        points = series_of(series, self.power_id)
        parts = [energy.energy_per_inference(points, start, end, runs, self.idle_w, self.power_id)
                 for start, end, runs in windows]
        parts = [part for part in parts if part is not None]
        if not parts:
            return {"source": self.power_id, "note": "fewer than two power samples in the measured window: "
                    "run longer (--min-duration) or sample faster (--sensor-rate)"}
        if len(parts) == 1:
            return parts[0].to_dict()
        window_s, inferences = sum(p.window_s for p in parts), sum(p.inferences for p in parts)
        energy_j, net_j = sum(p.energy_j for p in parts), sum(p.net_energy_j for p in parts)
        return energy.EnergyResult(
            self.power_id, window_s, inferences, sum(p.samples for p in parts), energy_j, self.idle_w, net_j,
            net_j / inferences * 1e3 if inferences > 0 else None, energy_j / window_s,
            max(p.peak_w for p in parts)).to_dict()

    def close(self) -> None:
        sensor_api.close_all(self.sensors)


class SustainedPlan(NamedTuple):
    settings: Dict[str, float]  # RunSettings fields to set
    window_s: Optional[float]  # BenchRequest.sustained_window_s


def sustained_plan(duration_s: Optional[float], window_s: Optional[float] = None,
                   sensors: bool = True) -> SustainedPlan:
    """The sustained-run policy (``--sustained D [--window W]``): one measured phase of exactly D (at least one
    run), reported per window of W, by default D/20 but at least 1 s. No D: nothing changes. ``sensors`` says
    whether the board is sampled: a sustained run is about temperature over time, so it needs them."""
    if window_s and not duration_s:
        raise UsageError("--window sets the windows of a --sustained run: give --sustained too")
    if not duration_s:
        return SustainedPlan({}, None)
    if window_s and window_s > duration_s:
        raise UsageError(f"--window ({window_s:g}s) is longer than --sustained ({duration_s:g}s)")
    if not sensors:
        raise UsageError("--sustained reports temperature over time: it cannot run with --no-sensors")
    plan = {"min_runs": 1, "min_duration_s": duration_s, "max_duration_s": duration_s}
    return SustainedPlan(plan, window_s or max(1.0, duration_s / 20))


def sustained_windows(latency_ns: list, offsets_ns: list, series: Series, units: Dict[str, Quantity],
                      window_s: float) -> list:
    """Latency and board state per window of a sustained run: how p50/p90 move as the board heats up.
    ``offsets_ns`` and the series' times are both offsets from the first measured run. Percentiles come from
    engine.stats, like every other percentile in a report."""
    import numpy as np

    if not latency_ns:
        return []
    lat = np.asarray(latency_ns, dtype=np.float64) / 1e6
    off = np.asarray(offsets_ns, dtype=np.int64)
    width = int(window_s * 1e9)
    windows = []
    for start in range(0, int(off[-1]) + 1, width):
        mask = (off >= start) & (off < start + width)
        if not mask.any():
            continue
        entry = {"start_s": start / 1e9, "runs": int(mask.sum()), "p50_ms": stats.percentile_of(lat[mask], 50),
                 "p90_ms": stats.percentile_of(lat[mask], 90)}
        for sensor_id, q in units.items():
            if watched(q):
                values = [v for t, v in series_of(series, sensor_id) if start <= t < start + width]
                if values:
                    entry[sensor_id] = sum(values) / len(values)
        windows.append(entry)
    return windows
