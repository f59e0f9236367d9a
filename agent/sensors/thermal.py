"""Linux thermal zones: /sys/class/thermal/thermal_zone*/{type,temp,trip_point_*_{type,temp}}.

Kernel ABI (Documentation/ABI/testing/sysfs-class-thermal): ``temp`` and ``trip_point_N_temp`` are in
millidegrees Celsius; trip types are ``active`` (fans), ``passive`` (the kernel starts cooling by lowering
clocks), ``hot`` and ``critical`` (shutdown). A passive trip is what throttle.py compares temperatures with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from edgebench.agent.sensors.base import Reading, Sensor, parse_number, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

ROOT = "/sys/class/thermal"
ABSENT_C = -100.0


@dataclass
class Zone:
    path: str  # /sys/class/thermal/thermal_zone0
    type: str
    sensor: str  # reading id
    trips: Dict[str, List[float]] = field(default_factory=dict)  # trip type -> temperatures in C

    def lowest(self, trip_type: str) -> Optional[float]:
        temps = self.trips.get(trip_type)
        return min(temps) if temps else None


def millidegrees(raw: float) -> float:
    """Celsius from a zone value. A few drivers (some phone zones) report whole degrees: a non-zero value
    under 200 cannot be millidegrees of a running chip (0.2 C), so it is taken as degrees."""
    return raw if 0 < abs(raw) < 200 else raw / 1000.0


def _clean(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip()) or "unknown"


def discover_zones(fs: FS) -> List[Zone]:
    dirs = fs.glob(f"{ROOT}/thermal_zone*")
    if not dirs:
        return []
    types = fs.read_many([f"{d}/type" for d in dirs])
    temps = fs.read_many([f"{d}/temp" for d in dirs])
    zones: List[Zone] = []
    seen: Dict[str, int] = {}
    for d in dirs:
        raw = types[f"{d}/type"]
        ztype = _clean(raw) if isinstance(raw, str) else d.rsplit("/", 1)[1]
        seen[ztype] = seen.get(ztype, 0) + 1
        zones.append(Zone(d, ztype, f"thermal/{ztype}"))
    for zone in zones:  # the same type twice (two "battery" zones): tell them apart by zone
        if seen[zone.type] > 1:
            zone.sensor = f"thermal/{zone.type}@{zone.path.rsplit('/', 1)[1]}"
    zones = [z for z in zones if not _absent(z, temps.get(f"{z.path}/temp"))]
    _read_trips(fs, zones)
    return zones


def _absent(zone: Zone, raw: object) -> bool:
    """Zones that measure nothing: Jetson lists zones for blocks a module lacks (the DLA "cv" zones on Orin
    Nano) at -256 C, and Xavier's PMIC-Die zone is a constant 100 C placeholder."""
    value = parse_number(raw) if isinstance(raw, str) else None
    if value is None:
        return False
    celsius = millidegrees(value)
    return celsius <= ABSENT_C or (zone.type == "PMIC-Die" and celsius == 100.0)


def _read_trips(fs: FS, zones: List[Zone]) -> None:
    by_path = {z.path: z for z in zones}
    # One glob for all zones: over adb every glob is a round trip.
    type_files = [p for p in fs.glob(f"{ROOT}/thermal_zone*/trip_point_*_type") if p.rsplit("/", 1)[0] in by_path]
    temp_files = [p[: -len("_type")] + "_temp" for p in type_files]
    values = fs.read_many(type_files + temp_files)
    for type_file, temp_file in zip(type_files, temp_files):
        ttype, ttemp = values[type_file], values[temp_file]
        if not isinstance(ttype, str) or not isinstance(ttemp, str):
            continue
        temp = parse_number(ttemp)
        # Unused trips read as 0 or a huge sentinel on some boards; they bound nothing.
        if temp is None or temp <= 0 or temp >= 500_000:
            continue
        zone = by_path[type_file.rsplit("/", 1)[0]]
        zone.trips.setdefault(ttype.strip(), []).append(millidegrees(temp))


class ThermalSensor(Sensor):
    """All thermal zones, read in one batch."""

    plugin = "thermal"
    kinds = ("temperature",)

    def __init__(self, fs: FS, runner: CommandRunner, zones: List[Zone]):
        super().__init__("thermal", fs, runner)
        self.zones = zones

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        zones = discover_zones(fs)
        return [cls(fs, runner, zones)] if zones else []

    def _read(self) -> List[Reading]:
        files = self.batch([f"{z.path}/temp" for z in self.zones])
        out = []
        for zone in self.zones:
            path = f"{zone.path}/temp"
            raw = self.parse(path, files[path])
            if raw is None:
                continue
            out.append(reading(zone.sensor, "temperature", millidegrees(raw), self.fs.source(path),
                               zone=zone.path.rsplit("/", 1)[1],
                               trip_passive_c=zone.lowest("passive"),
                               trip_hot_c=zone.lowest("hot"),
                               trip_critical_c=zone.lowest("critical")))
        return out


SENSORS = (ThermalSensor,)


def board_info(fs: FS, runner: CommandRunner) -> dict:
    zones = discover_zones(fs)
    trips = {z.type: {t: sorted(v) for t, v in z.trips.items()} for z in zones if z.trips}
    return {"thermal_trips_c": trips} if trips else {}
