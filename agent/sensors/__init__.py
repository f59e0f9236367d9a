"""Sensors: temperature, clocks, power, energy and throttle state of the board a benchmark runs on.

    from edgebench.agent import sensors
    found = sensors.discover()                 # this machine; discover("tests/fixtures/boards/rpi4") a tree
    for r in sensors.read_all(found): print(r.sensor, r.value, r.unit, r.plugin, r.role)
    sensors.board_info()                       # governor, clock limits, power mode, board, SoC, ...

One plugin module per source (thermal, hwmon, cpufreq, raspberrypi, jetson, android, rapl, psutil_temps,
nvml); each reads through an FS (a root directory, or a device over adb) and a CommandRunner, so the same
code runs on a board, against recorded fixtures, and on a phone from a host. See docs/sensors.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from edgebench.agent.sensors import registry
from edgebench.agent.sensors.base import (
    CLOCK_ROLES,
    KIND_UNITS,
    KINDS,
    POWER_ROLES,
    THROTTLE_BITS_ROLE,
    Reading,
    Sensor,
)
from edgebench.agent.sensors.commands import AdbRunner, CommandRunner, LocalRunner, NullRunner, ReplayRunner
from edgebench.agent.sensors.fs import FS, LocalFS, RemoteFS, make_fs

__all__ = [
    "KINDS", "KIND_UNITS", "POWER_ROLES", "CLOCK_ROLES", "THROTTLE_BITS_ROLE", "Reading", "Sensor",
    "CommandRunner", "LocalRunner", "ReplayRunner", "AdbRunner", "NullRunner", "FS", "LocalFS", "RemoteFS",
    "target", "adb_target", "discover", "read_all", "read_errors", "board_info", "pick_power", "close_all",
]

Root = Union[str, os.PathLike, FS]


def target(root: Root = "/", runner: Optional[CommandRunner] = None) -> tuple:
    """(fs, runner) for a root. The live root runs local commands; a recorded tree replays its
    ``commands/`` folder (no folder: no commands); a RemoteFS uses its own runner."""
    fs = make_fs(root)
    if runner is None:
        if isinstance(fs, RemoteFS):
            runner = fs.runner
        elif fs.live:
            runner = LocalRunner()
        else:
            runner = ReplayRunner(Path(fs.root) / "commands")  # type: ignore[attr-defined]
    return fs, runner


def adb_target(serial: str, adb: str = "adb") -> tuple:
    """(fs, runner) for an Android device reached over adb."""
    runner = AdbRunner(serial, adb)
    return RemoteFS(runner), runner


def discover(root: Root = "/", runner: Optional[CommandRunner] = None,
             plugins: Optional[Iterable[str]] = None) -> List[Sensor]:
    """Every sensor the root offers. Plugins that find nothing, or fail, contribute nothing."""
    fs, runner = target(root, runner)
    return registry.discover(fs, runner, plugins)


def read_all(sensors: Iterable[Sensor]) -> List[Reading]:
    out: List[Reading] = []
    for sensor in sensors:
        out.extend(sensor.read())
    return out


def read_errors(sensors: Iterable[Sensor]) -> Dict[str, List[str]]:
    """sensor name -> what its last read could not read."""
    return {s.name: s.read_errors() for s in sensors if s.read_errors()}


def board_info(root: Root = "/", runner: Optional[CommandRunner] = None) -> dict:
    """Provenance facts as a plain dict: board, soc, kernel, ram_bytes, cpu_model, cpufreq (governor and
    limits per policy), power_mode, thermal trips, and per-platform details (raspberrypi, jetson, android)."""
    fs, runner = target(root, runner)
    info = registry.board_info(fs, runner)
    android = info.get("android", {})
    jetson = info.get("jetson", {})
    if android.get("model"):
        info["board"] = " ".join(filter(None, (android.get("manufacturer"), android["model"])))
    if android.get("soc_model") or android.get("board_platform"):
        info["soc"] = android.get("soc_model") or android.get("board_platform")
    if isinstance(jetson.get("power_mode"), dict):
        info["power_mode"] = jetson["power_mode"]["name"]
    return info


def pick_power(readings: Iterable[Reading]) -> Optional[Reading]:
    """The power reading with the widest scope (board input, board, battery while discharging, platform,
    package, GPU, rail); among equals the first. This is the one energy per inference is computed from."""
    best, rank = None, len(POWER_ROLES) + 1
    for r in readings:
        if r.kind != "power" or isinstance(r.value, str):
            continue
        role = r.role or "rail"  # a power channel no plugin could place (a bare hwmon power1_input)
        if role == "battery" and r.labels.get("status") != "Discharging":
            continue  # on the charger the battery's flow is not what the device draws
        r_rank = POWER_ROLES.index(role) if role in POWER_ROLES else len(POWER_ROLES)
        if r_rank < rank:
            best, rank = r, r_rank
    return best


def close_all(sensors: Iterable[Sensor]) -> None:
    for sensor in sensors:
        sensor.close()
