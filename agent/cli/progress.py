"""Progress of a long run on stderr: a one-line indicator on a terminal, or JSON lines for a program.

Modes (``edgebench bench --progress``): ``auto`` (the line on a terminal, nothing in logs or pipes), ``line``,
``json`` (one object per update: ``{"event": "progress", "phase": ..., "runs": ..., "elapsed_s": ...}``, so a
script or a test can act on a phase as it starts) and ``off``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Optional, TextIO

PHASE_LABELS = {"cooldown": "waiting for the board to cool", "load": "loading", "warmup": "warming up",
                "measure": "measuring", "infer": "running", "prefill": "reading the prompt",
                "decode": "generating"}
MODES = ("auto", "line", "json", "off")


class ProgressLine:
    def __init__(self, label: str, target_s: Optional[float] = None, stream: TextIO = sys.stderr,
                 mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: choose one of {', '.join(MODES)}")
        self.label = label
        self.target_s = target_s  # the measured phase's minimum duration, to show how far along it is
        self.stream = stream
        self.mode = ("line" if stream.isatty() else "off") if mode == "auto" else mode
        self._shown = False
        self._started = time.monotonic()

    def __call__(self, phase: str, runs: int, elapsed_s: float) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": "progress", "phase": phase, "runs": runs,
                                          "elapsed_s": round(elapsed_s, 3)}) + "\n")
            self.stream.flush()
        elif self.mode == "line":
            self._line(phase, runs, elapsed_s)

    def _line(self, phase: str, runs: int, elapsed_s: float) -> None:
        text = f"{self.label}: {PHASE_LABELS.get(phase, phase)}"
        if phase == "decode":
            text += f" · {runs} tokens · {elapsed_s:.1f} s"
        elif phase in ("warmup", "measure", "infer") and runs:
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
