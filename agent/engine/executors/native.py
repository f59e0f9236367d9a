"""The native C++ harness (``native/``) as an executor: ``edgebench bench MODEL --runtime native``.

The harness runs the whole measurement protocol in its own process (no interpreter between the clock and the
runtime) and writes the worker's JSON-line events: progress, then one result with every sample, or one error.
It is started through the same supervisor as the Python worker (``isolation.run_child``: RSS sampling, timeout,
memory limit), and its deaths and exit codes become edgebench errors. Statistics are then
computed from its samples by ``agent/engine/stats.py``, the same code as for every other runtime.

Repeats (``bench --repeats``) start the harness once each (``Executor.runner``'s default): it has no interpreter to
start, so a repeat costs the process's start and the runtime library's load, about 0.03 s beyond the model's load
on the lab's VM (bench/repeat_cost.py --native, docs/performance.md).

Placement and the per-op profile (``--profile-ops``): for TFLite the harness reports them itself; for ONNX Runtime it
reports the profile files ONNX Runtime wrote (``profile_files``, in a temporary directory of this executor's), and
``read_profiles`` turns them into the worker result's ``placement`` and ``ops.nodes`` through the same reader as the
Python plugin (runtimes/ort_profile.py), so the result keeps the one schema.

The binary is ``$EDGEBENCH_NATIVE_BIN``, else ``native/build/edgebench-native`` in the source tree, else
``edgebench-native`` on ``PATH``. Build it with ``make native`` (docs/native.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from edgebench.agent.engine.executors.base import Executor
from edgebench.agent.engine.isolation import (
    ChildExit,
    ChildLimits,
    ChildOutcome,
    ProgressFn,
    describe_death,
    last_meaningful_line,
    run_child,
)
from edgebench.agent.errors import (
    ERROR_KINDS,
    ChildFailed,
    EdgebenchError,
    InferenceError,
    InputError,
    ModelError,
    RuntimeUnavailable,
    UsageError,
)
from edgebench.agent.modelfile import ONNX, TFLITE
from edgebench.agent.runtimes import ort_profile

BINARY_ENV = "EDGEBENCH_NATIVE_BIN"
BINARY_NAME = "edgebench-native"
SOURCE_TREE = Path(__file__).resolve().parents[3]
BUILD_DIR = SOURCE_TREE / "native" / "build"
BUILD_HINT = "build it with `make native` (CMake + a C++17 compiler; see docs/native.md)"

# edgebench-native's exit codes (docs/native.md) -> the error each one is in edgebench.
EXIT_KINDS: dict[int, type[EdgebenchError]] = {
    2: UsageError,  # bad command line
    3: ModelError,  # bad model file
    4: InputError,  # --shape / --input / .npy that does not fit
    5: RuntimeUnavailable,  # the runtime library cannot be loaded
    6: UsageError,  # unknown delegate or execution provider
    7: RuntimeUnavailable,  # no delegate / provider in the chain could run the model
    8: InferenceError,  # the runtime failed while running
}


def find_binary() -> Optional[Path]:
    """The harness binary to run, or None when it is not built."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    built = BUILD_DIR / BINARY_NAME
    if built.is_file() and os.access(built, os.X_OK):
        return built
    on_path = shutil.which(BINARY_NAME)
    return Path(on_path) if on_path else None


def _seconds(value: float) -> str:
    return repr(float(value))  # the harness parses plain and exponent notation


