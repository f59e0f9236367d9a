"""Throttling in a sampled series: when it started and why. Pure functions.

Three signs, each only where the board exposes it:
- Raspberry Pi ``get_throttled`` bits 0-3 (under-voltage, arm frequency capped, throttled, soft temperature
  limit) set during the run;
- a CPU clock below the policy's maximum under the ``performance`` governor (which would otherwise hold the
  maximum): the firmware or the thermal framework took clock away. Under other governors a low clock is
  the governor's choice and says nothing. ``min_samples`` consecutive low samples are required, because
  intel_pstate's reported clock wanders by a few percent on its own;
- a temperature at or over the zone's passive trip point, where the kernel starts cooling by cutting clocks.

The reference limits come from readings taken before the run (``limits_from_readings``), so a maximum that
the thermal framework lowers during the run still counts as throttling. Readings are picked by their fields
(``role``, ``kind``, labels), never by their ids; the Pi's bits are decoded by the raspberrypi plugin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from edgebench.agent.engine.physics.sampler import Series
from edgebench.agent.sensors.base import THROTTLE_BITS_ROLE, Reading
from edgebench.agent.sensors.raspberrypi import throttle_state


@dataclass
class ThrottleEvent:
    # pi_under_voltage, pi_arm_freq_capped, pi_throttled, pi_soft_temp_limit, clock_below_max, over_passive_trip
    reason: str
    sensor: str
    onset_ns: int
    value: object
    limit: object = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ThrottleLimits:
    pi_sensors: List[str] = field(default_factory=list)  # readings holding get_throttled bits
    clocks: Dict[str, Tuple[float, str]] = field(default_factory=dict)  # freq reading -> (max Hz, governor)
    passive_trips: Dict[str, float] = field(default_factory=dict)  # temperature reading -> trip C


def limits_from_readings(readings: Iterable[Reading]) -> ThrottleLimits:
    limits = ThrottleLimits()
    for r in readings:
        if r.role == THROTTLE_BITS_ROLE:
            limits.pi_sensors.append(r.sensor)
        elif r.kind == "frequency" and r.role == "current" and "governor" in r.labels:  # cpufreq's cur
            top = r.labels.get("scaling_max_hz") or r.labels.get("cpuinfo_max_hz")
            if top:
                limits.clocks[r.sensor] = (float(top), r.labels["governor"])
        elif r.kind == "temperature" and "trip_passive_c" in r.labels:
            limits.passive_trips[r.sensor] = float(r.labels["trip_passive_c"])
    return limits


def pi_limited_now(readings: Iterable[Reading]) -> bool:
    """Whether a Pi throttle condition (under-voltage, capped, throttled, soft limit) is in force now."""
    states = (throttle_state(r.value) for r in readings if r.role == THROTTLE_BITS_ROLE)
    return any(state is not None and state.any_now for state in states)


def pi_throttle_events(series: Series, sensor: str = "rpi/throttled") -> List[ThrottleEvent]:
    """The first tick at which each "now" condition of get_throttled is set."""
    events: Dict[str, ThrottleEvent] = {}
    for t, values in series:
        state = throttle_state(values[sensor]) if sensor in values else None
        if state is None:
            continue
        for name in state.now:
            if name not in events:
                events[name] = ThrottleEvent(f"pi_{name}", sensor, t, hex(state.bits))
    return sorted(events.values(), key=lambda e: e.onset_ns)


def clock_events(series: Series, sensor: str, max_hz: float, governor: str, tolerance: float = 0.05,
                 min_samples: int = 3) -> List[ThrottleEvent]:
    """Onset of the first run of ``min_samples`` samples below max x (1 - tolerance), performance only."""
    if governor != "performance":
        return []
    floor = max_hz * (1 - tolerance)
    run_start: Optional[Tuple[int, float]] = None
    count = 0
    for t, values in series:
        v = values.get(sensor)
        if v is None or isinstance(v, str):
            continue
        if v < floor:
            run_start = run_start or (t, v)
            count += 1
            if count >= min_samples:
                return [ThrottleEvent("clock_below_max", sensor, run_start[0], run_start[1], max_hz)]
        else:
            run_start, count = None, 0
    return []


def trip_events(series: Series, sensor: str, trip_c: float) -> List[ThrottleEvent]:
    """The first sample at or over the passive trip point."""
    for t, values in series:
        v = values.get(sensor)
        if v is not None and not isinstance(v, str) and v >= trip_c:
            return [ThrottleEvent("over_passive_trip", sensor, t, v, trip_c)]
    return []


def detect_throttling(series: Series, limits: ThrottleLimits, tolerance: float = 0.05,
                      min_samples: int = 3) -> List[ThrottleEvent]:
    """Every throttle sign in the series, earliest first."""
    events: List[ThrottleEvent] = []
    for sensor in limits.pi_sensors:
        events += pi_throttle_events(series, sensor)
    for sensor, (max_hz, governor) in limits.clocks.items():
        events += clock_events(series, sensor, max_hz, governor, tolerance, min_samples)
    for sensor, trip in limits.passive_trips.items():
        events += trip_events(series, sensor, trip)
    return sorted(events, key=lambda e: e.onset_ns)


def first_onset(events: Iterable[ThrottleEvent]) -> Optional[int]:
    return min((e.onset_ns for e in events), default=None)
