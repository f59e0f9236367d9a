"""The sampler thread with a fake sensor reading a counter, and alignment with latency timestamps."""

from __future__ import annotations

import time

import pytest

from edgebench.agent.engine.physics.sampler import Sampler, series_of, values_at
from edgebench.agent.sensors.base import Sensor, reading
from edgebench.agent.sensors.commands import NullRunner
from edgebench.agent.sensors.fs import LocalFS


class Counter(Sensor):
    def __init__(self, name="counter", min_interval_s=0.0):
        super().__init__(name, LocalFS("/nonexistent"), NullRunner())
        self.n = 0
        self.min_interval_s = min_interval_s

    def _read(self):
        self.n += 1
        return [reading(f"{self.name}/n", "energy", float(self.n), "fake"),
                reading(f"{self.name}/mode", "state", "on", "fake")]


def test_sampler_thread_rate_and_clock():
    fast, slow = Counter("fast"), Counter("slow", min_interval_s=0.2)
    sampler = Sampler([fast, slow], rate_hz=50)
    t0 = time.perf_counter_ns()
    sampler.start()
    time.sleep(0.5)
    series = sampler.stop()
    t1 = time.perf_counter_ns()
    assert not sampler.running
    stamps = [t for t, _ in series]
    assert stamps == sorted(stamps) and t0 <= stamps[0] and stamps[-1] <= t1, "perf_counter_ns clock"
    assert 10 <= len(series) <= 30, len(series)  # ~25 ticks at 50 Hz in 0.5 s, plus the last one
    counts = [v["fast/n"] for _, v in series]
    assert counts == [float(i) for i in range(1, len(series) + 1)], "every tick reads the fast sensor"
    slow_reads = [v["slow/n"] for _, v in series if "slow/n" in v]
    assert 2 <= len(slow_reads) <= 6, "the slow sensor is read at most every 0.2 s (and on the last tick)"
    overhead = sampler.overhead()
    assert overhead["ticks"] == len(series) and overhead["p50_ns"] > 0 and overhead["busy_fraction"] < 0.5


def test_sampler_only_and_context_manager():
    with Sampler([Counter()], rate_hz=100, only=["counter/n"]) as sampler:
        time.sleep(0.05)
    series = sampler.series
    assert series and all(set(v) == {"counter/n"} for _, v in series)
    with pytest.raises(RuntimeError):
        sampler.stop()
    with pytest.raises(ValueError):
        Sampler([], rate_hz=0)


def test_series_helpers():
    series = [(10, {"p": 1.0, "s": "a"}), (20, {"s": "b"}), (30, {"p": 3.0})]
    assert series_of(series, "p") == [(10, 1.0), (30, 3.0)]
    assert series_of(series, "s") == []
    assert values_at(series, "p", [5, 10, 25, 99]) == [None, 1.0, 1.0, 3.0]
    assert values_at(series, "s", [21]) == ["b"]


def test_sampler_records_sensor_errors(tmp_path):
    from edgebench.agent.sensors.thermal import ThermalSensor, Zone

    zone = Zone("/sys/class/thermal/thermal_zone0", "cpu", "thermal/cpu")
    sampler = Sampler([ThermalSensor(LocalFS(tmp_path), NullRunner(), [zone])], rate_hz=100)
    sampler.tick()
    assert sampler.errors() == {"thermal": ["/sys/class/thermal/thermal_zone0/temp: missing"]}
