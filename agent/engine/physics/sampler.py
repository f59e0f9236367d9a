"""A background thread that samples sensors during a run, on the clock the latency samples use.

    sampler = Sampler(sensors, rate_hz=10)
    sampler.start()
    ... run inferences, timing them with time.perf_counter_ns() ...
    series = sampler.stop()         # [(t_ns, {"thermal/cpu-thermal": 52.1, "hwmon/ina3221/VDD_IN/power": 4.7}), ...]

Each tick is stamped with ``time.perf_counter_ns()`` when it starts, so a latency sample at time t lines up
with the last tick at or before t (``values_at``). Ticks keep to a fixed grid; a tick that overruns skips
the missed slots rather than bunching up. Command-backed sensors (vcgencmd, dumpsys, nvpmodel) declare
``min_interval_s`` and are read only that often, so a tick usually costs a few file reads. ``stop()``
takes one last tick, so a measured window that ends at stop is covered at both ends. ``overhead()`` reports
what ticks cost, so the sampler's own effect on a run can be stated.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from edgebench.agent.sensors.base import Sensor, Value

log = logging.getLogger(__name__)

Tick = Tuple[int, Dict[str, Value]]
Series = List[Tick]


class Sampler:
    def __init__(self, sensors: Iterable[Sensor], rate_hz: float = 10.0, only: Optional[Iterable[str]] = None,
                 clock: Callable[[], int] = time.perf_counter_ns):
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.sensors = list(sensors)
        self.rate_hz = rate_hz
        self.period_ns = int(1e9 / rate_hz)
        self.only = set(only) if only is not None else None  # reading ids to keep; None keeps all
        self.clock = clock
        self.missed_ticks = 0
        self._series: Series = []
        self._tick_costs: List[int] = []
        self._last_read: Dict[int, int] = {}
        self._errors: Dict[str, List[str]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lock = threading.Lock()  # held while reading the sensors: others read them between ticks under it

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("sampler already running")
        self._series, self._tick_costs, self._last_read, self.missed_ticks = [], [], {}, 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgebench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> Series:
        """Stop the thread, take a last tick, and return the series."""
        if self._thread is None:
            raise RuntimeError("sampler not running")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.tick(force=True)
        return list(self._series)

    @property
    def series(self) -> Series:
        return list(self._series)

    def tick(self, force: bool = False) -> Tick:
        """Read the sensors that are due (all of them with ``force``) and append one entry to the series."""
        with self.lock:
            return self._tick(force)

    def _tick(self, force: bool) -> Tick:
        t = self.clock()
        values: Dict[str, Value] = {}
        for sensor in self.sensors:
            last = self._last_read.get(id(sensor))
            if not force and last is not None and t - last < sensor.min_interval_s * 1e9:
                continue
            self._last_read[id(sensor)] = t
            for r in sensor.read():
                if self.only is None or r.sensor in self.only:
                    values[r.sensor] = r.value
            errors = sensor.read_errors()
            if errors:
                self._errors[sensor.name] = errors
        self._tick_costs.append(self.clock() - t)
        entry = (t, values)
        self._series.append(entry)
        return entry

    def _loop(self) -> None:
        deadline = self.clock()
        while not self._stop.is_set():
            try:
                self.tick(force=not self._series)
            except Exception:  # Sensor.read never raises; this guards the sampler's own bookkeeping
                log.exception("sampler tick failed")
            deadline += self.period_ns
            now = self.clock()
            if deadline <= now:
                missed = (now - deadline) // self.period_ns + 1
                self.missed_ticks += int(missed)
                deadline += int(missed) * self.period_ns
            self._stop.wait((deadline - now) / 1e9)

    def errors(self) -> Dict[str, List[str]]:
        """sensor name -> the errors of its most recent failing read."""
        return dict(self._errors)

    def overhead(self) -> Dict[str, float]:
        """Tick count and cost: mean, p50 and max in ns, and the share of wall time spent reading."""
        costs = sorted(self._tick_costs)
        if not costs:
            return {"ticks": 0}
        span = self._series[-1][0] - self._series[0][0] if len(self._series) > 1 else 0
        return {"ticks": len(costs), "missed_ticks": self.missed_ticks, "mean_ns": sum(costs) / len(costs),
                "p50_ns": costs[len(costs) // 2], "max_ns": costs[-1],
                "busy_fraction": sum(costs) / span if span else 0.0}


def series_of(series: Series, sensor: str) -> List[Tuple[int, float]]:
    """(t_ns, value) of one numeric reading across the series (ticks without it are skipped)."""
    return [(t, float(v[sensor])) for t, v in series if sensor in v and not isinstance(v[sensor], str)]


def values_at(series: Series, sensor: str, times_ns: Sequence[int]) -> List[Optional[Value]]:
    """The value of ``sensor`` in force at each time: the last tick at or before it (None before the first)."""
    points = [(t, v[sensor]) for t, v in series if sensor in v]
    stamps = [t for t, _ in points]
    out: List[Optional[Value]] = []
    for t in times_ns:
        i = bisect.bisect_right(stamps, t) - 1
        out.append(points[i][1] if i >= 0 else None)
    return out
