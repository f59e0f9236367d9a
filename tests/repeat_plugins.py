"""Runtime plugins for runs of several repeats (``--runtime tests.repeat_plugins:X``), in the style of tests/plugins.py.

Each repeat is a fresh process, so a plugin cannot count repeats in memory: every load appends its process id to
the file named by $EDGEBENCH_TEST_LOADS, and the number of lines says which repeat this is (1-based). That file
is also the tests' record of which processes really loaded the model.

    $EDGEBENCH_TEST_MISBEHAVE_AT   the repeat that misbehaves (default: none)
    $EDGEBENCH_TEST_MISBEHAVE      what it does (as tests/plugins.py's plugins do): segfault, abort, hang, oom,
                                   killed (SIGKILL, as by the OOM killer), load-segfault (in the load, not a run),
                                   kill-parent (SIGKILL the zygote that forked it; the repeat itself completes)
    $EDGEBENCH_TEST_LOAD_SLEEP_S   seconds every load sleeps (to make a run longer than one repeat's timeout)
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import numpy as np

from edgebench.agent.runtimes.ort import OnnxRuntime


def record_load() -> int:
    """Append this process's id to the loads file; the repeat number (1-based) this load is."""
    path = os.environ["EDGEBENCH_TEST_LOADS"]
    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    with open(path) as handle:
        return len(handle.read().split())


def loads(path) -> list[int]:
    """The process ids that loaded the model, in order."""
    return [int(line) for line in open(path).read().split()]


class CountsLoads(OnnxRuntime):
    """ONNX Runtime for real; each load recorded; in repeat $EDGEBENCH_TEST_MISBEHAVE_AT, the fourth call
    misbehaves (the first inference and two warm-up runs succeed first; segfault and hang never return)."""

    def load(self, path, options):
        repeat = record_load()
        time.sleep(float(os.environ.get("EDGEBENCH_TEST_LOAD_SLEEP_S", "0")))
        misbehaves = repeat == int(os.environ.get("EDGEBENCH_TEST_MISBEHAVE_AT", "0"))
        how = os.environ.get("EDGEBENCH_TEST_MISBEHAVE", "segfault")
        if misbehaves and how == "load-segfault":
            ctypes.string_at(0)
        session = super().load(path, options)
        if not misbehaves:
            return session
        bind = session.bind

        def failing_bind(feeds):
            run = bind(feeds)
            calls = [0]

            def call():
                calls[0] += 1
                if calls[0] == 4:
                    misbehave(how)
                return run()

            return call

        session.bind = failing_bind
        return session


def misbehave(how: str) -> None:
    if how == "segfault":
        ctypes.string_at(0)
    elif how == "abort":
        os.abort()
    elif how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "oom":  # run with a memory limit
        hoard = []
        while True:
            hoard.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))
    elif how == "hang":
        while True:
            time.sleep(1)
    elif how == "kill-parent":  # the zygote that forked this worker: the run must name what happened
        os.kill(os.getppid(), signal.SIGKILL)  # and this repeat itself completes
    else:
        raise ValueError(how)
