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
