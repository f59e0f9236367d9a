"""NVIDIA GPUs through NVML (``pynvml``, from the nvidia-ml-py package), when importable and a driver answers.

Live root only. NVML units: temperature C, power mW, clocks MHz, total energy mJ (Volta and newer). The
clock-event reasons (a bit field, NVML's "throttle reasons") are kept as a hex state.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional

from edgebench.agent.sensors.base import Reading, Sensor, reading
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

log = logging.getLogger(__name__)


def _nvml() -> Optional[Any]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


class NvmlSensor(Sensor):
    plugin = "nvml"
    kinds = ("temperature", "power", "frequency", "energy", "state")

    def __init__(self, fs: FS, runner: CommandRunner, nvml: Any, index: int):
        super().__init__(f"nvml/gpu{index}", fs, runner)
        self.nvml = nvml
        self.index = index
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            name = nvml.nvmlDeviceGetName(self.handle)
            self.model = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            self.model = "unknown"

    @classmethod
    def discover(cls, fs: FS, runner: CommandRunner) -> List[Sensor]:
        if not fs.live:
            return []
        nvml = _nvml()
        if nvml is None:
            return []
        try:
            return [cls(fs, runner, nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:
            log.debug("NVML device listing failed: %s", exc)
            return []

    def _call(self, what: str, func, *args):
        try:
            return func(self.handle, *args)
        except Exception as exc:
            self.error(f"nvml {what}", str(exc) or type(exc).__name__)
            return None

    def _read(self) -> List[Reading]:
        n, src, base = self.nvml, f"nvml:{self.index}", self.name
        out: List[Reading] = []
        temp = self._call("temperature", n.nvmlDeviceGetTemperature, 0)  # NVML_TEMPERATURE_GPU
        if temp is not None:
            out.append(reading(f"{base}/temp", "temperature", float(temp), src, model=self.model))
        mw = self._call("power", n.nvmlDeviceGetPowerUsage)
        if mw is not None:
            out.append(reading(f"{base}/power", "power", mw / 1000.0, src, role="gpu", model=self.model))
        sm = self._call("sm clock", n.nvmlDeviceGetClockInfo, 1)  # NVML_CLOCK_SM
        if sm is not None:
            max_sm = self._call("max sm clock", n.nvmlDeviceGetMaxClockInfo, 1)
            out.append(reading(f"{base}/sm_clock", "frequency", sm * 1e6, src, role="current",
                               max_hz=max_sm * 1e6 if max_sm is not None else None))
        mj = self._call("energy", n.nvmlDeviceGetTotalEnergyConsumption)
        if mj is not None:
            out.append(reading(f"{base}/energy", "energy", mj / 1000.0, src, counter="monotonic"))
        reasons_fn = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            n, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        reasons = self._call("clock event reasons", reasons_fn) if reasons_fn else None
        if reasons is not None:
            out.append(reading(f"{base}/clock_event_reasons", "state", hex(reasons), src))
        return out


SENSORS = (NvmlSensor,)
