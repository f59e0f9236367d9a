"""Raspberry Pi firmware sensors through ``vcgencmd`` (Raspberry Pi documentation, "vcgencmd").

- ``measure_temp`` -> ``temp=52.6'C``; ``measure_clock arm`` -> ``frequency(48)=1800404352`` (Hz, the clock
  the firmware actually runs, which cpufreq's scaling_cur_freq does not show when the firmware throttles);
  ``measure_volts core`` -> ``volt=0.8563V``.
- ``get_throttled`` -> ``throttled=0x50005``: bits 0-3 are now (under-voltage, arm frequency capped,
  throttled, soft temperature limit), bits 16-19 the same since boot. The reading (role ``throttle_bits``)
  keeps the hex value; ``throttle_state(value)`` decodes it into a ``ThrottleState`` for callers.
- Pi 5 ``pmic_read_adc``: one line per PMIC channel, ``VDD_CORE_A current(7)=0.82950400A`` and
  ``VDD_CORE_V volt(15)=0.88187950V``; a rail with both _A and _V gives V x I, and the sum over rails is the
  board's power as the PMIC sees it (its 5 V input current is not measured, so USB/HAT loads and the
  PMIC's own conversion losses are not in it: it reads below wall power).

vcgencmd costs a process per call, so the sampler reads these at most once a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from edgebench.agent.sensors.base import THROTTLE_BITS_ROLE, Reading, Sensor, parse_number, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

THROTTLE_BITS = {0: "under_voltage", 1: "arm_freq_capped", 2: "throttled", 3: "soft_temp_limit"}
SINCE_BOOT_SHIFT = 16

_TEMP = re.compile(r"temp=(-?[\d.]+)'?C")
_CLOCK = re.compile(r"frequency\(\d+\)=(\d+)")
_VOLT = re.compile(r"volt=([\d.]+)V")
_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")
_PMIC = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=(-?[\d.]+)[AV]\s*$")


def parse_temp(text: Optional[str]) -> Optional[float]:
    m = _TEMP.search(text or "")
    return float(m.group(1)) if m else None


def parse_clock(text: Optional[str]) -> Optional[float]:
    m = _CLOCK.search(text or "")
    return float(m.group(1)) if m else None


def parse_volts(text: Optional[str]) -> Optional[float]:
    m = _VOLT.search(text or "")
    return float(m.group(1)) if m else None


def parse_throttled(text: Optional[str]) -> Optional[int]:
    m = _THROTTLED.search(text or "")
    return int(m.group(1), 0) if m else None


@dataclass(frozen=True)
class ThrottleState:
    """The get_throttled bit field decoded: each condition now, and the names of those seen since boot."""

    bits: int
    under_voltage: bool
    arm_freq_capped: bool
    throttled: bool
    soft_temp_limit: bool
    since_boot: Tuple[str, ...]

    @classmethod
    def from_bits(cls, bits: int) -> ThrottleState:
        def names(shift: int) -> Tuple[str, ...]:
            return tuple(name for b, name in THROTTLE_BITS.items() if bits & (1 << (b + shift)))

        now = names(0)
        return cls(bits, since_boot=names(SINCE_BOOT_SHIFT), **{name: name in now for name in THROTTLE_BITS.values()})

    @property
    def now(self) -> Tuple[str, ...]:
        """Names of the conditions in force now, in bit order."""
        return tuple(name for name in THROTTLE_BITS.values() if getattr(self, name))

    @property
    def any_now(self) -> bool:
        """Some condition is in force now: the board is not at full speed (what a cooldown waits out)."""
        return bool(self.now)


def throttle_state(value: object) -> Optional[ThrottleState]:
    """A ``throttle_bits`` reading's value ("0x50005", as sampled) or the bits as an int, decoded; None for
    anything else."""
    try:
        bits = value if isinstance(value, int) else int(str(value), 0)
    except ValueError:
        return None
    return ThrottleState.from_bits(bits)


def decode_throttled(bits: int) -> Dict[str, List[str]]:
    """{"now": [...], "since_boot": [...]} flag names from the get_throttled bit field."""
    state = ThrottleState.from_bits(bits)
    return {"now": list(state.now), "since_boot": list(state.since_boot)}


def parse_pmic(text: Optional[str]) -> Dict[str, Dict[str, float]]:
    """rail -> {"V": volts, "A": amps} (either may be absent) from ``pmic_read_adc`` output."""
    rails: Dict[str, Dict[str, float]] = {}
    for line in (text or "").splitlines():
        m = _PMIC.match(line)
        if m:
            rails.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    return rails


def pmic_power(rails: Dict[str, Dict[str, float]]) -> Tuple[float, int]:
    """(sum of V x I over rails that have both, number of such rails)."""
    pairs = [r["V"] * r["A"] for r in rails.values() if "V" in r and "A" in r]
    return sum(pairs), len(pairs)


class VcgencmdSensor(Sensor):
    plugin = "raspberrypi"
    kinds = ("temperature", "frequency", "voltage", "state")
    min_interval_s = 1.0

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("raspberrypi", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not runner.available("vcgencmd"):
            return []
        if parse_throttled(runner.run(["vcgencmd", "get_throttled"])) is None:
            return []  # vcgencmd present but no VideoCore (not a Pi, or no access to /dev/vcio)
        return [cls(fs, runner)]

    def _field(self, argv: List[str], parser) -> Tuple[Optional[float], str]:
        out = self.command(argv)
        value = parser(out) if out is not None else None
        if out is not None and value is None:
            self.error(self.runner.describe(argv), f"unexpected output {out.strip()[:40]!r}")
        return value, self.runner.describe(argv)

    def _read(self) -> List[Reading]:
        out: List[Reading] = []
        temp, src = self._field(["vcgencmd", "measure_temp"], parse_temp)
        if temp is not None:
            out.append(reading("rpi/temp", "temperature", temp, src))
        clock, src = self._field(["vcgencmd", "measure_clock", "arm"], parse_clock)
        if clock is not None:
            out.append(reading("rpi/arm_clock", "frequency", clock, src, role="current"))
        volts, src = self._field(["vcgencmd", "measure_volts", "core"], parse_volts)
        if volts is not None:
            out.append(reading("rpi/core_volts", "voltage", volts, src))
        bits, src = self._field(["vcgencmd", "get_throttled"], parse_throttled)
        if bits is not None:
            flags = decode_throttled(int(bits))
            out.append(reading("rpi/throttled", "state", hex(int(bits)), src, role=THROTTLE_BITS_ROLE,
                               format="vcgencmd-throttled-bits", now=",".join(flags["now"]) or "none",
                               since_boot=",".join(flags["since_boot"]) or "none"))
        return out


class PmicSensor(Sensor):
    """Raspberry Pi 5 PMIC rails: per-rail power and their sum."""

    plugin = "raspberrypi"
    kinds = ("power", "voltage")
    min_interval_s = 1.0
    ARGV = ("vcgencmd", "pmic_read_adc")

    def __init__(self, fs: FS, runner: CommandRunner):
        super().__init__("raspberrypi/pmic", fs, runner)

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not runner.available("vcgencmd"):
            return []
        _, pairs = pmic_power(parse_pmic(runner.run(list(cls.ARGV))))
        return [cls(fs, runner)] if pairs else []

    def _read(self) -> List[Reading]:
        text = self.command(self.ARGV)
        rails = parse_pmic(text)
        src = self.runner.describe(self.ARGV)
        if text is not None and not rails:
            self.error(src, "no rails in output")
            return []
        out = []
        for name, r in sorted(rails.items()):
            if "V" in r and "A" in r:
                out.append(reading(f"rpi/pmic/{name}/power", "power", r["V"] * r["A"], src, rail=name,
                                   role="rail", derived="V*I"))
            elif "V" in r:  # EXT5V_V (the USB-C input), BATT_V: voltage only
                out.append(reading(f"rpi/pmic/{name}/voltage", "voltage", r["V"], src, rail=name))
        total, pairs = pmic_power(rails)
        if pairs:
            out.append(reading("rpi/pmic/total/power", "power", total, src, role="board", rails=pairs,
                               note="sum of PMIC rails; excludes 5V peripherals and PMIC losses"))
        return out


SENSORS = (VcgencmdSensor, PmicSensor)


def board_info(fs: FS, runner: CommandRunner) -> dict:
    try:
        model = fs.read_text("/proc/device-tree/model").strip("\x00\n ")
    except OSError:
        return {}
    if not model.startswith("Raspberry Pi"):
        return {}
    info: Dict[str, object] = {"model": model}
    try:
        cpuinfo = fs.read_text("/proc/cpuinfo")
    except OSError:
        cpuinfo = ""
    m = re.search(r"^Revision\s*:\s*(\w+)", cpuinfo, re.M)
    if m:
        info["revision"] = m.group(1)
    bits = parse_throttled(runner.run(["vcgencmd", "get_throttled"]))
    if bits is not None:
        info["throttled_at_start"] = {"bits": hex(bits), **decode_throttled(bits)}
    arm_freq = runner.run(["vcgencmd", "get_config", "arm_freq"])
    value = parse_number(arm_freq.split("=", 1)[1]) if arm_freq and "=" in arm_freq else None
    if value is not None:
        info["arm_freq_config_mhz"] = value
    return {"raspberrypi": info}
