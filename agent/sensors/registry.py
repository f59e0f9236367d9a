"""The plugin registry. A plugin is a module with ``SENSORS`` (Sensor subclasses, each with a ``discover``
classmethod) and optionally ``board_info(fs, runner) -> dict``. Built-ins are imported lazily by name; a
third-party plugin is registered as ``register("name", "package.module")``.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Dict, Iterable, List, Optional

from edgebench.agent.sensors.base import Sensor
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.fs import FS

log = logging.getLogger(__name__)

BUILTIN: Dict[str, str] = {name: f"{__package__}.{name}" for name in (
    "system", "thermal", "hwmon", "cpufreq", "raspberrypi", "jetson", "android", "rapl", "psutil_temps", "nvml")}
_registry: Dict[str, str] = dict(BUILTIN)


def register(name: str, module: str) -> None:
    _registry[name] = module


def plugin_names() -> List[str]:
    return list(_registry)


def load(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(_registry[name])
    except Exception as exc:  # a broken plugin is skipped, never fatal
        log.warning("sensor plugin %s cannot be loaded: %s", name, exc)
        return None


def discover(fs: FS, runner: CommandRunner, plugins: Optional[Iterable[str]] = None) -> List[Sensor]:
    sensors: List[Sensor] = []
    for name in plugins or plugin_names():
        module = load(name)
        for cls in getattr(module, "SENSORS", ()):
            try:
                sensors.extend(cls.discover(fs, runner))
            except Exception as exc:
                log.warning("sensor %s.%s discovery failed: %s", name, cls.__name__, exc, exc_info=True)
    return sensors


def board_info(fs: FS, runner: CommandRunner, plugins: Optional[Iterable[str]] = None) -> dict:
    info: dict = {}
    for name in plugins or plugin_names():
        func = getattr(load(name), "board_info", None)
        if func is None:
            continue
        try:
            info.update(func(fs, runner))
        except Exception as exc:
            log.warning("board_info of sensor plugin %s failed: %s", name, exc, exc_info=True)
    return info
