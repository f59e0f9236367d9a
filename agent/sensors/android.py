"""Android phones (Termux on the device, or adb from a host), and any Linux battery.

Battery: /sys/class/power_supply/<name>/ with ``type`` = Battery (kernel ABI sysfs-class-power):
``current_now`` uA, ``voltage_now`` uV, ``power_now`` uW, ``temp`` tenths of a degree C, ``capacity`` %,
``status`` (Charging, Discharging, Not charging, Full, Unknown). The ABI says current is negative while
discharging, but phones disagree, so two heuristics apply (override with EDGEBENCH_BATTERY_CURRENT_UNIT=uA|mA):

- unit: some vendor kernels report mA. A magnitude under 10000 is taken as mA: in uA it would be under 10 mA,
  which a phone only draws asleep, never while it runs a benchmark (and 10000 mA would be beyond any phone
  battery, so the two ranges do not overlap in practice). Voltage: over 100000 is uV, over 1000 mV, else V.
- sign: readings are normalised to discharge-positive (``android/battery/current`` > 0 means the battery
  is being drained). While ``status`` is Discharging the magnitude is used whatever the sign convention;
  otherwise the ABI convention is assumed (negative = discharging). The label ``sign`` records what was seen.

Battery power is ``power_now`` if the driver has it, else V x I; with the charger plugged it is the
battery's net flow, not the phone's draw, so ``status`` is kept as a label: measure energy unplugged.

``dumpsys thermalservice`` gives the thermal status (0 NONE .. 6 SHUTDOWN, android.os.PowerManager) and
the HAL's temperatures (``Temperature{mValue=38.2, mType=0, mName=cpu0, mStatus=0}``); ``dumpsys battery``
is the fallback when the battery sysfs is not readable (voltage mV, temperature tenths of C); ``getprop``
gives the model, board platform and SoC. dumpsys needs the shell user: it works over adb, not in Termux.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edgebench.agent.sensors.base import Reading, Sensor, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

ROOT = "/sys/class/power_supply"
CURRENT_UNIT_ENV = "EDGEBENCH_BATTERY_CURRENT_UNIT"
MA_BELOW = 10_000

THERMAL_STATUS = {0: "NONE", 1: "LIGHT", 2: "MODERATE", 3: "SEVERE", 4: "CRITICAL", 5: "EMERGENCY",
                  6: "SHUTDOWN"}
TEMPERATURE_TYPES = {-1: "UNKNOWN", 0: "CPU", 1: "GPU", 2: "BATTERY", 3: "SKIN", 4: "USB_PORT",
                     5: "POWER_AMPLIFIER", 6: "BCL_VOLTAGE", 7: "BCL_CURRENT", 8: "BCL_PERCENTAGE", 9: "NPU"}
BATTERY_STATUS = {1: "Unknown", 2: "Charging", 3: "Discharging", 4: "Not charging", 5: "Full"}
PROPS = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
         "board_platform": "ro.board.platform", "soc_manufacturer": "ro.soc.manufacturer",
         "soc_model": "ro.soc.model", "hardware": "ro.hardware", "android_release": "ro.build.version.release",
         "sdk": "ro.build.version.sdk"}


# -- unit and sign heuristics (pure, unit-tested)

def current_amps(raw: float, unit: Optional[str] = None) -> Tuple[float, str]:
    """(amps, unit the raw value was taken in)."""
    unit = unit or os.environ.get(CURRENT_UNIT_ENV) or ("mA" if 0 < abs(raw) < MA_BELOW else "uA")
    return (raw / 1e3, "mA") if unit == "mA" else (raw / 1e6, "uA")


def voltage_volts(raw: float) -> Tuple[float, str]:
    if raw > 100_000:
        return raw / 1e6, "uV"
    if raw > 1000:
        return raw / 1e3, "mV"
    return raw, "V"


def discharge_current(amps: float, status: Optional[str]) -> Tuple[float, str]:
    """(current with discharging positive, the sign convention seen)."""
    if status == "Discharging":
        return abs(amps), "negative-discharging" if amps < 0 else "positive-discharging"
    return -amps, "abi (negative-discharging) assumed"


# -- dumpsys / getprop parsers

@dataclass
class HalTemperature:
    name: str
    value: float
    type: str
    status: int


_HAL_TEMP = re.compile(r"Temperature\{mValue=(-?[\d.]+), mType=(-?\d+), mName=([^,]+), mStatus=(-?\d+)\}")


def parse_thermalservice(text: str) -> Tuple[Optional[int], List[HalTemperature]]:
    """(thermal status, temperatures) from ``dumpsys thermalservice``; the HAL's current temperatures are
    preferred to the cached ones."""
    m = re.search(r"^\s*Thermal Status:\s*(\d+)", text, re.M)
    status = int(m.group(1)) if m else None
    section = text
    for header in ("Current temperatures from HAL:", "Cached temperatures:"):
        if header in text:
            section = text.split(header, 1)[1]
            section = re.split(r"\n\S", section, maxsplit=1)[0]  # up to the next unindented header
            break
    temps = [HalTemperature(n.strip(), float(v), TEMPERATURE_TYPES.get(int(t), t), int(s))
             for v, t, n, s in _HAL_TEMP.findall(section)]
    return status, temps


def parse_dumpsys_battery(text: str) -> Dict[str, str]:
    """The ``key: value`` lines of ``dumpsys battery`` (keys lower-cased)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and value.strip():
            out[key.strip().lower()] = value.strip()
    return out


