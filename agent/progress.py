"""A one-line progress indicator on stderr for long runs (only on a terminal, never in logs or pipes)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

PHASE_LABELS = {"load": "loading", "warmup": "warming up", "measure": "measuring", "infer": "running"}


class ProgressLine:
    def __init__(self, label: str, target_s: Optional[float] = None, stream: TextIO = sys.stderr,
                 enabled: Optional[bool] = None):
        self.label = label
        self.target_s = target_s  # the measured phase's minimum duration, to show how far along it is
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._shown = False
        self._started = time.monotonic()

    def __call__(self, phase: str, runs: int, elapsed_s: float) -> None:
        if not self.enabled:
            return
        text = f"{self.label}: {PHASE_LABELS.get(phase, phase)}"
        if phase in ("warmup", "measure", "infer") and runs:
            text += f" · {runs} runs · {elapsed_s:.1f} s"
            if phase == "measure" and self.target_s:
                text += f" (min {self.target_s:g} s)"
        else:
            text += f" · {time.monotonic() - self._started:.1f} s"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
