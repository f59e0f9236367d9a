"""Temperatures through ``psutil.sensors_temperatures()`` (coretemp, k10temp, acpitz...), on the live root only.

On Linux psutil reads the same /sys/class/hwmon files the hwmon plugin reads, so this plugin stands aside
when hwmon temperatures exist; it covers systems where psutil finds temperatures another way (FreeBSD) or
where hwmon is absent but psutil's thermal-zone fallback works.
"""

from __future__ import annotations

import logging
from typing import List

from edgebench.agent.sensors.base import Reading, Sensor, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

log = logging.getLogger(__name__)


def _temperatures() -> dict:
    import psutil

    func = getattr(psutil, "sensors_temperatures", None)
    if func is None:
        return {}
    try:
        return func() or {}
    except (OSError, RuntimeError) as exc:
        log.debug("psutil.sensors_temperatures failed: %s", exc)
        return {}


class PsutilTempSensor(Sensor):
    plugin = "psutil_temps"
    kinds = ("temperature",)

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("psutil", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not fs.live or fs.glob("/sys/class/hwmon/hwmon*/temp*_input"):
            return []
        return [cls(fs, runner)] if _temperatures() else []

    def _read(self) -> List[Reading]:
        out = []
        for chip, entries in sorted(_temperatures().items()):
            for i, entry in enumerate(entries):
                label = entry.label or f"temp{i + 1}"
                out.append(reading(f"psutil/{chip}/{label}", "temperature", float(entry.current),
                                   "psutil.sensors_temperatures", high_c=entry.high, critical_c=entry.critical))
        return out


SENSORS = (PsutilTempSensor,)
