"""``edgebench sensors``: what sensors this machine (or a recorded tree, or a phone over adb) has, and
their current readings with units, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional, TextIO

from edgebench.agent.errors import UsageError
from edgebench.agent.sensors import board_info, close_all, discover, read_all, read_errors, target
from edgebench.agent.sensors.base import Reading
from edgebench.agent.sensors.commands import AdbRunner
from edgebench.agent.sensors.fs import RemoteFS

PRIME_S = 0.25  # rate-based sensors (RAPL) need two reads to give power


def register(commands, adb: bool = False) -> None:
    """`edgebench sensors` (this machine or a recorded tree) and `edgebench adb sensors --serial S`."""
    if adb:
        sensors = commands.add_parser("sensors", help="read an Android device's sensors over adb",
                                      description="Discover and read an Android device's sensors from this host "
                                      "through `adb -s SERIAL shell`.")
        add_arguments(sensors)
        sensors.add_argument("--serial", dest="adb", required=True, metavar="SERIAL", help="adb device serial")
    else:
        sensors = commands.add_parser("sensors", help="discover this board's sensors and print current readings",
                                      description="Discover temperature, clock, power and throttling sensors "
                                      "(thermal zones, hwmon/INA rails, cpufreq, vcgencmd, Jetson, Android, RAPL, "
                                      "NVML) and print their current readings with units.")
        add_arguments(sensors)
    sensors.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="read a recorded tree instead of this machine (commands replayed from DIR/commands)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--adb", metavar="SERIAL", default=None,
                        help="read an Android device over adb (adb -s SERIAL shell ...)")
    parser.add_argument("--adb-exe", metavar="PATH", default=os.environ.get("EDGEBENCH_ADB", "adb"),
                        help="adb executable (default: $EDGEBENCH_ADB or adb on PATH)")


def _format_value(r: Reading) -> str:
    if isinstance(r.value, str):
        return r.value
    if r.kind == "frequency":
        return f"{r.value / 1e6:.0f} MHz"
    if r.kind == "memory":
        return f"{r.value / 2**20:.0f} MiB"
    if r.kind in ("power", "voltage", "current"):
        return f"{r.value:.3f} {r.unit}"
    if r.kind == "energy":
        return f"{r.value:.1f} {r.unit}"
    return f"{r.value:.1f} {r.unit}"


# Clock limits are printed per policy above the table; --json has them as readings too.
_TABLE_SKIP = ("limit_min", "hw_min", "hw_max")  # clock roles the table leaves out (the JSON has them)


def _table(readings: List[Reading], out: TextIO) -> None:
    rows = [(r.sensor, r.kind, _format_value(r), r.source) for r in readings
            if not (r.plugin == "cpufreq" and r.role in _TABLE_SKIP)]
    header = ("SENSOR", "KIND", "VALUE", "SOURCE")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        out.write(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}\n")


def _board_lines(info: dict, out: TextIO) -> None:
    for key in ("board", "soc", "cpu_model", "kernel", "power_mode"):
        if info.get(key):
            out.write(f"{key}: {info[key]}\n")
    if info.get("ram_bytes"):
        out.write(f"ram: {info['ram_bytes'] / 2**30:.1f} GiB\n")
    for name, policy in sorted(info.get("cpufreq", {}).items()):
        lo, hi = policy.get("scaling_min_hz"), policy.get("scaling_max_hz")
        limits = f"{lo / 1e6:.0f}-{hi / 1e6:.0f} MHz" if lo and hi else "limits unknown"
        out.write(f"{name}: cpus {policy.get('cpus')}, {policy.get('governor')}, {limits}\n")


def check(args: argparse.Namespace) -> None:
    if args.adb and not shutil.which(args.adb_exe):
        raise UsageError(f"--adb-exe {args.adb_exe}: no such executable (install adb or set $EDGEBENCH_ADB)")
    if not args.adb and not Path(args.root).is_dir():  # a recorded tree that is not there reads as "no sensors"
        raise UsageError(f"--root {args.root} is not a directory")


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout  # looked up per call, so capture (pytest's capsys) sees it
    check(args)
    if args.adb:
        runner = AdbRunner(args.adb, args.adb_exe)
        if not runner.reachable():
            sys.stderr.write(f"edgebench sensors: adb device {args.adb!r} not reachable with {args.adb_exe!r}\n")
            return 1
        fs, runner = RemoteFS(runner), runner
    else:
        fs, runner = target(args.root)
    sensors = discover(fs, runner)
    try:
        if any(s.rate_based for s in sensors):
            read_all([s for s in sensors if s.rate_based])
            time.sleep(PRIME_S)
        readings = read_all(sensors)
        errors = read_errors(sensors)
    finally:
        close_all(sensors)
    info = board_info(fs, runner)
    if args.json:
        json.dump({"root": getattr(fs, "root", None) or f"adb:{args.adb}", "board": info,
                   "sensors": [s.name for s in sensors], "readings": [r.to_dict() for r in readings],
                   "errors": errors}, out, indent=2, default=str)
        out.write("\n")
        return 0
    _board_lines(info, out)
    if readings:
        out.write("\n")
        _table(readings, out)
    else:
        out.write("\nno sensors found\n")
    for name, errs in sorted(errors.items()):
        for err in errs:
            out.write(f"warning: {name}: {err}\n")
    return 0
