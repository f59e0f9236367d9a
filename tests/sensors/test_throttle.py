"""Throttle detection on sampled series."""

from __future__ import annotations

from edgebench.agent.engine.physics import throttle
from edgebench.agent.sensors import discover, read_all
from edgebench.agent.sensors.base import reading

from .conftest import BOARDS_DIR

S = 1_000_000_000


def series(sensor, values, step=S // 10):
    return [(i * step, {sensor: v}) for i, v in enumerate(values)]


def test_pi_bits_onset_per_reason():
    s = series("rpi/throttled", ["0x0", "0x0", "0x20002", "0x60006", "0x60006", "0x60000", "garbage"])
    events = throttle.pi_throttle_events(s)
    assert [(e.reason, e.onset_ns) for e in events] == [("pi_arm_freq_capped", 2 * S // 10),
                                                        ("pi_throttled", 3 * S // 10)]
    assert throttle.pi_throttle_events(series("rpi/throttled", ["0x50000"])) == [], "since-boot bits are history"


def test_clock_below_max_only_under_performance():
    values = [1.8e9, 1.8e9, 1.5e9, 1.8e9, 1.5e9, 1.4e9, 1.4e9, 1.4e9]
    s = series("cpufreq/policy0/cur", values)
    (event,) = throttle.clock_events(s, "cpufreq/policy0/cur", 1.8e9, "performance")
    assert (event.reason, event.onset_ns, event.value) == ("clock_below_max", 4 * S // 10, 1.5e9)
    assert throttle.clock_events(s, "cpufreq/policy0/cur", 1.8e9, "schedutil") == []
    assert throttle.clock_events(s, "cpufreq/policy0/cur", 1.8e9, "performance", min_samples=5) == []


def test_trip_point():
    s = series("thermal/cpu-thermal", [80.0, 94.9, 95.0, 97.0])
    (event,) = throttle.trip_events(s, "thermal/cpu-thermal", 95.0)
    assert event.onset_ns == 2 * S // 10 and event.limit == 95.0


def test_detect_from_fixture_limits():
    """Limits come from a read before the run: the Xavier NX has passive trips, the Pi throttle bits."""
    limits = throttle.limits_from_readings(read_all(discover(BOARDS_DIR / "jetson-xavier-nx")))
    assert limits.passive_trips["thermal/CPU-therm"] == 95.5
    assert limits.clocks["cpufreq/policy0/cur"] == (1.4208e9, "schedutil")
    pi4 = read_all(discover(BOARDS_DIR / "rpi4"))
    pi = throttle.limits_from_readings(pi4)
    assert pi.pi_sensors == ["rpi/throttled"]
    assert throttle.pi_limited_now(pi4), "the Pi 4 fixture is under-volted and throttled now"
    assert not throttle.pi_limited_now(read_all(discover(BOARDS_DIR / "rpi5")))

    limits.clocks["cpufreq/policy0/cur"] = (1.4208e9, "performance")
    run = [(0, {"thermal/CPU-therm": 60.0, "cpufreq/policy0/cur": 1.4208e9})]
    run += [(i * S, {"thermal/CPU-therm": 60.0 + 10 * i, "cpufreq/policy0/cur": 1.4208e9 if i < 4 else 1.1e9})
            for i in range(1, 8)]
    events = throttle.detect_throttling(run, limits)
    assert sorted((e.onset_ns, e.reason) for e in events) == [(4 * S, "clock_below_max"), (4 * S, "over_passive_trip")]
    assert throttle.first_onset(events) == 4 * S
    assert throttle.first_onset([]) is None
    assert {e.to_dict()["sensor"] for e in events} == {"thermal/CPU-therm", "cpufreq/policy0/cur"}


def test_limits_follow_roles_not_ids():
    """A plugin that names its readings its own way is still checked: limits come from the fields."""
    readings = [
        reading("board/big/clock", "frequency", 2.0e9, "x", role="current", governor="performance",
                scaling_max_hz=2.0e9),
        reading("board/big/clock_cap", "frequency", 2.0e9, "x", role="limit_max"),
        reading("board/fw_flags", "state", "0x0", "x", role="throttle_bits"),
    ]
    limits = throttle.limits_from_readings(readings)
    assert limits.clocks == {"board/big/clock": (2.0e9, "performance")}
    assert limits.pi_sensors == ["board/fw_flags"]
    s = [(0, {"board/fw_flags": "0x0"}), (S, {"board/fw_flags": "0x4"})]
    assert [(e.reason, e.onset_ns) for e in throttle.detect_throttling(s, limits)] == [("pi_throttled", S)]
