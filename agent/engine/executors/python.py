"""The Python worker: edgebench's own protocol (engine/measure.py) around a runtime plugin's callable, in
`python -m edgebench.agent.engine.worker`, supervised by engine/isolation.run_child."""

from __future__ import annotations

from typing import Optional

from edgebench.agent.engine.executors.base import Executor
from edgebench.agent.engine.isolation import ChildLimits, ChildOutcome, ProgressFn, run_isolated
from edgebench.agent.runtimes import choose_runtime


class PythonWorker(Executor):
    name = "python"

    def __init__(self, runtime: str):
        self.runtime = runtime

    def check(self, model_format: str) -> None:
        choose_runtime(model_format, self.runtime)

    def execute(self, worker_request: dict, limits: ChildLimits, progress: Optional[ProgressFn] = None
                ) -> ChildOutcome:
        return run_isolated(worker_request, limits, progress)
