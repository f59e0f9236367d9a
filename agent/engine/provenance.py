"""Where a result came from: board, CPU, cores, governor, kernel, OS, Python, edgebench version.

Everything is read from files under a root directory (default ``/``) so the same code describes this
machine and the recorded board trees in the tests. Missing facts are None, never an error.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Optional


def _read(root: Path, relative: str) -> Optional[str]:
    try:
        text = (root / relative).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None
    text = text.replace("\x00", "").strip()
    return text or None


def _cpuinfo_field(cpuinfo: str, *keys: str) -> Optional[str]:
    for key in keys:
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def cpu_model(root: Path) -> Optional[str]:
    cpuinfo = _read(root, "proc/cpuinfo") or ""
    return _cpuinfo_field(cpuinfo, "model name", "Model", "Hardware", "Processor", "cpu model")


def count_cpus(root: Path) -> Optional[int]:
    present = _read(root, "sys/devices/system/cpu/present")  # e.g. "0-3" or "0-3,6"
    if present:
        total = 0
        for part in present.split(","):
            low, _, high = part.partition("-")
            total += int(high or low) - int(low) + 1
        return total
    cpuinfo = _read(root, "proc/cpuinfo") or ""
    return sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")) or None


def os_name(root: Path) -> Optional[str]:
    text = _read(root, "etc/os-release") or _read(root, "usr/lib/os-release") or ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    name = fields.get("PRETTY_NAME") or fields.get("NAME")
    return name.strip().strip('"') if name else None


def board_facts(root: str) -> dict:
    """What the sensor layer knows of the board (board model, kernel, RAM, SoC, power mode, per-policy clock
    limits and governors, thermal trip points), read by the same plugins that sample the run."""
    from edgebench.agent import sensors

    info = sensors.board_info(root)
    cpufreq = info.get("cpufreq") or {}
    return {
        "board": info.get("board"),
        "kernel": info.get("kernel"),
        "memory_total_bytes": info.get("ram_bytes"),
        "cpu_model": info.get("cpu_model"),
        "soc": info.get("soc"),
        "power_mode": info.get("power_mode"),
        "governors": {policy: limits.get("governor") for policy, limits in cpufreq.items()},
        "cpufreq": cpufreq,
        "thermal_trips_c": info.get("thermal_trips_c") or {},
        "platform": {key: info[key] for key in ("raspberrypi", "jetson", "android") if key in info},
    }


def collect(root: str = "/", edgebench_version: Optional[str] = None) -> dict:
    """Provenance of the machine under ``root``; host-only facts (Python, hostname) when root is ``/``.
    Board facts come from the sensor plugins' board_info: the same root, the same reading of cpufreq."""
    base = Path(root)
    live = base.resolve() == Path("/")
    board = board_facts(root)
    facts = {
        "board": board.pop("board"),
        # board_info reads x86's "model name"; ARM boards name the CPU under other keys
        "cpu": board.pop("cpu_model") or cpu_model(base) or (platform.processor() or None if live else None),
        "arch": platform.machine() if live else None,
        "cores": count_cpus(base) or (os.cpu_count() if live else None),
        "memory_total_bytes": board.pop("memory_total_bytes"),
        "kernel": board.pop("kernel") or (platform.release() if live else None),
        "os": os_name(base),
        **board,
    }
    if live:
        facts.update({
            "hostname": socket.gethostname(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "edgebench": edgebench_version,
        })
    return facts
