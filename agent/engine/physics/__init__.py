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
from typing import Callable, Optional

from edgebench.agent import sensors as sensor_api
from edgebench.agent.engine.physics import energy, throttle
from edgebench.agent.engine.physics.sampler import Sampler, Series, series_of
from edgebench.agent.errors import EdgebenchError

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


LIMIT_SUFFIXES = ("/min", "/max", "/cpuinfo_min", "/cpuinfo_max")  # cpufreq limits, not the running clock
WATCHED_KINDS = ("temperature", "frequency", "power")


def watched(sensor_id: str, kind: str) -> bool:
    """Readings that change with the load and are summarised per window: temperatures, running clocks, power."""
    return kind in WATCHED_KINDS and not sensor_id.endswith(LIMIT_SUFFIXES)


def relative(series: Series, origin_ns: int) -> list:
    return [[t - origin_ns, values] for t, values in series]


def _stats(points: list) -> Optional[dict]:
    values = [v for _, v in points]
    if not values:
        return None
    return {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
            "mean": sum(values) / len(values), "samples": len(values)}


def _throttled_now(bits: object) -> bool:
    """vcgencmd get_throttled: bits 0-3 are the conditions in force now (16-19 are "since boot")."""
    try:
        return bool(int(str(bits), 0) & 0xF)
    except ValueError:
        return False


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
        self.units = {r.sensor: (r.kind, r.unit) for r in self.initial}
        self.wait: Optional[dict] = None
        self.idle_w: Optional[float] = None
        self.sampler = Sampler(self.sensors, settings.rate_hz, clock=clock)

    # ------------------------------------------------------------ before the run

    def hottest(self) -> tuple[Optional[str], Optional[float], bool]:
        """(sensor, °C) of the hottest temperature now, and whether a throttle bit is set now."""
        readings = sensor_api.read_all(self.sensors)
        temps = [(r.sensor, float(r.value)) for r in readings if r.kind == "temperature"
                 and not isinstance(r.value, str)]
        throttled = any(_throttled_now(r.value) for r in readings if r.sensor in self.limits.pi_sensors)
        sensor, temp = max(temps, key=lambda item: item[1]) if temps else (None, None)
        return sensor, temp, bool(throttled)

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

    def summarize(self, series: Series, origin_ns: int, wall_ns: int, runs: int) -> dict:
        """Statistics over the measured window [origin, origin + wall], energy, throttling, the raw series."""
        end_ns = origin_ns + wall_ns
        window = [(t, v) for t, v in series if origin_ns <= t <= end_ns]
        per_sensor = {}
        for sensor_id, (kind, unit) in self.units.items():
            if watched(sensor_id, kind):
                stats = _stats(series_of(window, sensor_id))
                if stats:
                    per_sensor[sensor_id] = {"kind": kind, "unit": unit, **stats}
        events = throttle.detect_throttling(series, self.limits)
        in_run = [e for e in events if e.onset_ns >= origin_ns - int(1e9 / self.settings.rate_hz)]
        return {
            "sensors": [s.name for s in self.sensors],
            "rate_hz": self.settings.rate_hz,
            "root": self.settings.root,
            "wait": self.wait,
            "window": per_sensor,
            "energy": self._energy(series, origin_ns, end_ns, runs),
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

    def _energy(self, series: Series, origin_ns: int, end_ns: int, runs: int) -> Optional[dict]:
        if self.power_id is None:
            return None
        points = series_of(series, self.power_id)
        result = energy.energy_per_inference(points, origin_ns, end_ns, runs, self.idle_w, self.power_id)
        if result is None:
            return {"source": self.power_id, "note": "fewer than two power samples in the measured window: "
                    "run longer (--min-duration) or sample faster (--sensor-rate)"}
        return result.to_dict()

    def close(self) -> None:
        sensor_api.close_all(self.sensors)


def sustained_windows(latency_ns: list, offsets_ns: list, series: Series, units: dict, window_s: float) -> list:
    """Latency and board state per window of a sustained run: how p50/p90 move as the board heats up.
    ``offsets_ns`` and the series' times are both offsets from the first measured run."""
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
        entry = {"start_s": start / 1e9, "runs": int(mask.sum()), "p50_ms": float(np.percentile(lat[mask], 50)),
                 "p90_ms": float(np.percentile(lat[mask], 90))}
        for sensor_id, (kind, _) in units.items():
            if watched(sensor_id, kind):
                values = [v for t, v in series_of(series, sensor_id) if start <= t < start + width]
                if values:
                    entry[sensor_id] = sum(values) / len(values)
        windows.append(entry)
    return windows
