"""The sensor record and the plugin base class.

A plugin module holds one or more ``Sensor`` subclasses. Each class finds its instances with
``discover(fs, runner)`` and each instance turns what it reads into plain ``Reading`` records. A read never
raises for a read problem (missing file, permission denied, a command that fails, a value that does not
parse): the quantity is left out of that read and a short message is kept in ``read_errors()``.
"""

from __future__ import annotations

import errno
import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Union

from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

log = logging.getLogger(__name__)

# kind -> the SI unit its values are in. "state" values are strings (a governor, a status, a bit field).
KIND_UNITS: Dict[str, str] = {
    "temperature": "C",
    "power": "W",
    "voltage": "V",
    "current": "A",
    "frequency": "Hz",
    "energy": "J",
    "memory": "B",
    "percent": "%",
    "state": "",
}
KINDS = tuple(KIND_UNITS)

# Names power monitors give the rail that feeds the whole board (Jetson INA3221 channel 0/1).
TOTAL_INPUT_RAILS = frozenset({"VDD_IN", "POM_5V_IN", "5V_IN"})

# Reading.role: what a value is, so callers pick readings by field, never by parsing reading ids.
# Power: what the reading covers, best first: pick_power() prefers the widest scope a board offers.
POWER_ROLES = ("board_input", "board", "battery", "platform", "package", "gpu", "rail")
# Clocks: the clock running now; the limits in force (cpufreq scaling_max/min: thermal caps and power modes
# move them); the hardware's limits (cpuinfo_max/min).
CLOCK_ROLES = ("current", "limit_max", "limit_min", "hw_max", "hw_min")
CLOCK_LIMIT_ROLES = CLOCK_ROLES[1:]
# State: a Raspberry Pi get_throttled bit field (raspberrypi.throttle_state decodes it).
THROTTLE_BITS_ROLE = "throttle_bits"

Value = Union[float, str]


@dataclass
class Reading:
    """One quantity at one moment. ``sensor`` is unique per quantity ("thermal/cpu-thermal",
    "hwmon/ina3221/VDD_IN/power"); ``value`` is in the SI unit of its kind (see KIND_UNITS). ``source`` is
    where it was read (a path or a command); ``plugin`` the plugin that read it ("cpufreq"); ``role`` what
    the value is (POWER_ROLES, CLOCK_ROLES, THROTTLE_BITS_ROLE; "" for the rest)."""

    sensor: str
    kind: str
    value: Value
    unit: str
    source: str
    labels: Dict[str, str] = field(default_factory=dict)
    plugin: str = ""  # set by Sensor.read from the sensor class's ``plugin``
    role: str = ""

    def to_dict(self) -> dict:
        out = {"sensor": self.sensor, "kind": self.kind, "value": self.value, "unit": self.unit,
               "source": self.source}
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


def reading(sensor: str, kind: str, value: Value, source: str, **labels: object) -> Reading:
    """A Reading with the unit of its kind and string labels (None labels dropped). ``role=`` sets
    Reading.role; a power reading keeps it among its labels too, where ``sensors --json`` has always had it."""
    role = str(labels.get("role") or "")
    kept = {k: str(v) for k, v in labels.items() if v is not None and (k != "role" or kind == "power")}
    return Reading(sensor, kind, value, KIND_UNITS[kind], source, kept, role=role)


def describe_oserror(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a file"
    if exc.strerror and exc.strerror.startswith("unreadable"):  # RemoteFS: adb cannot say why
        return exc.strerror
    if exc.errno in (errno.ENODATA, errno.EAGAIN, errno.EINVAL, errno.EIO):
        return f"no data ({errno.errorcode.get(exc.errno, exc.errno)})"
    return exc.strerror or str(exc)


def parse_number(text: Optional[str]) -> Optional[float]:
    """A finite number from a sysfs value or a command field, else None."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Sensor:
    """A source of readings. Subclasses set ``kinds`` and implement ``_read`` and ``discover``."""

    plugin: ClassVar[str] = ""
    kinds: ClassVar[Sequence[str]] = ()
    # Command-backed sensors cost a process per read: the sampler reads them at most this often.
    min_interval_s: ClassVar[float] = 0.0
    # Sensors whose power is derived from two reads of a counter (RAPL) need a first read to prime.
    rate_based: ClassVar[bool] = False

    def __init__(self, name: str, fs: FS, runner: CommandRunner):
        self.name = name
        self.fs = fs
        self.runner = runner
        self._errors: List[str] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        """The instances of this sensor the tree (and the command runner) offers; [] when none."""
        return []

    def read(self) -> List[Reading]:
        self._errors = []
        try:
            out = self._read()
        except Exception as exc:  # a plugin bug must not end a benchmark run
            log.debug("sensor %s failed", self.name, exc_info=True)
            self._errors.append(f"{self.name}: {type(exc).__name__}: {exc}")
            return []
        for r in out:
            r.plugin = r.plugin or self.plugin
        return out

    def _read(self) -> List[Reading]:
        raise NotImplementedError

    def read_errors(self) -> List[str]:
        """What went wrong in the last read(), one short line per quantity left out."""
        return list(self._errors)

    def close(self) -> None:
        """Release what the sensor holds (a streaming process); reads after close may start it again."""

    # -- helpers for subclasses: each records an error and returns None instead of raising

    def error(self, where: str, what: str) -> None:
        self._errors.append(f"{where}: {what}")

    def text(self, path: str) -> Optional[str]:
        try:
            return self.fs.read_text(path).strip().strip("\x00")
        except OSError as exc:
            self.error(path, describe_oserror(exc))
            return None

    def number(self, path: str, scale: float = 1.0) -> Optional[float]:
        return self.parse(path, self.text(path), scale)

    def parse(self, where: str, text: Optional[str], scale: float = 1.0) -> Optional[float]:
        """``text`` as a number times ``scale``; garbage is recorded as an error."""
        if text is None:
            return None
        value = parse_number(text)
        if value is None:
            self.error(where, f"garbage value {text[:40]!r}")
            return None
        return value * scale

    def batch(self, paths: Sequence[str]) -> Dict[str, Optional[str]]:
        """Several files in one go (one round trip over adb); failures recorded, mapped to None."""
        out: Dict[str, Optional[str]] = {}
        for path, result in self.fs.read_many(paths).items():
            if isinstance(result, OSError):
                self.error(path, describe_oserror(result))
                out[path] = None
            else:
                out[path] = result.strip().strip("\x00")
        return out

    def command(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        out = self.runner.run(list(argv), timeout)
        if out is None:
            self.error(self.runner.describe(argv), "command failed or missing")
        return out
