"""The Python worker: edgebench's own protocol (engine/measure.py) around a runtime plugin's callable, in a worker
process forked by the run's zygote (engine/zygote.py: it has imported numpy, the worker and the runtime once, so a
fresh worker per repeat costs a fork), supervised by engine/isolation.run_child."""

from __future__ import annotations

from typing import Optional

from edgebench.agent.engine.executors.base import Executor, Runner
from edgebench.agent.engine.isolation import ChildLimits, ChildOutcome, ProgressFn, run_child
from edgebench.agent.engine.zygote import Zygote
from edgebench.agent.runtimes import choose_runtime


class PythonWorker(Executor):
    name = "python"

    def __init__(self, runtime: str):
        self.runtime = runtime

    def check(self, model_format: str) -> None:
        choose_runtime(model_format, self.runtime)

    def execute(self, worker_request: dict, limits: ChildLimits, progress: Optional[ProgressFn] = None
                ) -> ChildOutcome:
        with self.runner(worker_request, limits) as runner:
            return runner.run(progress)

    def runner(self, worker_request: dict, limits: ChildLimits) -> Runner:
        return ForkingRunner(self, worker_request, limits)


class ForkingRunner(Runner):
    """Starts the zygote at once (it imports while the caller discovers sensors and collects provenance) and forks
    one worker per repeat from it."""

    def __init__(self, executor: Executor, worker_request: dict, limits: ChildLimits):
        super().__init__(executor, worker_request, limits)
        self.zygote = Zygote(worker_request["runtime"])

    def wait_ready(self) -> None:
        self.zygote.wait_ready(self.limits.timeout_s)

    def run(self, progress: Optional[ProgressFn] = None) -> ChildOutcome:
        return run_child(self.zygote.launcher(self.worker_request), self.limits, progress)

    def close(self) -> None:
        self.zygote.close()
