"""Facts about the machine every board has in common: model, SoC, kernel, RAM, CPU model. No sensors."""

from __future__ import annotations

import re
from typing import Dict, Optional

from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

SENSORS = ()


def _read(fs: FS, path: str) -> Optional[str]:
    try:
        return fs.read_text(path)
    except OSError:
        return None


def board_info(fs: FS, runner: CommandRunner) -> dict:
    info: Dict[str, object] = {}
    model = _read(fs, "/proc/device-tree/model")
    if model and model.strip("\x00\n "):
        info["board"] = model.strip("\x00\n ")
    else:
        product = _read(fs, "/sys/class/dmi/id/product_name")
        if product and product.strip():
            vendor = (_read(fs, "/sys/class/dmi/id/sys_vendor") or "").strip()
            info["board"] = f"{vendor} {product.strip()}".strip()
    compatible = _read(fs, "/proc/device-tree/compatible")
    if compatible:
        entries = [c for c in compatible.split("\x00") if c.strip()]
        if entries:
            info["soc"] = entries[-1].strip()  # the least specific entry names the SoC: brcm,bcm2711
    kernel = _read(fs, "/proc/sys/kernel/osrelease")
    if kernel and kernel.strip():
        info["kernel"] = kernel.strip()
    meminfo = _read(fs, "/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.M)
    if m:
        info["ram_bytes"] = int(m.group(1)) * 1024
    cpuinfo = _read(fs, "/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    if m:
        info["cpu_model"] = m.group(1).strip()
    return info
