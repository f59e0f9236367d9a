"""The executor interface (see the package's docstring)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from edgebench.agent.engine.isolation import ChildLimits, ChildOutcome, ProgressFn


class Executor(ABC):
    name: str

    @abstractmethod
    def check(self, model_format: str) -> None:
        """Raise (UsageError, RuntimeUnavailable) if this executor cannot run a model of this format here."""

    @abstractmethod
    def execute(self, worker_request: dict, limits: ChildLimits, progress: Optional[ProgressFn] = None
                ) -> ChildOutcome:
        """Run the protocol for ``worker_request`` (engine/bench.py builds it) in a child process; return its
        worker result or raise the EdgebenchError that says why there is none."""

    def runner(self, worker_request: dict, limits: ChildLimits) -> Runner:
        """What runs the same request again in a fresh child process per repeat (``bench --repeats``). This
        default starts each child as ``execute`` does; an executor that can start them cheaper overrides it."""
        return Runner(self, worker_request, limits)


class Runner:
    """Runs one worker request once per call of ``run``, each time in a fresh child process; a context manager
    (``close`` ends whatever it keeps between repeats)."""

    def __init__(self, executor: Executor, worker_request: dict, limits: ChildLimits):
        self.executor, self.worker_request, self.limits = executor, worker_request, limits

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Block until a child can start at once (bench.run calls it before the idle baseline, so a runner that
        prepares in the background does not disturb it)."""

    def run(self, progress: Optional[ProgressFn] = None) -> ChildOutcome:
        """One repeat: a fresh child process runs the request; its outcome or the EdgebenchError it ended in."""
        return self.executor.execute(self.worker_request, self.limits, progress)

    def close(self) -> None:
        """Release what the runner keeps between repeats."""
