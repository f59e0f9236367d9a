"""Running the commands some sensors need (vcgencmd, nvpmodel, tegrastats, dumpsys, getprop).

Every sensor gets a ``CommandRunner`` and never calls subprocess itself, so the same plugin runs on the
board (``LocalRunner``), against recorded outputs (``ReplayRunner``) or on a phone from a host
(``AdbRunner``). ``run`` returns the command's stdout, or None when the command is missing, fails or times
out: a sensor treats None as "this source is not here".

ReplayRunner file names: the argv joined with ``_``, with ``/`` written as ``%2F``:
``vcgencmd measure_temp`` -> ``commands/vcgencmd_measure_temp``, ``nvpmodel -q`` -> ``commands/nvpmodel_-q``,
``dumpsys thermalservice`` -> ``commands/dumpsys_thermalservice``, ``getprop`` -> ``commands/getprop``.
A missing file means the command is not on that board.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

log = logging.getLogger(__name__)


class LineStream:
    """The latest line of a long-running command (tegrastats), read by a daemon thread."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self._line: Optional[str] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="edgebench-linestream", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                self._line = line.strip()
                self._ready.set()
        self._ready.set()  # the command ended: wake a waiting reader

    def latest(self, wait_s: float = 0.0) -> Optional[str]:
        if self._line is None and wait_s > 0:
            self._ready.wait(wait_s)
        return self._line

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class CommandRunner:
    """No commands at all: the runner for a recorded tree without a ``commands/`` folder."""

    prefix = ""  # written before file paths in reading sources ("adb:SERIAL:")

    def run(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        return None

    def available(self, command: str) -> bool:
        return False

    def first_line(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        """The first non-empty output line (for commands that print forever, like tegrastats)."""
        out = self.run(argv, timeout)
        if out is None:
            return None
        return next((line.strip() for line in out.splitlines() if line.strip()), None)

    def stream(self, argv: Sequence[str]) -> Optional[LineStream]:
        """A running command whose latest line can be polled; None where not supported."""
        return None

    def describe(self, argv: Sequence[str]) -> str:
        return " ".join(argv)


NullRunner = CommandRunner


class LocalRunner(CommandRunner):
    def __init__(self) -> None:
        self._which: Dict[str, Optional[str]] = {}

    def __repr__(self) -> str:
        return "LocalRunner()"

    def _resolve(self, command: str) -> Optional[str]:
        if command not in self._which:
            self._which[command] = shutil.which(command)
        return self._which[command]

    def available(self, command: str) -> bool:
        return self._resolve(command) is not None

    def run(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        exe = self._resolve(argv[0])
        if exe is None:
            return None
        try:
            done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("%s failed: %s", argv, exc)
            return None
        if done.returncode != 0:
            log.debug("%s exited %d: %s", argv, done.returncode, done.stderr.strip()[:200])
            return None
        return done.stdout

    def _spawn(self, argv: Sequence[str]) -> Optional[subprocess.Popen]:
        exe = self._resolve(argv[0])
        if exe is None:
            return None
        try:
            return subprocess.Popen([exe, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, errors="replace", bufsize=1)
        except OSError as exc:
            log.debug("%s failed: %s", argv, exc)
            return None

    def first_line(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        proc = self._spawn(argv)
        if proc is None:
            return None
        stream = LineStream(proc)
        try:
            return stream.latest(wait_s=timeout)
        finally:
            stream.close()

    def stream(self, argv: Sequence[str]) -> Optional[LineStream]:
        proc = self._spawn(argv)
        return LineStream(proc) if proc is not None else None


def replay_name(argv: Sequence[str]) -> str:
    return "_".join(argv).replace("/", "%2F")


class ReplayRunner(CommandRunner):
    """Recorded outputs from a folder (see the module docstring for the file names)."""

    def __init__(self, directory: Union[str, os.PathLike]):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"ReplayRunner({str(self.directory)!r})"

    def _path(self, argv: Sequence[str]) -> Path:
        return self.directory / replay_name(argv)

    def run(self, argv: Sequence[str], timeout: float = 3.0) -> Optional[str]:
        path = self._path(argv)
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return None

    def available(self, command: str) -> bool:
        if not self.directory.is_dir():
            return False
        name = replay_name([command])
        return any(p.name == name or p.name.startswith(name + "_") for p in self.directory.iterdir())

    def describe(self, argv: Sequence[str]) -> str:
        return f"replay:{' '.join(argv)}"


class AdbRunner(CommandRunner):
    """Commands on an Android device: ``adb -s SERIAL shell 'argv...'`` (argv quoted for the device shell)."""

    def __init__(self, serial: str, adb: str = "adb"):
        self.serial = serial
        self.adb = adb
        self.prefix = f"adb:{serial}:"
        self._available: Dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"AdbRunner({self.serial!r})"

    def _argv(self, argv: Sequence[str]) -> List[str]:
        return [self.adb, "-s", self.serial, "shell", " ".join(shlex.quote(a) for a in argv)]

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> Optional[str]:
        if shutil.which(self.adb) is None:
            return None
        try:
            done = subprocess.run(self._argv(argv), capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("adb %s failed: %s", argv, exc)
            return None
        return done.stdout if done.returncode == 0 else None

    def reachable(self) -> bool:
        out = self.run(["echo", "edgebench-ok"])
        return out is not None and "edgebench-ok" in out

    def available(self, command: str) -> bool:
        if command not in self._available:
            out = self.run(["sh", "-c", f"command -v {shlex.quote(command)}"])
            self._available[command] = bool(out and out.strip())
        return self._available[command]

    def describe(self, argv: Sequence[str]) -> str:
        return f"adb -s {self.serial} shell {' '.join(argv)}".rstrip()
