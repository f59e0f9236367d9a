"""Fresh worker processes for the price of a fork: the zygote of one benchmark run.

A repeat of a run (``edgebench bench --repeats N``) must be a process of its own: a fresh model load, fresh
allocations, a fresh heap. Starting an interpreter and importing numpy and the runtime for each costs far more than
the load itself on a small board, so a run starts one *zygote* instead: ``python -m edgebench.agent.engine.zygote
SOCKET_FD RUNTIME`` imports what every worker imports (``worker.preload``), then forks one worker per request it
receives. The parent talks to it over a UNIX socket pair (SOCK_SEQPACKET: one message per send), passing the
worker's events pipe and output file as file descriptors (SCM_RIGHTS):

    parent -> zygote   {"request": ..., "memory_bytes": ..., "new_session": ...}  + fds [events, output]
    zygote -> parent   {"pid": P}                      the worker exists (or {"error": "..."}: fork failed)
    zygote -> parent   {"exit": STATUS}                it exited (Popen's convention: -N for signal N)
    parent -> zygote   {"reap": P}                     the zygote reaps it; only now can the pid be reused

The zygote waits for the worker with ``waitid(WNOWAIT)``, which leaves it a zombie until the parent has the exit
status, so the parent can SIGKILL the pid (a timeout, a stop) without ever hitting another process. In the worker,
before anything runs: its output goes to the output file, stdin to /dev/null, the memory limit (RLIMIT_AS) is set,
SIGINT gets Python's default handler back, and with ``new_session`` it leads a session of its own. The supervisor
(``isolation.run_child``) sees a ``ChildHandle`` like any other: pid, poll, wait, kill.

Closing the socket ends the zygote; so does the parent's death (the kernel closes the socket).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import NoReturn, Optional

from edgebench.agent.engine.isolation import (
    ChildHandle,
    ChildLimits,
    Launcher,
    describe_death,
    limit_memory,
)
from edgebench.agent.errors import ChildFailed

MAX_MESSAGE = 1 << 20  # a worker request is a few hundred bytes; a message larger than this is refused


def _send(sock: socket.socket, message: dict, fds: tuple = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


# ---------------------------------------------------------------- the zygote process

def _exit_status(pid: int) -> int:
    """Wait until ``pid`` has exited, without reaping it; its status in Popen's convention."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    if info is None:  # cannot happen without WNOHANG
        return 0
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status  # CLD_KILLED, CLD_DUMPED: the signal


def _worker(order: dict, events_fd: int, output_fd: int, sock: socket.socket) -> NoReturn:
    """In the forked child: set the process up as run_child's Exec would, then run the worker request."""
    code = 1
    try:
        sock.close()
        if order.get("new_session"):
            os.setsid()
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import faulthandler

        faulthandler.enable(file=sys.stderr)  # fd 2: the output file now
        if order.get("memory_bytes"):
            limit_memory(int(order["memory_bytes"]))
        from edgebench.agent.engine import worker

        code = worker.serve(order["request"], events_fd)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - what an uncaught exception does in `python -m`: a traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve(sock_fd: int, runtime: str) -> int:
    """The zygote's loop: preload, say ready, then one worker at a time until the socket closes."""
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; closing the socket ends us
    # numpy's BLAS and some runtimes start a thread at import. Forking is still safe here: the child only runs
    # the worker, which initialises the runtime afresh (what the tests exercise), and never the zygote's threads.
    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
    sock = socket.socket(fileno=sock_fd)
    from edgebench.agent.engine import worker

    worker.preload(runtime)
    _send(sock, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
        except OSError:
            return 0
        if not data:
            return 0  # the parent closed the socket (or died)
        order = json.loads(data)
        if len(fds) != 2 or "request" not in order:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": "a launch needs a request, the events pipe and the output file"})
            continue
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered may be written twice, by us and by the child
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": f"cannot fork a benchmark process: {exc.strerror}"})
            continue
        if pid == 0:
            _worker(order, fds[0], fds[1], sock)
        for fd in fds:
            os.close(fd)
        try:
            _send(sock, {"pid": pid})
            status = _exit_status(pid)
            _send(sock, {"exit": status})
            reply = sock.recv(MAX_MESSAGE)  # {"reap": pid}: the parent has the status
        except OSError:
            reply = b""
        if not reply:  # the parent is gone: nobody will kill the worker, so make sure it ends
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not reply:
            return 0


def main() -> int:
    return serve(int(sys.argv[1]), sys.argv[2])


# ---------------------------------------------------------------- the parent's side

class ZygoteChild(ChildHandle):
    """A worker the zygote forked. Its exit status comes over the socket; kill() signals its pid, which stays
    the worker's (a zombie at worst) until the status has been received."""

    def __init__(self, zygote: Zygote, pid: int, group: bool):
        self.zygote, self.pid, self.group = zygote, pid, group
        self.returncode: Optional[int] = None

    def _receive(self, timeout: Optional[float]) -> bool:
        message = self.zygote._receive(timeout)
        if message is None:
            return False
        if "exit" in message:
            self.returncode = int(message["exit"])
            self.zygote._reaped(self.pid)
        else:  # the zygote died (killed, most likely with its worker: the OOM killer): the status is lost
            self.returncode = -signal.SIGKILL
            self.zygote._lost()
        return True

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            self._receive(0)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None and not self._receive(timeout):
            raise subprocess.TimeoutExpired(f"benchmark process {self.pid}", timeout or 0)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.returncode is not None:
            return  # reaped (or about to be): the pid may belong to another process now
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)


