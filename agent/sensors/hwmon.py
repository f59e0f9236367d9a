"""hwmon devices and the power monitors on them, plus the older Jetson INA3221 iio layout.

hwmon units (Documentation/hwmon/sysfs-interface.rst): ``temp*_input`` millidegree C, ``in*_input`` mV,
``curr*_input`` mA, ``power*_input``/``power*_average`` uW, ``energy*_input`` uJ; ``*_label`` names a
channel. A power monitor (INA219/INA226 through ina2xx, INA3221) measures one rail per channel number: the
bus voltage ``in{n}`` and current ``curr{n}`` share ``n``. Where the chip has no ``power{n}`` file the rail's
power is V x I (labelled ``derived``). Shunt-voltage channels (ina2xx ``in0``, ina3221 ``in4``..``in7``) are
left out: millivolts across a resistor are not a rail.

Older Jetsons (L4T 32: Nano, TX2, Xavier NX) use NVIDIA's iio driver instead:
/sys/bus/i2c/drivers/ina3221x/*/iio:device*/{rail_name_N, in_power{N}_input mW, in_voltage{N}_input mV,
in_current{N}_input mA}.

The rail that feeds the whole board (VDD_IN, POM_5V_IN) is labelled ``role=board_input``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edgebench.agent.sensors.base import TOTAL_INPUT_RAILS, Reading, Sensor, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS, ReadResult
from edgebench.agent.sensors.thermal import ROOT as THERMAL_ROOT

ROOT = "/sys/class/hwmon"
IIO_GLOB = "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"

_FILE = re.compile(r"^(temp|in|curr|power|energy)(\d+)_(input|average|label|lcrit_alarm)$")
# prefix -> (kind, scale to SI)
_SCALE = {"temp": ("temperature", 1e-3), "in": ("voltage", 1e-3), "curr": ("current", 1e-3),
          "power": ("power", 1e-6), "energy": ("energy", 1e-6)}


def rail_role(name: str) -> str:
    return "board_input" if name.upper() in TOTAL_INPUT_RAILS else "rail"


@dataclass
class Channel:
    sensor: str  # reading id
    kind: str
    path: str
    scale: float
    labels: Dict[str, str]


@dataclass
class Rail:
    name: str
    voltage: str  # file paths
    current: str
    power: Optional[str]
    power_scale: float
    volt_scale: float = 1e-3
    curr_scale: float = 1e-3


def _is_shunt(device: str, prefix: str, n: int, label: Optional[str]) -> bool:
    if label and "shunt" in label.lower():
        return True
    if prefix != "in":
        return False
    if device.startswith("ina2") and n == 0:
        return True
    return device == "ina3221" and n >= 4


class HwmonSensor(Sensor):
    """One hwmon device: its temperatures, voltages, currents, powers, energies and power-monitor rails."""

    plugin = "hwmon"
    kinds = ("temperature", "voltage", "current", "power", "energy", "state")

    def __init__(self, fs: FS, runner: CommandRunner, path: str, device: str, ident: str,
                 channels: List[Channel], rails: List[Rail]):
        super().__init__(f"hwmon/{ident}", fs, runner)
        self.path = path
        self.device = device
        self.ident = ident
        self.channels = channels
        self.rails = rails

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        dirs = fs.glob(f"{ROOT}/hwmon*")
        if not dirs:
            return []
        names = fs.read_many([f"{d}/name" for d in dirs])
        devices = {d: (names[f"{d}/name"].strip() if isinstance(names[f"{d}/name"], str) else d.rsplit("/", 1)[1])
                   for d in dirs}
        counts: Dict[str, int] = {}
        for name in devices.values():
            counts[name] = counts.get(name, 0) + 1
        mirrors = _thermal_mirrors(fs)
        found = _scan(fs)
        label_files = [f["label"] for channels in found.values() for f in channels.values() if "label" in f]
        texts = fs.read_many(label_files)  # every label of every device in one round trip
        sensors: List[Sensor] = []
        for d, name in devices.items():
            ident = name if counts[name] == 1 else f"{name}@{d.rsplit('/', 1)[1]}"
            sensor = _build(fs, runner, d, name, ident, found.get(d, {}), texts, skip_temps=name in mirrors)
            if sensor is not None:
                sensors.append(sensor)
        return sensors

    def _read(self) -> List[Reading]:
        paths = [c.path for c in self.channels]
        for rail in self.rails:
            paths += [rail.voltage, rail.current] + ([rail.power] if rail.power else [])
        files = self.batch(paths)
        out: List[Reading] = []
        for ch in self.channels:
            raw = self.parse(ch.path, files[ch.path])
            if raw is None:
                continue
            if ch.kind == "state":
                out.append(reading(ch.sensor, "state", "alarm" if raw else "ok", self.fs.source(ch.path),
                                   **ch.labels))
            else:
                out.append(reading(ch.sensor, ch.kind, raw * ch.scale, self.fs.source(ch.path), **ch.labels))
        for rail in self.rails:
            out += rail_readings(self, f"{self.name}/{rail.name}", rail, files)
        return out


def rail_readings(sensor: Sensor, prefix: str, rail: Rail, files: Dict[str, Optional[str]]) -> List[Reading]:
    """Voltage, current and power of one rail; power = V x I when the chip gives no power file."""
    volts = sensor.parse(rail.voltage, files.get(rail.voltage), rail.volt_scale)
    amps = sensor.parse(rail.current, files.get(rail.current), rail.curr_scale)
    watts = sensor.parse(rail.power, files.get(rail.power), rail.power_scale) if rail.power else None
    role = rail_role(rail.name)
    source = sensor.fs.source
    out = []
    if volts is not None:
        out.append(reading(f"{prefix}/voltage", "voltage", volts, source(rail.voltage), rail=rail.name))
    if amps is not None:
        out.append(reading(f"{prefix}/current", "current", amps, source(rail.current), rail=rail.name))
    if watts is not None:
        out.append(reading(f"{prefix}/power", "power", watts, source(rail.power), rail=rail.name, role=role))
    elif rail.power is None and volts is not None and amps is not None:
        out.append(reading(f"{prefix}/power", "power", volts * amps, source(rail.current), rail=rail.name,
                           role=role, derived="V*I"))
    return out


def _thermal_mirrors(fs: FS) -> set:
    """hwmon devices that only mirror a thermal zone (the kernel names them after the zone type, with '-'
    made '_'): their temperature is already read from the zone."""
    zones = fs.glob(f"{THERMAL_ROOT}/thermal_zone*/type")
    types = fs.read_many(zones)
    return {t.strip().replace("-", "_") for t in types.values() if isinstance(t, str)}


Channels = Dict[Tuple[str, int], Dict[str, str]]  # (prefix, n) -> {"input": path, "label": path, ...}


def _scan(fs: FS) -> Dict[str, Channels]:
    """device dir -> its channel files, from one glob (over adb every glob is a round trip)."""
    found: Dict[str, Channels] = {}
    for file in fs.glob(f"{ROOT}/hwmon*/*_*"):
        d, _, base = file.rpartition("/")
        m = _FILE.match(base)
        if m:
            found.setdefault(d, {}).setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = file
    return found


def _build(fs: FS, runner: CommandRunner, path: str, device: str, ident: str, found: Channels,
           texts: Dict[str, ReadResult], skip_temps: bool) -> Optional[HwmonSensor]:
    labels = {key: texts[f["label"]].strip() for key, f in found.items()
              if "label" in f and isinstance(texts[f["label"]], str)}
    rails = _rails(device, found, labels)
    in_rail = {(prefix, n) for n in rails for prefix in ("in", "curr", "power")}
    channels: List[Channel] = []
    for (prefix, n), files in sorted(found.items()):
        label = labels.get((prefix, n))
        if (prefix, n) in in_rail or _is_shunt(device, prefix, n, label):
            continue
        if prefix == "temp" and skip_temps:
            continue
        name = label or f"{prefix}{n}"
        value_file = files.get("input") or files.get("average")
        if value_file:
            kind, scale = _SCALE[prefix]
            extra = {"chip": device}
            if prefix == "power" and device in ("amdgpu", "nouveau"):
                extra["role"] = "gpu"
            channels.append(Channel(f"hwmon/{ident}/{name}", kind, value_file, scale, extra))
        if "lcrit_alarm" in files:  # a voltage under its lower limit: rpi_volt in0 is the Pi's under-voltage flag
            meaning = "under-voltage" if device == "rpi_volt" else "below lower critical limit"
            channels.append(Channel(f"hwmon/{ident}/{prefix}{n}_lcrit_alarm", "state", files["lcrit_alarm"], 1.0,
                                    {"chip": device, "meaning": meaning}))
    if not channels and not rails:
        return None
    return HwmonSensor(fs, runner, path, device, ident, channels, list(rails.values()))


def _rails(device: str, found, labels) -> Dict[int, Rail]:
    """Channel number -> rail, for every in{n}/curr{n} pair."""
    rails: Dict[int, Rail] = {}
    for (prefix, n), files in sorted(found.items()):
        if prefix != "curr" or "input" not in files:
            continue
        volt = found.get(("in", n), {}).get("input")
        if volt is None or _is_shunt(device, "in", n, labels.get(("in", n))):
            continue
        power = found.get(("power", n), {})
        name = labels.get(("in", n)) or labels.get(("curr", n)) or f"rail{n}"
        rails[n] = Rail(name, volt, files["input"], power.get("input") or power.get("average"), 1e-6)
    return rails


class Ina3221IioSensor(Sensor):
    """The L4T 32 ina3221x iio driver: rails with power (mW), voltage (mV) and current (mA) files."""

    plugin = "hwmon"
    kinds = ("voltage", "current", "power")

    def __init__(self, fs: FS, runner: CommandRunner, path: str, rails: List[Rail], ident: str):
        super().__init__(ident, fs, runner)
        self.path = path
        self.rails = rails

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        dirs = fs.glob(IIO_GLOB)
        sensors: List[Sensor] = []
        for d in dirs:
            name_files = fs.glob(f"{d}/rail_name_*")
            names = fs.read_many(name_files)
            rails = []
            for file in name_files:
                n = file.rsplit("_", 1)[1]
                text = names[file]
                rail = text.strip() if isinstance(text, str) and text.strip() else f"rail{n}"
                rails.append(Rail(rail, f"{d}/in_voltage{n}_input", f"{d}/in_current{n}_input",
                                  f"{d}/in_power{n}_input", 1e-3))
            if rails:
                ident = "ina3221x" if len(dirs) == 1 else f"ina3221x@{d.split('/')[-2]}"
                sensors.append(cls(fs, runner, d, rails, ident))
        return sensors

    def _read(self) -> List[Reading]:
        paths = [p for r in self.rails for p in (r.voltage, r.current, r.power) if p]
        files = self.batch(paths)
        out: List[Reading] = []
        for rail in self.rails:
            out += rail_readings(self, f"{self.name}/{rail.name}", rail, files)
        return out


SENSORS = (HwmonSensor, Ina3221IioSensor)
