"""Resident memory of the benchmark process.

Peaks come from the kernel's high-water mark (VmHWM), which misses nothing between samples and costs
nothing during the run; writing "5" to /proc/self/clear_refs resets it (Linux >= 4.0), which separates the
load peak from the steady-state peak. Where that is not available the engine falls back to the samples
that the parent process takes of the child's RSS (RssSampler), so the child never pays for sampling.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

_STATUS = "/proc/self/status"


def _status_kib(field: str, status_path: str = _STATUS) -> Optional[int]:
    try:
        with open(status_path) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss() -> Optional[int]:
    """RSS of this process in bytes."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - memory is reported as unknown rather than failing the run
        return None


def peak_rss() -> Optional[int]:
    """High-water mark of RSS since start or since the last reset_peak(), in bytes."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else None


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples another process's RSS from a thread of this one, timestamped on the monotonic clock that
    the benchmark child uses for its latency samples (perf_counter_ns is CLOCK_MONOTONIC on Linux)."""

    def __init__(self, pid: int, interval_s: float, on_tick: Optional[Callable[[int], None]] = None):
        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval_s
        self._on_tick = on_tick  # told each sample's time, on this thread (engine/noise.NoiseProbe.tick)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.samples: list[tuple[int, int]] = []  # (monotonic ns, rss bytes)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.samples

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
            except Exception:  # noqa: BLE001 - the child exited or vanished
                return
            now = time.perf_counter_ns()
            self.samples.append((now, int(rss)))
            if self._on_tick is not None:
                try:
                    self._on_tick(now)
                except Exception:  # noqa: BLE001 - what rides on the sampler never stops the RSS samples
                    self._on_tick = None
            self._stop.wait(self._interval)
