"""Intel RAPL energy counters through powercap (Documentation/power/powercap/powercap.rst).

/sys/class/powercap/intel-rapl:N is a package (``name`` package-N) or the platform (psys);
intel-rapl:N:M its sub-domains (core, uncore, dram). ``energy_uj`` counts microjoules and wraps to 0 past
``max_energy_range_uj`` (about 262 kJ: 45 minutes at 100 W), so power is the difference of two reads with
the wrap added back. Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694): as another
user the domain is still listed and each read records "permission denied".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edgebench.agent.sensors.base import Reading, Sensor, parse_number, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

ROOT = "/sys/class/powercap"


@dataclass
class Domain:
    path: str
    sensor: str  # rapl/package-0, rapl/package-0/core
    name: str
    max_range_uj: Optional[float]
    role: str


def counter_delta(prev: float, cur: float, max_range: Optional[float]) -> float:
    """cur - prev for a counter that wraps to 0 after ``max_range``. Without a range a drop is a reset:
    the energy since the reset is ``cur``. More than one wrap between reads cannot be seen."""
    if cur >= prev:
        return cur - prev
    return cur + (max_range - prev) if max_range else cur


def discover_domains(fs: FS) -> List[Domain]:
    dirs = fs.glob(f"{ROOT}/intel-rapl:*")
    files = fs.read_many([f"{d}/{n}" for d in dirs for n in ("name", "max_energy_range_uj")])
    names: Dict[str, str] = {}
    for d in dirs:
        text = files[f"{d}/name"]
        names[d] = text.strip() if isinstance(text, str) else d.rsplit("/", 1)[1]
    domains = []
    for d in dirs:
        zone = d.rsplit("/", 1)[1]  # intel-rapl:0:1
        parent = f"{ROOT}/{zone.rsplit(':', 1)[0]}" if zone.count(":") == 2 else None
        sensor = f"rapl/{names[parent]}/{names[d]}" if parent in names else f"rapl/{names[d]}"
        top = names[d]
        role = "platform" if top == "psys" else "package" if top.startswith("package") else "rail"
        raw_range = files[f"{d}/max_energy_range_uj"]
        max_range = parse_number(raw_range) if isinstance(raw_range, str) else None
        domains.append(Domain(d, sensor, names[d], max_range, role if parent is None else "rail"))
    return domains


class RaplSensor(Sensor):
    """Every RAPL domain: the cumulative counter (J) and the power since the previous read (W)."""

    plugin = "rapl"
    kinds = ("energy", "power")
    rate_based = True

    def __init__(self, fs: FS, runner: CommandRunner, domains: List[Domain], clock=None):
        super().__init__("rapl", fs, runner)
        self.domains = domains
        self._clock = clock or time.perf_counter_ns
        self._last: Dict[str, Tuple[int, float]] = {}  # path -> (t_ns, uJ)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        domains = discover_domains(fs)
        return [cls(fs, runner, domains)] if domains else []

    def _read(self) -> List[Reading]:
        t = self._clock()
        files = self.batch([f"{d.path}/energy_uj" for d in self.domains])
        out: List[Reading] = []
        for d in self.domains:
            path = f"{d.path}/energy_uj"
            uj = self.parse(path, files[path])
            if uj is None:
                continue
            src = self.fs.source(path)
            max_j = d.max_range_uj / 1e6 if d.max_range_uj else None
            out.append(reading(f"{d.sensor}/energy", "energy", uj / 1e6, src, domain=d.name, counter="wraps",
                               max_range_j=max_j))
            last = self._last.get(d.path)
            self._last[d.path] = (t, uj)
            if last is not None and t > last[0]:
                joules = counter_delta(last[1], uj, d.max_range_uj) / 1e6
                out.append(reading(f"{d.sensor}/power", "power", joules / ((t - last[0]) / 1e9), src,
                                   domain=d.name, role=d.role, derived="counter delta"))
        return out


SENSORS = (RaplSensor,)