def parse_getprop(text: str) -> Dict[str, str]:
    return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, re.M))


# -- sensors

class BatterySensor(Sensor):
    plugin = "android"
    kinds = ("current", "voltage", "power", "temperature", "percent", "state")

    FILES = ("current_now", "voltage_now", "power_now", "temp", "capacity", "status")

    def __init__(self, fs: FS, runner: CommandRunner, path: str, ident: str, files: Tuple[str, ...] = FILES):
        super().__init__(ident, fs, runner)
        self.path = path
        self.files = files  # the FILES this battery has; a file that vanishes later is a read error

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        types = fs.read_many(fs.glob(f"{ROOT}/*/type"))
        dirs = [p.rsplit("/", 1)[0] for p, t in types.items() if isinstance(t, str) and t.strip() == "Battery"]
        sensors: List[Sensor] = []
        for d in dirs:
            name = d.rsplit("/", 1)[1]
            present = {p.rsplit("/", 1)[1] for p in fs.glob(f"{d}/*")}
            # Android names it "battery"; laptops BAT0, BAT1.
            ident = "android/battery" if name == "battery" else f"battery/{name}"
            sensors.append(cls(fs, runner, d, ident, tuple(n for n in cls.FILES if n in present)))
        return sensors

    def _read(self) -> List[Reading]:
        files = self.batch([f"{self.path}/{n}" for n in self.files])

        def num(name: str) -> Optional[float]:
            path = f"{self.path}/{name}"
            return self.parse(path, files.get(path))

        def src(name: str) -> str:
            return self.fs.source(f"{self.path}/{name}")

        status = files.get(f"{self.path}/status")
        out: List[Reading] = []
        if status:
            out.append(reading(f"{self.name}/status", "state", status, src("status")))
        volts = self._volts(num("voltage_now"), src("voltage_now"), out)
        amps = self._amps(num("current_now"), status, src("current_now"), out)
        power_uw = num("power_now")
        if power_uw is not None:
            watts = abs(power_uw) / 1e6 if status == "Discharging" else power_uw / 1e6
            out.append(reading(f"{self.name}/power", "power", watts, src("power_now"), role="battery",
                               status=status))
        elif volts is not None and amps is not None:
            out.append(reading(f"{self.name}/power", "power", volts * amps, src("current_now"), role="battery",
                               derived="V*I", status=status))
        temp = num("temp")
        if temp is not None:
            out.append(reading(f"{self.name}/temp", "temperature", temp / 10.0, src("temp")))
        level = num("capacity")
        if level is not None:
            out.append(reading(f"{self.name}/level", "percent", level, src("capacity")))
        return out

    def _volts(self, raw: Optional[float], source: str, out: List[Reading]) -> Optional[float]:
        if raw is None:
            return None
        volts, unit = voltage_volts(raw)
        out.append(reading(f"{self.name}/voltage", "voltage", volts, source, raw_unit=unit))
        return volts

    def _amps(self, raw: Optional[float], status: Optional[str], source: str,
              out: List[Reading]) -> Optional[float]:
        if raw is None:
            return None
        amps, unit = current_amps(raw)
        amps, sign = discharge_current(amps, status)
        out.append(reading(f"{self.name}/current", "current", amps, source, raw=int(raw), raw_unit=unit,
                           sign=sign, direction="discharge-positive"))
        return amps


