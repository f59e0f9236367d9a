"""A llama.cpp runtime plugin for tests (``--runtime tests.llamacpp_plugins:WritesFileAtStep``): a subclass keeps the
runtime's name, so a bench of it is a generation (engine/bench.py: ``generates``)."""

from __future__ import annotations

import os

from edgebench.agent.runtimes.llamacpp import LlamaCppRuntime, LlamaCppSession


class WritesFileAtStep(LlamaCppRuntime):
    """Generates for real and, inside its Nth decode step, writes a file: a board event (a thermal zone crossing its
    trip point) placed at a known token instead of at a wall-clock time, so a test of what the sampler sees during
    the generation does not race it (tests.plugins:WritesFileAtCall does the same for one inference at a time).

    The file, its text and N come from $EDGEBENCH_TEST_WRITE_FILE, $EDGEBENCH_TEST_WRITE_TEXT and
    $EDGEBENCH_TEST_WRITE_AT; step 1 is the warm-up's one decode step, so step k + 1 is measured decode step k (the
    numbering of tests.test_physics.at_measured_run). Each repeat is a fresh process: each writes at its step N."""

    def load(self, path: str, options) -> LlamaCppSession:
        session = super().load(path, options)
        step = session.step
        target, text = os.environ["EDGEBENCH_TEST_WRITE_FILE"], os.environ["EDGEBENCH_TEST_WRITE_TEXT"]
        at = int(os.environ["EDGEBENCH_TEST_WRITE_AT"])
        calls = [0]

        def writing_step(token: int) -> None:
            calls[0] += 1
            if calls[0] == at:
                with open(target, "w") as handle:
                    handle.write(text)
            step(token)

        session.step = writing_step
        return session
