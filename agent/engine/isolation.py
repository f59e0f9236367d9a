"""Run the benchmark worker in a child process and turn every way it can die into a clear error.

A runtime is native code: it can segfault, abort, hang or exhaust memory. None of that may take the caller
(the CLI, later the agent daemon) down with it. The child talks over a dedicated pipe of JSON lines; its
stdout/stderr (where runtimes print) go to a log file whose tail is kept for the error message.

How the child starts is a *launcher*'s business (``Launcher``: start it, hand back a ``ChildHandle`` with its pid,
poll, wait and kill): ``Exec`` runs a program (the Python worker by ``python -m``, the native harness, the agent's
job process); ``engine/zygote.py`` forks fresh workers from a process that has already imported the runtime, so a
repeat costs a fork instead of an interpreter's start. Whatever starts it, ``run_child`` supervises it the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from edgebench.agent.engine.memory import RssSampler
from edgebench.agent.engine.noise import NoiseProbe
from edgebench.agent.errors import ERROR_KINDS, ChildFailed, EdgebenchError, RuntimeUnavailable

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, float], None]

PHASE_WORDS = {
    "start": "while starting",
    "load": "while loading the model",
    "warmup": "during warm-up",
    "measure": "during the measured run",
    "measured": "after the measured run",
    "infer": "while running inferences",
}
OOM_MARKERS = ("std::bad_alloc", "MemoryError", "out of memory", "Cannot allocate memory", "Failed to allocate")


@dataclass
class ChildOutcome:
    result: dict
    rss_samples: list = field(default_factory=list)  # (monotonic ns, bytes), taken by this process
    log_tail: str = ""
    wall_s: float = 0.0
    pid: Optional[int] = None  # the child's process id (each repeat of a run is a process of its own)
    noise: Optional[dict] = None  # with ChildLimits.noise: what engine/noise.NoiseProbe saw of the measured phase


@dataclass
class ChildLimits:
    timeout_s: float = 600.0
    memory_bytes: Optional[int] = None  # RLIMIT_AS for the child: an allocation past it fails there
    rss_interval_s: Optional[float] = 0.05  # parent-side RSS sampling of the child; None turns it off
    noise: bool = False  # sense the noise around the child's measured phase (engine/noise.py; bench.run sets it)


def limit_memory(limit: int) -> None:
    """RLIMIT_AS for this process: run in the child before it loads anything (an allocation past it fails)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _limit_memory(limit: int) -> Callable[[], None]:
    return lambda: limit_memory(limit)


class ChildHandle(ABC):
    """A started child, whatever started it: enough for run_child to supervise it."""

    pid: int
    returncode: Optional[int] = None

    @abstractmethod
    def poll(self) -> Optional[int]:
        """Its exit status once it has exited (negative: the signal that killed it), else None."""

    @abstractmethod
    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for it to exit and return its exit status; subprocess.TimeoutExpired after ``timeout``."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL it, and everything it started when it leads a session of its own."""


class Launcher(ABC):
    """Starts a child that writes JSON-line events to ``events_fd`` and its output (stdout and stderr) to
    ``output_fd``, under ``limits.memory_bytes``; in a session of its own with ``new_session``."""

    @abstractmethod
    def launch(self, events_fd: int, output_fd: int, limits: ChildLimits, new_session: bool) -> ChildHandle:
        """Start it; raise an EdgebenchError (RuntimeUnavailable, ChildFailed) when it cannot start."""


class PopenHandle(ChildHandle):
    def __init__(self, proc: subprocess.Popen, group: bool):
        self.proc, self.pid, self.group = proc, proc.pid, group

    @property
    def returncode(self) -> Optional[int]:  # type: ignore[override]
        return self.proc.returncode

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                self.proc.kill()


class Exec(Launcher):
    """Run a program: ``argv_for(events_fd)`` is its command line (a new interpreter, the native harness)."""

    def __init__(self, argv_for: Callable[[int], list]):
        self.argv_for = argv_for

    def launch(self, events_fd: int, output_fd: int, limits: ChildLimits, new_session: bool) -> ChildHandle:
        argv = self.argv_for(events_fd)
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=subprocess.STDOUT, pass_fds=(events_fd,),
                env=env, start_new_session=new_session,
                preexec_fn=_limit_memory(limits.memory_bytes) if limits.memory_bytes else None,
            )
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot start {argv[0]}: {exc.strerror}") from None
        return PopenHandle(proc, new_session)


