"""NVIDIA Jetson: the nvpmodel power mode and ``tegrastats`` where the power monitors are not readable.

Power mode: ``nvpmodel -q`` prints ``NV Power Mode: 15W`` and the mode id on the next line. Without the
command (or without permission) the current id is in /var/lib/nvpmodel/status (``pmode:0000``) and the
names in /etc/nvpmodel.conf (``< POWER_MODEL ID=0 NAME=15W >``, boot default ``< PM_CONFIG DEFAULT=0 >``).

tegrastats (NVIDIA Jetson Linux Developer Guide, "tegrastats Utility") prints one line per interval:

    RAM 2248/7620MB (lfb 1165x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,0%@729,off,...] EMC_FREQ 0%@2133
    GR3D_FREQ 0%@[624] cpu@47.656C soc2@46.281C tj@47.656C VDD_IN 4761mW/4761mW VDD_CPU_GPU_CV 522mW/522mW

Older releases print rails without the unit (``POM_5V_IN 2345/2345``, ``VDD_IN 4520/4520``: current/average
in mW) and capitalised temperatures (``CPU@40.5C``). A temperature of -256C means the zone is absent and
``PMIC@100C`` is a fixed placeholder, so both are left out. The hwmon plugin reads the same INA3221 rails
from sysfs more cheaply; tegrastats is used only on a Jetson whose rails sysfs does not let us read.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from edgebench.agent.sensors.base import Reading, Sensor, describe_oserror, parse_number, reading
from edgebench.agent.sensors.commands import CommandRunner, LineStream
from edgebench.agent.sensors.fs import FS
from edgebench.agent.sensors.hwmon import IIO_GLOB, rail_role

CONF = "/etc/nvpmodel.conf"
STATUS = "/var/lib/nvpmodel/status"
INTERVAL_MS = 200
TEGRASTATS = ("tegrastats", "--interval", str(INTERVAL_MS))

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_ENTRY = re.compile(r"(\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][\w.-]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


@dataclass
class Tegrastats:
    ram_used_mb: Optional[int] = None
    ram_total_mb: Optional[int] = None
    swap_used_mb: Optional[int] = None
    swap_total_mb: Optional[int] = None
    cpus: List[Optional[Tuple[int, Optional[int]]]] = field(default_factory=list)  # (load %, MHz); None = off
    gpu: Optional[Tuple[int, Optional[int]]] = None
    emc: Optional[Tuple[int, Optional[int]]] = None
    temps: Dict[str, float] = field(default_factory=dict)
    rails: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # mW now, mW average


def _pair(m: Optional[re.Match]) -> Optional[Tuple[int, Optional[int]]]:
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


def parse_tegrastats(line: str) -> Tegrastats:
    ts = Tegrastats()
    for regex, attrs in ((_RAM, ("ram_used_mb", "ram_total_mb")), (_SWAP, ("swap_used_mb", "swap_total_mb"))):
        m = regex.search(line)
        if m:
            setattr(ts, attrs[0], int(m.group(1)))
            setattr(ts, attrs[1], int(m.group(2)))
    m = _CPU.search(line)
    if m:
        for entry in m.group(1).split(","):
            ts.cpus.append(_pair(_CPU_ENTRY.match(entry.strip())))
    ts.gpu, ts.emc = _pair(_GR3D.search(line)), _pair(_EMC.search(line))
    for name, value in _TEMP.findall(line):
        temp = float(value)
        if temp <= -100 or (name.upper() == "PMIC" and temp == 100.0):
            continue
        ts.temps[name] = temp
    for name, now, avg in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            ts.rails[name] = (float(now), float(avg))
    return ts


def tegrastats_readings(ts: Tegrastats, source: str) -> List[Reading]:
    out: List[Reading] = []
    for name, (now, avg) in ts.rails.items():
        out.append(reading(f"tegrastats/{name}/power", "power", now / 1000.0, source, rail=name,
                           role=rail_role(name), avg_w=avg / 1000.0))
    for name, temp in ts.temps.items():
        out.append(reading(f"tegrastats/temp/{name}", "temperature", temp, source))
    for i, cpu in enumerate(ts.cpus):
        if cpu is not None and cpu[1] is not None:
            out.append(reading(f"tegrastats/cpu{i}/cur", "frequency", cpu[1] * 1e6, source, role="current",
                               load_pct=cpu[0]))
    for name, unit in (("gpu", ts.gpu), ("emc", ts.emc)):
        if unit is not None and unit[1] is not None:
            out.append(reading(f"tegrastats/{name}/cur", "frequency", unit[1] * 1e6, source, role="current",
                               load_pct=unit[0]))
    if ts.ram_used_mb is not None:
        out.append(reading("tegrastats/ram_used", "memory", ts.ram_used_mb * 2**20, source,
                           total_b=(ts.ram_total_mb or 0) * 2**20))
    return out


def parse_nvpmodel_query(text: Optional[str]) -> Tuple[Optional[str], Optional[int]]:
    """(mode name, mode id) from ``nvpmodel -q``."""
    name, ident = None, None
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(\S+)", line)
        if m:
            name = m.group(1)
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                ident = int(lines[i + 1])
    return name, ident


def parse_nvpmodel_conf(text: str) -> Tuple[Dict[int, str], Optional[int]]:
    """({id: name}, boot default id) from /etc/nvpmodel.conf."""
    modes = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", text)}
    m = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", text)
    return modes, int(m.group(1)) if m else None


def parse_l4t_release(text: str) -> Optional[str]:
    """"R36.3.0" from /etc/nv_tegra_release (``# R36 (release), REVISION: 3.0, ...``)."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def device_model(fs: FS) -> Optional[str]:
    try:
        return fs.read_text("/proc/device-tree/model").strip("\x00\n ") or None
    except OSError:
        return None


def is_jetson(fs: FS) -> bool:
    return "Jetson" in (device_model(fs) or "") or fs.exists("/etc/nv_tegra_release")


def power_mode(fs: FS, runner: CommandRunner) -> Optional[Dict[str, object]]:
    """{"name", "id", "source"} of the current power mode, or None."""
    name, ident = parse_nvpmodel_query(runner.run(["nvpmodel", "-q"]))
    if name is not None:
        return {"name": name, "id": ident, "source": "nvpmodel -q"}
    try:
        modes, default = parse_nvpmodel_conf(fs.read_text(CONF))
    except OSError:
        return None
    try:
        m = re.search(r"pmode:(\d+)", fs.read_text(STATUS))
    except OSError:
        m = None
    if m:
        ident = int(m.group(1))
        return {"name": modes.get(ident, str(ident)), "id": ident, "source": STATUS}
    if default is not None:  # nothing says the mode was changed since boot
        return {"name": modes.get(default, str(default)), "id": default, "source": f"{CONF} (boot default)"}
    return None


class PowerModeSensor(Sensor):
    plugin = "jetson"
    kinds = ("state",)
    min_interval_s = 5.0  # the mode changes only when someone runs nvpmodel

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("jetson/power_mode", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not is_jetson(fs) or power_mode(fs, runner) is None:
            return []
        return [cls(fs, runner)]

    def _read(self) -> List[Reading]:
        mode = power_mode(self.fs, self.runner)
        if mode is None:
            self.error("nvpmodel", "power mode unknown")
            return []
        return [reading("jetson/power_mode", "state", str(mode["name"]), str(mode["source"]), id=mode["id"])]


def rails_readable(fs: FS) -> bool:
    """Whether the INA3221 rails can be read from sysfs (hwmon or the older iio layout)."""
    names = fs.read_many(fs.glob("/sys/class/hwmon/hwmon*/name"))
    files = [p.rsplit("/", 1)[0] + "/curr1_input" for p, n in names.items()
             if isinstance(n, str) and n.strip() == "ina3221"]
    files += [f"{d}/in_power0_input" for d in fs.glob(IIO_GLOB)]
    return any(isinstance(v, str) and parse_number(v) is not None for v in fs.read_many(files).values())


class TegrastatsSensor(Sensor):
    """Rails, temperatures, clocks and RAM from tegrastats. On the board it keeps one tegrastats process
    running and parses its latest line; other runners (recorded outputs) give one line per read."""

    plugin = "jetson"
    kinds = ("power", "temperature", "frequency", "memory")

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("jetson/tegrastats", fs, runner)
        self._stream: Optional[LineStream] = None

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not is_jetson(fs) or rails_readable(fs) or not runner.available("tegrastats"):
            return []
        return [cls(fs, runner)]

    def _line(self) -> Optional[str]:
        if self._stream is not None and not self._stream.alive:
            self.close()
        if self._stream is None:
            self._stream = self.runner.stream(TEGRASTATS)
        if self._stream is not None:
            return self._stream.latest(wait_s=2 * INTERVAL_MS / 1000 + 1.0)
        return self.runner.first_line(TEGRASTATS)

    def _read(self) -> List[Reading]:
        try:
            line = self._line()
        except OSError as exc:
            self.error("tegrastats", describe_oserror(exc))
            return []
        if line is None:
            self.error("tegrastats", "no output")
            return []
        out = tegrastats_readings(parse_tegrastats(line), self.runner.describe(TEGRASTATS))
        if not out:
            self.error("tegrastats", f"unrecognised line {line[:60]!r}")
        return out

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


SENSORS = (PowerModeSensor, TegrastatsSensor)


def board_info(fs: FS, runner: CommandRunner) -> dict:
    if not is_jetson(fs):
        return {}
    info: Dict[str, object] = {"model": device_model(fs)}
    with contextlib.suppress(OSError):
        info["l4t"] = parse_l4t_release(fs.read_text("/etc/nv_tegra_release"))
    mode = power_mode(fs, runner)
    if mode is not None:
        info["power_mode"] = mode
    try:
        modes, default = parse_nvpmodel_conf(fs.read_text(CONF))
        info["power_modes"] = {str(k): v for k, v in sorted(modes.items())}
        info["power_mode_default"] = default
    except OSError:
        pass
    return {"jetson": info}
