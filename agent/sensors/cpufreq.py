"""CPU frequency per cpufreq policy: /sys/devices/system/cpu/cpufreq/policy*/.

Kernel ABI (Documentation/admin-guide/pm/cpufreq.rst): frequencies are in kHz. A policy is a cluster of
CPUs sharing one clock (``affected_cpus``): a big.LITTLE phone has two or three, a Pi one, an x86 host with
intel_pstate one per CPU. ``scaling_max_freq`` moves under thermal pressure (cpufreq cooling lowers it)
and under power modes (nvpmodel), so it is read on every tick like the current clock and the governor;
the hardware limits ``cpuinfo_min/max_freq`` and the CPU list are read once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from edgebench.agent.sensors.base import Reading, Sensor, parse_number, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

ROOT = "/sys/devices/system/cpu/cpufreq"
STATIC = ("cpuinfo_min_freq", "cpuinfo_max_freq", "affected_cpus")
DYNAMIC = ("scaling_cur_freq", "scaling_min_freq", "scaling_max_freq", "scaling_governor")


def cpu_list(text: str) -> List[int]:
    """CPUs from "0 1 2 3" (affected_cpus) or "0-3,6" (cpulist style)."""
    cpus: List[int] = []
    for part in text.replace(",", " ").split():
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpu_ranges(cpus: List[int]) -> str:
    """[0, 1, 2, 3, 6] -> "0-3,6"."""
    parts, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)


@dataclass
class Policy:
    name: str  # policy0
    path: str
    cpus: List[int] = field(default_factory=list)
    cpuinfo_min_hz: Optional[float] = None
    cpuinfo_max_hz: Optional[float] = None


def discover_policies(fs: FS) -> List[Policy]:
    dirs = fs.glob(f"{ROOT}/policy*")
    files = fs.read_many([f"{d}/{name}" for d in dirs for name in STATIC])
    policies = []
    for d in dirs:
        def text(name: str, d: str = d) -> Optional[str]:
            value = files[f"{d}/{name}"]
            return value.strip() if isinstance(value, str) else None
        lo, hi = parse_number(text("cpuinfo_min_freq")), parse_number(text("cpuinfo_max_freq"))
        policies.append(Policy(d.rsplit("/", 1)[1], d, cpu_list(text("affected_cpus") or ""),
                               lo * 1e3 if lo is not None else None, hi * 1e3 if hi is not None else None))
    return policies


class CpufreqSensor(Sensor):
    """Every policy: current, min and max clock, governor; hardware limits from discovery."""

    plugin = "cpufreq"
    kinds = ("frequency", "state")

    def __init__(self, fs: FS, runner: CommandRunner, policies: List[Policy]):
        super().__init__("cpufreq", fs, runner)
        self.policies = policies

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        policies = discover_policies(fs)
        return [cls(fs, runner, policies)] if policies else []

    def _read(self) -> List[Reading]:
        files = self.batch([f"{p.path}/{name}" for p in self.policies for name in DYNAMIC])
        out: List[Reading] = []
        for p in self.policies:
            out += self._policy(p, files)
        return out

    def _policy(self, p: Policy, files: Dict[str, Optional[str]]) -> List[Reading]:
        def khz(name: str) -> Optional[float]:
            path = f"{p.path}/{name}"
            return self.parse(path, files[path], 1e3)

        cur, lo, hi = khz("scaling_cur_freq"), khz("scaling_min_freq"), khz("scaling_max_freq")
        governor = files[f"{p.path}/scaling_governor"]
        common = {"policy": p.name, "cpus": cpu_ranges(p.cpus)}
        src = self.fs.source
        base = f"cpufreq/{p.name}"
        out = []
        if cur is not None:
            # The throttle check needs the governor and the max in force when the clock was read.
            out.append(reading(f"{base}/cur", "frequency", cur, src(f"{p.path}/scaling_cur_freq"), **common,
                               role="current", governor=governor, scaling_max_hz=hi,
                               cpuinfo_max_hz=p.cpuinfo_max_hz))
        limits = (("min", "scaling_min_freq", lo, "limit_min"), ("max", "scaling_max_freq", hi, "limit_max"),
                  ("cpuinfo_min", "cpuinfo_min_freq", p.cpuinfo_min_hz, "hw_min"),
                  ("cpuinfo_max", "cpuinfo_max_freq", p.cpuinfo_max_hz, "hw_max"))
        for suffix, file, hz, role in limits:
            if hz is not None:
                out.append(reading(f"{base}/{suffix}", "frequency", hz, src(f"{p.path}/{file}"), **common, role=role))
        if governor:
            out.append(reading(f"{base}/governor", "state", governor, src(f"{p.path}/scaling_governor"), **common))
        return out


SENSORS = (CpufreqSensor,)


def board_info(fs: FS, runner: CommandRunner) -> dict:
    """Governor and clock limits per policy (cluster): the run's provenance."""
    policies = discover_policies(fs)
    if not policies:
        return {}
    sensor = CpufreqSensor(fs, runner, policies)
    values = {r.sensor: r.value for r in sensor.read()}
    info = {}
    for p in policies:
        base = f"cpufreq/{p.name}"
        info[p.name] = {"cpus": cpu_ranges(p.cpus), "governor": values.get(f"{base}/governor"),
                        "cpuinfo_min_hz": p.cpuinfo_min_hz, "cpuinfo_max_hz": p.cpuinfo_max_hz,
                        "scaling_min_hz": values.get(f"{base}/min"), "scaling_max_hz": values.get(f"{base}/max")}
    return {"cpufreq": info}