class ThermalServiceSensor(Sensor):
    plugin = "android"
    kinds = ("state", "temperature")
    min_interval_s = 2.0  # dumpsys takes a few hundred ms
    ARGV = ("dumpsys", "thermalservice")

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("android/thermalservice", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not runner.available("dumpsys"):
            return []
        out = runner.run(list(cls.ARGV), 10.0)
        return [cls(fs, runner)] if out and parse_thermalservice(out)[0] is not None else []

    def _read(self) -> List[Reading]:
        text = self.command(self.ARGV, 10.0)
        if text is None:
            return []
        status, temps = parse_thermalservice(text)
        src = self.runner.describe(self.ARGV)
        out = []
        if status is None:
            self.error(src, "no 'Thermal Status' line")
        else:
            out.append(reading("android/thermal_status", "state", THERMAL_STATUS.get(status, str(status)), src,
                               code=status))
        for t in temps:
            out.append(reading(f"android/hal/{t.name}", "temperature", t.value, src, type=t.type,
                               throttling_status=THERMAL_STATUS.get(t.status, str(t.status))))
        return out


class DumpsysBatterySensor(Sensor):
    """The battery as the framework sees it: only when no power_supply battery is readable."""

    plugin = "android"
    kinds = ("voltage", "temperature", "percent", "state")
    min_interval_s = 2.0
    ARGV = ("dumpsys", "battery")

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("android/dumpsys_battery", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        battery = BatterySensor.discover(fs, runner)
        if any(any(r.sensor.endswith("/voltage") for r in s.read()) for s in battery):
            return []
        if not runner.available("dumpsys"):
            return []
        fields = parse_dumpsys_battery(runner.run(list(cls.ARGV), 10.0) or "")
        return [cls(fs, runner)] if "level" in fields else []

    def _read(self) -> List[Reading]:
        text = self.command(self.ARGV, 10.0)
        if text is None:
            return []
        f = parse_dumpsys_battery(text)
        src = self.runner.describe(self.ARGV)
        out: List[Reading] = []
        status = f.get("status")
        if status and status.isdigit():
            out.append(reading("android/dumpsys_battery/status", "state", BATTERY_STATUS.get(int(status), status), src))
        for key, sensor, kind, scale in (("voltage", "voltage", "voltage", 1e-3),
                                         ("temperature", "temp", "temperature", 0.1),
                                         ("level", "level", "percent", 1.0)):
            value = self.parse(f"{src}: {key}", f.get(key), scale) if key in f else None
            if value is not None:
                out.append(reading(f"android/dumpsys_battery/{sensor}", kind, value, src))
        return out


SENSORS = (BatterySensor, ThermalServiceSensor, DumpsysBatterySensor)


def board_info(fs: FS, runner: CommandRunner) -> dict:
    if not runner.available("getprop"):
        return {}
    props = parse_getprop(runner.run(["getprop"]) or "")
    info = {key: props[prop] for key, prop in PROPS.items() if props.get(prop)}
    return {"android": info} if info else {}
