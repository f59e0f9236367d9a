"""Runtime plugins that misbehave for real, to test child-process isolation (``--runtime tests.plugins:X``).

They wrap ONNX Runtime so a model really loads; then the inference does what a broken native runtime does:
dereference NULL (SIGSEGV), abort(), never return, exhaust memory, or get SIGKILLed as by the OOM killer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import numpy as np

from edgebench.agent.runtimes.ort import OnnxRuntime


class _Misbehaving(OnnxRuntime):
    fail_after = 3  # calls that succeed first, so the failure happens during the measured phases

    def misbehave(self) -> None:
        raise NotImplementedError

    def load(self, path, options):
        session = super().load(path, options)
        bind, runtime = session.bind, self

        def failing_bind(feeds):
            run = bind(feeds)
            calls = [0]

            def call():
                calls[0] += 1
                if calls[0] > runtime.fail_after:
                    runtime.misbehave()
                return run()

            return call

        session.bind = failing_bind
        return session


class Segfault(_Misbehaving):
    def misbehave(self) -> None:
        ctypes.string_at(0)  # reads address 0: a real SIGSEGV in native code


class Abort(_Misbehaving):
    def misbehave(self) -> None:
        os.abort()


class Hang(_Misbehaving):
    def misbehave(self) -> None:
        while True:
            time.sleep(1)


class OutOfMemory(_Misbehaving):
    """Allocates until the allocator fails (run with --memory-limit so the test machine is safe)."""

    def misbehave(self) -> None:
        hoard = []
        while True:
            hoard.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))


class Killed(_Misbehaving):
    def misbehave(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


class LoadSegfault(OnnxRuntime):
    def load(self, path, options):
        ctypes.string_at(0)


class WritesFileAtCall(OnnxRuntime):
    """Runs the model for real and, inside its Nth call, writes a file: a board event (a thermal zone crossing
    its trip point, a throttle bit) placed at a known inference instead of at a wall-clock time, so a test of
    what the sampler sees *during* the measured run does not race the run's start.

    The file, its text and N come from $EDGEBENCH_TEST_WRITE_FILE, $EDGEBENCH_TEST_WRITE_TEXT and
    $EDGEBENCH_TEST_WRITE_AT (call 1 is the first inference; with --warmup-runs 0 --warmup-duration 0, call
    k + 1 is measured run k)."""

    def load(self, path, options):
        session = super().load(path, options)
        bind = session.bind
        target, text = os.environ["EDGEBENCH_TEST_WRITE_FILE"], os.environ["EDGEBENCH_TEST_WRITE_TEXT"]
        at = int(os.environ["EDGEBENCH_TEST_WRITE_AT"])
        calls = [0]

        def writing_bind(feeds):
            run = bind(feeds)

            def call():
                calls[0] += 1
                if calls[0] == at:
                    with open(target, "w") as handle:
                        handle.write(text)
                return run()

            return call

        session.bind = writing_bind
        return session


class SleepsEachCall(OnnxRuntime):
    """Runs the model for real and sleeps 200 µs inside every call: each run blocks once, a context switch the
    kernel counts for certain (voluntary, or involuntary if it is preempted first), so a test of the noise section's
    counters does not depend on the machine being busy."""

    def load(self, path, options):
        session = super().load(path, options)
        bind = session.bind

        def sleeping_bind(feeds):
            run = bind(feeds)

            def call():
                time.sleep(0.0002)
                return run()

            return call

        session.bind = sleeping_bind
        return session