def _tail(path: Path, max_lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-max_lines:])


def last_meaningful_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and not line.startswith(("File ", "Current thread", "Thread 0x", "Extension modules")):
            return line
    return ""


def describe_death(returncode: int, phase: str, log_tail: str) -> str:
    """One line naming why the child died, from its exit status and what it printed last."""
    when = PHASE_WORDS.get(phase, f"during {phase}")
    if any(marker in log_tail for marker in OOM_MARKERS):
        return f"the runtime ran out of memory {when}"
    if returncode < 0:
        signum = -returncode
        if signum == signal.SIGKILL:
            return (f"the benchmark process was killed (SIGKILL) {when}; most likely the kernel's "
                    f"out-of-memory killer (check `dmesg`)")
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
        causes = {
            signal.SIGSEGV: "crashed with a segmentation fault",
            signal.SIGABRT: "aborted",
            signal.SIGBUS: "crashed with a bus error",
            signal.SIGILL: "hit an illegal instruction (a build for another CPU?)",
            signal.SIGFPE: "crashed with an arithmetic exception",
        }
        cause = causes.get(signum, "was terminated")
        return f"the runtime {cause} ({name}) {when}"
    last = last_meaningful_line(log_tail)
    detail = f": {last}" if last else ""
    return f"the benchmark process exited with status {returncode} {when} without a result{detail}"


class _EventReader:
    """Splits the pipe's bytes into JSON events and remembers the last phase and outcome. Chunks are joined
    only once a line is complete: a result line holds every sample (tens of MB for a sub-microsecond model),
    and re-splitting a growing buffer on every read would make reading it quadratic."""

    def __init__(self, progress: Optional[ProgressFn], watch: Optional[Callable[[dict], None]] = None):
        self.progress = progress
        self.watch = watch  # shown every event first (the noise probe's phase boundaries)
        self._pending: list = []
        self.phase = "start"
        self.result: Optional[dict] = None
        self.error: Optional[dict] = None

    def feed(self, data: bytes) -> None:
        end = data.rfind(b"\n")
        if end < 0:
            self._pending.append(data)
            return
        self._pending.append(data[:end])
        lines = b"".join(self._pending).split(b"\n")
        self._pending = [data[end + 1:]]
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))

    def _handle(self, event: dict) -> None:
        if self.watch:
            self.watch(event)
        kind = event.get("type")
        if kind in ("progress", "phase"):
            self.phase = event.get("phase", self.phase)
            if kind == "progress" and self.progress:
                self.progress(self.phase, event.get("runs", 0), event.get("elapsed_s", 0.0))
        elif kind == "result":
            self.result = event["result"]
        elif kind == "error":
            self.error = event


class ChildStopped(Exception):
    """The caller stopped the child (``stop_when`` said why: a cancel, a shutdown); it was killed."""

    def __init__(self, why: object):
        super().__init__(str(why))
        self.why = why


def _read_events(fd: int, reader: _EventReader, deadline: float,
                 stop_when: Optional[Callable[[], object]] = None) -> Optional[object]:
    """Pump events until the child closes the pipe: None; or the deadline passing: TIMED_OUT; or what
    ``stop_when()`` returned once it returned something."""
    while True:
        why = stop_when() if stop_when else None
        if why is not None:
            return why
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TIMED_OUT
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            return None
        reader.feed(data)


@dataclass
class ChildExit:
    """How a child ended: its exit status, the last phase it reported, its events, the tail of its output."""

    returncode: int
    phase: str
    error: Optional[dict]
    result: Optional[dict]
    log_tail: str


def worker_error(event: dict) -> EdgebenchError:
    cls = ERROR_KINDS.get(event.get("kind", ""), EdgebenchError)
    return cls(event.get("message", "the benchmark process failed"))


TIMED_OUT = "timed out"