def command(binary: Path, worker_request: dict, events_fd: int, profile_dir: Optional[str] = None) -> list[str]:
    """The harness command line for a worker request (the shape bench.prepare builds); ``profile_dir``: where ONNX
    Runtime writes its profile files."""
    options = worker_request.get("options") or {}
    settings = worker_request.get("settings") or {}
    argv = [str(binary), worker_request["model"], "--events-fd", str(events_fd)]
    model_format = worker_request.get("format")
    if model_format:
        argv += ["--format", model_format]
    if options.get("threads"):
        argv += ["--threads", str(int(options["threads"]))]
    if options.get("delegates"):
        argv += ["--delegate", ",".join(options["delegates"])]
    if options.get("providers"):
        argv += ["--providers", ",".join(options["providers"])]
    for key, value in (options.get("delegate_options") or {}).items():
        argv += ["--delegate-option", f"{key}={value}"]
    flags = {"min_runs": "--min-runs", "warmup_runs": "--warmup-runs", "profile_runs": "--profile-runs"}
    for key, flag in flags.items():
        if key in settings:
            argv += [flag, str(int(settings[key]))]
    durations = {"min_duration_s": "--min-duration", "max_duration_s": "--max-duration",
                 "warmup_duration_s": "--warmup-duration", "progress_interval_s": "--progress-interval"}
    for key, flag in durations.items():
        if key in settings:
            argv += [flag, _seconds(settings[key])]
    for item in worker_request.get("shape_args") or ():
        argv += ["--shape", item]
    for item in worker_request.get("input_args") or ():
        argv += ["--input", item]
    argv += ["--seed", str(int(worker_request.get("seed", 0)))]
    if profile_dir:
        argv += ["--profile-dir", profile_dir]
    return argv


def read_profiles(result: dict) -> dict:
    """Replace the harness's ``profile_files`` (ONNX Runtime's profiles: the placement session's one inference, and
    the profiled runs with their warm-up) with the worker result's ``placement`` and ``ops.nodes``, read as the Python
    plugin reads them. The files are removed."""
    files = result.pop("profile_files", None) or {}
    try:
        if files.get("placement"):
            runs = ort_profile.read_runs(files["placement"])
            first_choice = (result["backend"]["requested"] or ["CPUExecutionProvider"])[0]
            result["placement"] = ort_profile.placement(runs[0], first_choice).to_dict() if runs else None
        if files.get("ops") and result.get("ops"):
            count = len(result["ops"]["latency_ns"])
            runs = ort_profile.read_runs(files["ops"])
            result["ops"]["nodes"] = ort_profile.node_durations(runs[-count:] if count else [])
    finally:
        for path in files.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
    return result


def _failure(returncode: int, phase: str, log_tail: str) -> EdgebenchError:
    """The error for a harness that exited without a result event."""
    cls = EXIT_KINDS.get(returncode)
    if cls is None:
        return ChildFailed(describe_death(returncode, phase, log_tail))
    last = last_meaningful_line(log_tail).removeprefix("edgebench-native: error: ")
    return cls(last or f"the native harness exited with status {returncode}")


class NativeExecutor(Executor):
    """Runs .tflite (TensorFlow Lite C API) and .onnx (ONNX Runtime C API) models in the C++ harness."""

    name = "native"
    formats = (TFLITE, ONNX)

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        if find_binary() is not None:
            return None
        configured = os.environ.get(BINARY_ENV)
        if configured:
            return f"the native harness is not at ${BINARY_ENV}={configured} (not an executable file); {BUILD_HINT}"
        return f"the native harness (edgebench-native) is not built: {BUILD_HINT}"

    def check(self, model_format: str) -> None:
        if model_format not in self.formats:
            raise UsageError(f"runtime native cannot run {model_format} models (it runs: {', '.join(self.formats)})")
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeUnavailable(reason)

    def execute(self, worker_request: dict, limits: ChildLimits, progress: Optional[ProgressFn] = None
                ) -> ChildOutcome:
        """Run the protocol in the harness; return the worker's result shape or raise an EdgebenchError."""
        binary = find_binary()
        if binary is None:
            raise RuntimeUnavailable(self.unavailable_reason() or BUILD_HINT)
        with tempfile.TemporaryDirectory(prefix="edgebench-native-") as profile_dir:  # gone even after a crash
            outcome = run_child(lambda fd: command(binary, worker_request, fd, profile_dir), limits, progress,
                                _reported_error, lambda end: _failure(end.returncode, end.phase, end.log_tail))
            read_profiles(outcome.result)
        return outcome


def _reported_error(end: ChildExit) -> EdgebenchError:
    """The harness's own error event: its kind if it names one of ours, else by its exit code."""
    event = end.error or {}
    kind = ERROR_KINDS.get(event.get("kind", "")) or EXIT_KINDS.get(int(event.get("exit_code", 1)), EdgebenchError)
    return kind(event.get("message", "the native harness failed"))