class Zygote:
    """The parent's handle on a zygote: started at once (it imports while the caller does other work),
    ``wait_ready`` before the first launch, ``close`` at the end of the run."""

    def __init__(self, runtime: str):
        self.runtime = runtime
        # Its own output (a crash while importing): a file without a name, gone with the last descriptor, so a
        # parent killed outright leaves nothing behind.
        self._log = tempfile.TemporaryFile(prefix="edgebench-zygote-")  # noqa: SIM115 - closed by close()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._ready = False
        self._running: Optional[int] = None  # the pid of the worker running now
        self._gone = False
        try:
            with theirs:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "edgebench.agent.engine.zygote", str(theirs.fileno()), runtime],
                    stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),),
                    env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        except OSError as exc:
            self._sock.close()
            self._log.close()
            raise ChildFailed(f"cannot start the benchmark process: {exc.strerror}") from None

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _receive(self, timeout: Optional[float]) -> Optional[dict]:
        """The next message; None when ``timeout`` passes first; {} when the zygote is gone."""
        if self._gone:
            return {}
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            self._gone = True
            return {}
        return json.loads(data)

    def _died(self, when: str) -> ChildFailed:
        """The zygote is gone: its death, named like a worker's (it was starting the benchmark process)."""
        self._gone = True
        try:
            returncode = self.proc.wait(timeout=5)  # it closed the socket: it is exiting, or gone
        except subprocess.TimeoutExpired:
            self.proc.kill()
            returncode = self.proc.wait()
        return ChildFailed(describe_death(returncode, when, self.log_tail()))

    def log_tail(self, max_lines: int = 20) -> str:
        """The end of the zygote's own output (read without moving the offset it writes at)."""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, 8192, max(0, size - 8192))
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-max_lines:])

    def _reaped(self, pid: int) -> None:
        self._running = None
        with contextlib.suppress(OSError):
            _send(self._sock, {"reap": pid})

    def _lost(self) -> None:
        self._running = None
        self._gone = True

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the zygote has imported the runtime; raise ChildFailed naming its death or hang."""
        if self._ready:
            return
        deadline = time.monotonic() + timeout_s
        message = self._receive(max(0.0, deadline - time.monotonic()))
        if message is None:
            self.proc.kill()
            self.proc.wait()
            self._gone = True
            raise ChildFailed(f"the runtime hung while starting: not ready after {timeout_s:g}s (--timeout), so the "
                              f"benchmark process was killed")
        if not message.get("ready"):
            raise self._died("start")
        self._ready = True

    def launch(self, request: dict, events_fd: int, output_fd: int, memory_bytes: Optional[int],
               new_session: bool, timeout_s: float) -> ZygoteChild:
        """Fork a worker for ``request``; it writes events to ``events_fd`` and its output to ``output_fd``."""
        self.wait_ready(timeout_s)
        if self._running is not None:
            raise RuntimeError("the zygote runs one benchmark process at a time")
        if self._gone:
            raise self._died("start")
        order = {"request": request, "memory_bytes": memory_bytes, "new_session": new_session}
        try:
            _send(self._sock, order, (events_fd, output_fd))
        except OSError:
            raise self._died("start") from None
        message = self._receive(timeout_s)
        if message is None:  # a fork does not take this long: the zygote is stuck
            self.proc.kill()
            self.proc.wait()
            self._gone = True
            raise ChildFailed(f"the benchmark process did not start: no answer after {timeout_s:g}s (--timeout) from "
                              f"the process that forks it, so that was killed")
        if not message:
            raise self._died("start")
        if "error" in message:
            raise ChildFailed(message["error"])
        self._running = int(message["pid"])
        return ZygoteChild(self, self._running, new_session)

    def launcher(self, request: dict) -> Launcher:
        """A Launcher for isolation.run_child that forks a worker for ``request`` from this zygote."""
        return Forked(self, request)

    def close(self) -> None:
        """End the zygote (closing the socket ends its loop) and remove its files."""
        if self.proc.poll() is None and self._running is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._running, signal.SIGKILL)  # run_child has ended it already; never leave one behind
        self._sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Forked(Launcher):
    """isolation.run_child's launcher for a worker forked by a zygote."""

    def __init__(self, zygote: Zygote, request: dict):
        self.zygote, self.request = zygote, request

    def launch(self, events_fd: int, output_fd: int, limits: ChildLimits, new_session: bool) -> ChildHandle:
        return self.zygote.launch(self.request, events_fd, output_fd, limits.memory_bytes, new_session,
                                  limits.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
