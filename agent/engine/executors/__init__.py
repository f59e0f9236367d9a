"""Executors: what runs the measurement protocol for a worker request, in a child process of its own.

An *executor* is not a *runtime plugin*. A runtime plugin (agent/runtimes/) loads a model into a Session and hands
the engine a callable; the Python worker executor (python.py) runs edgebench's own protocol (engine/measure.py)
around it, in `python -m edgebench.agent.engine.worker`. An out-of-process executor runs the whole protocol itself
in another program (native.py: the C++ harness; next, a llama.cpp or ExecuTorch runner). Both take the same worker
request and return the same worker result (schemas/worker-result.v1.json), so the report, the statistics and the
physics are computed once, by the engine, whatever ran the model.

    executor = executor_for("native")      # or "litert", "onnxruntime", "pkg.module:Class": the Python worker
    executor.check(model_format)           # raises before anything runs: unknown, unavailable, wrong format
    outcome = executor.execute(worker_request, limits, progress)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from edgebench.agent.engine.executors.base import Executor

WORKER_RESULT_SCHEMA = Path(__file__).parents[1] / "schemas" / "worker-result.v1.json"  # the executors' contract
__all__ = ["Executor", "executor_for", "in_process_only", "WORKER_RESULT_SCHEMA"]
# runtime names that name an out-of-process executor rather than a runtime plugin
OUT_OF_PROCESS = {"native": "edgebench.agent.engine.executors.native:NativeExecutor"}


def executor_for(runtime: str) -> Executor:
    """The executor for a runtime name: an out-of-process one by its name, else the Python worker with that
    runtime plugin."""
    target = OUT_OF_PROCESS.get(runtime)
    if target is None:
        from edgebench.agent.engine.executors.python import PythonWorker

        return PythonWorker(runtime)
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def in_process_only(runtime: Optional[str], what: str) -> None:
    """Commands that drive a runtime plugin directly (compare, variants) cannot use an out-of-process executor."""
    if runtime in OUT_OF_PROCESS:
        from edgebench.agent.errors import RuntimeUnavailable

        raise RuntimeUnavailable(f"--runtime {runtime} runs the whole protocol in its own process and only through "
                                 f"`edgebench bench`; {what} needs litert or onnxruntime")