def run_child(command: Union[Callable[[int], list], Launcher], limits: ChildLimits,
              progress: Optional[ProgressFn] = None,
              to_error: Callable[[ChildExit], EdgebenchError] = lambda end: worker_error(end.error or {}),
              on_death: Callable[[ChildExit], EdgebenchError] = lambda end: ChildFailed(
                  describe_death(end.returncode, end.phase, end.log_tail)),
              log_path: Optional[Path] = None, stop_when: Optional[Callable[[], object]] = None,
              on_start: Optional[Callable[[int], None]] = None, new_session: bool = False) -> ChildOutcome:
    """Run a process that writes JSON-line events to the fd it is given: sample its RSS, enforce the timeout and
    memory limit, and return its result or raise the error it reported (``to_error``) or the one its death means
    (``on_death``). The one supervisor of child processes: the Python worker, the native harness and the agent's
    job processes all run through it.

    ``command``: a Launcher (engine/zygote.py forks workers), or ``argv_for(fd)``, the command line of a program
    to run (``Exec``). ``log_path``: keep the child's output there (default: a temporary file; its tail goes into
    errors). ``stop_when``: polled while the child runs; once it returns something, the child is killed and
    ChildStopped(that) raised. ``on_start(pid)``: told the child's process id as soon as it exists.
    ``new_session``: the child leads a session of its own, and killing it kills everything it started (the agent's
    job processes); otherwise it stays in the caller's process group (Ctrl-C reaches it with the CLI)."""
    launcher = command if isinstance(command, Launcher) else Exec(command)
    with tempfile.TemporaryDirectory(prefix="edgebench-") as workdir:
        log_path = log_path or Path(workdir, "child.log")
        read_fd, write_fd = os.pipe()
        started = time.monotonic()
        try:
            with open(log_path, "wb") as log_file:
                child = launcher.launch(write_fd, log_file.fileno(), limits, new_session)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        if on_start:
            on_start(child.pid)
        probe = NoiseProbe(child.pid) if limits.noise else None
        sampler = RssSampler(child.pid, limits.rss_interval_s, on_tick=probe.tick if probe else None).start() \
            if limits.rss_interval_s else None
        reader = _EventReader(progress, probe.observe if probe else None)
        try:
            interrupted = _read_events(read_fd, reader, started + limits.timeout_s, stop_when)
            if interrupted is not None:
                child.kill()
            returncode = child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            os.close(read_fd)
            samples = sampler.stop() if sampler else []
        log_tail = _tail(log_path)
    log.debug("child exited with %s; output tail:\n%s", returncode, log_tail)
    if interrupted is not None and interrupted != TIMED_OUT:
        raise ChildStopped(interrupted)
    if interrupted == TIMED_OUT:
        when = PHASE_WORDS.get(reader.phase, reader.phase)
        raise ChildFailed(f"the runtime hung {when}: no result after {limits.timeout_s:g}s (--timeout), "
                          f"so the benchmark process was killed")
    end = ChildExit(returncode, reader.phase, reader.error, reader.result, log_tail)
    if reader.error is not None:
        raise to_error(end)
    if reader.result is None:
        raise on_death(end)
    if returncode != 0:  # some delegates crash in their destructors, after the result was sent
        log.warning("the benchmark process exited with %s after sending its result", returncode)
    return ChildOutcome(reader.result, samples, log_tail, time.monotonic() - started, child.pid,
                        probe.record() if probe else None)


def run_isolated(request: dict, limits: ChildLimits, progress: Optional[ProgressFn] = None) -> ChildOutcome:
    """Run one worker request (edgebench.agent.engine.worker) in a child process; return its result or raise."""
    with tempfile.TemporaryDirectory(prefix="edgebench-request-") as workdir:
        request_path = Path(workdir, "request.json")
        request_path.write_text(json.dumps(request))
        return run_child(lambda fd: worker_argv(request_path, fd), limits, progress)


def worker_argv(request_path: Path, events_fd: int) -> list:
    """The Python worker as a program of its own (``python -m edgebench.agent.engine.worker``)."""
    return [sys.executable, "-m", "edgebench.agent.engine.worker", str(request_path), str(events_fd)]
