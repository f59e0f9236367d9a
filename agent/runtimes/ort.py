"""ONNX Runtime plugin.

Execution providers form an ordered fallback chain: providers missing from this onnxruntime build, or that
fail to initialise, are skipped with their reason; the CPU provider is the last resort. What the session
really registered (``get_providers()``) is reported as used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import uuid
from functools import partial
from typing import Any, Callable, Optional

import numpy as np

from edgebench.agent.errors import InputError, ModelError, UsageError, load_error
from edgebench.agent.runtimes import ort_profile
from edgebench.agent.runtimes.base import (
    Backend,
    Fallback,
    OpProfiler,
    Placement,
    Runtime,
    RuntimeOptions,
    Session,
)
from edgebench.agent.runtimes.names import FORMATS
from edgebench.agent.tensors import TensorSpec

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dml": "DmlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
}
CPU = "CPUExecutionProvider"
# ONNX element types -> numpy dtype names.
_ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


def provider_name(name: str) -> str:
    return SHORT_NAMES.get(name.lower(), name if name.endswith("ExecutionProvider") else f"{name}ExecutionProvider")


def _spec(arg: Any) -> TensorSpec:
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"tensor {arg.name!r} has type {arg.type}, which edgebench cannot feed")
    shape = tuple(d if isinstance(d, int) else d for d in (arg.shape or []))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


def _profiled_options(session_options: Any) -> Any:
    """A copy of the session's options that records ONNX Runtime's profile (a unique file in the temp dir)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    for name in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level", "graph_optimization_level",
                 "execution_mode"):
        setattr(options, name, getattr(session_options, name))
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"edgebench-ort-{uuid.uuid4().hex}")
    return options


def _profile_runs(session: Any) -> list[list[dict]]:
    """End the session's profiling (ONNX Runtime stops recording then) and read its file, which is removed."""
    path = session.end_profiling()
    try:
        return ort_profile.read_runs(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


class OrtOpProfiler(OpProfiler):
    source = ort_profile.SOURCE

    def __init__(self, session: Any):
        self.session = session
        self._ended = False

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        return partial(self.session.run, None, dict(feeds))

    def runs(self) -> list[list[dict]]:
        """End the profile (once) and read its runs; the file is removed."""
        self._ended = True
        return _profile_runs(self.session)

    def collect(self, runs: int) -> list[dict]:
        return ort_profile.node_durations(self.runs()[-runs:] if runs else [])

    def close(self) -> None:
        if not self._ended:  # a run that failed: still end the profile, so its file does not stay behind
            with contextlib.suppress(Exception):
                self.runs()


class OrtSession(Session):
    def __init__(self, session: Any, backend: Backend, path: str = "", session_options: Any = None,
                 providers: Optional[list] = None):
        self._session = session
        self._path, self._options, self._providers = path, session_options, providers or [CPU]
        self.backend = backend
        self.inputs = [_spec(a) for a in session.get_inputs()]
        self.outputs = [_spec(a) for a in session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        return partial(self._session.run, None, dict(feeds))

    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, result))

    def placement(self, feeds: dict[str, np.ndarray]) -> Optional[Placement]:
        """Each node's provider in one inference of a second, profiled session of the model (same options and
        providers): this session is never profiled, so its first inference and its measured runs carry no profiler
        cost. The engine calls it after the measured phase."""
        profiler = self.op_profiler()
        try:
            profiler.bind(feeds)()
            runs = profiler.runs()
        finally:
            profiler.close()
        return ort_profile.placement(runs[0], self.backend.requested[0]) if runs else None

    def op_profiler(self) -> OrtOpProfiler:
        import onnxruntime as ort

        session = ort.InferenceSession(self._path, sess_options=_profiled_options(self._options),
                                       providers=self._providers)
        return OrtOpProfiler(session)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return super().infer(feeds)
        except Exception as exc:  # ORT raises its own exception types; name the bad input when it says so
            if "INVALID_ARGUMENT" in str(exc) and "input" in str(exc).lower():
                raise InputError(f"the model does not accept these inputs: {_first_line(exc)}") from None
            raise


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = FORMATS["onnxruntime"]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return "ONNX Runtime is not installed: pip install 'edgebench[onnx]' (or onnxruntime)"
        return None

    @classmethod
    def preload(cls) -> None:
        if cls.unavailable_reason() is None:
            import onnxruntime  # noqa: F401 - imported for the workers the zygote forks

    @classmethod
    def check_options(cls, options: RuntimeOptions) -> None:
        import onnxruntime as ort

        if options.delegates or options.delegate_options:
            given = f"--delegate {','.join(options.delegates)}" if options.delegates else "--delegate-option"
            raise UsageError(f"onnxruntime takes execution providers (--providers, e.g. CUDA,CPU), not TFLite "
                             f"delegates ({given})")
        known = set(ort.get_all_providers())  # every provider this onnxruntime version knows, built in or not
        unknown = [name for name in options.providers if provider_name(name) not in known]
        if unknown:
            short: dict[str, str] = {}
            for name, full in SHORT_NAMES.items():
                short.setdefault(full, name)
            listed = ", ".join(sorted(short.get(full, full) for full in known))
            raise UsageError(f"unknown execution provider {unknown[0]!r} (onnxruntime {ort.__version__} knows: "
                             f"{listed}; this build has: {', '.join(ort.get_available_providers())})")

    def load(self, path: str, options: RuntimeOptions) -> Session:
        import onnxruntime as ort

        self.check_options(options)
        requested = [provider_name(p) for p in options.providers] or [CPU]
        backend = Backend(runtime=self.name, module="onnxruntime", version=ort.__version__,
                          requested=requested, threads=options.threads)
        available = set(ort.get_available_providers())
        chain = []
        for provider in requested:
            if provider in available:
                chain.append(provider)
            else:
                backend.fallbacks.append(Fallback(provider, "not in this onnxruntime build (available: "
                                                            f"{', '.join(sorted(available))})"))
        if CPU not in chain:
            chain.append(CPU)  # ORT runs nodes no other provider takes on the CPU anyway
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # errors only: warnings go to the child's captured stderr
        if options.threads:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = 1
        while True:
            try:
                session = ort.InferenceSession(path, sess_options=session_options, providers=chain)
                break
            except Exception as exc:  # noqa: BLE001 - sort model errors from provider errors below
                message = _first_line(exc)
                if len(chain) > 1 and not _is_model_error(message):
                    backend.fallbacks.append(Fallback(chain.pop(0), message))
                    continue
                raise load_error(message, "ONNX Runtime") from None
        used = session.get_providers()
        for provider in chain:
            if provider not in used:
                backend.fallbacks.append(Fallback(provider, "the session did not register it (see --debug)"))
        backend.used = list(used)
        return OrtSession(session, backend, path, session_options, chain)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_model_error(message: str) -> bool:
    return any(marker in message for marker in ("INVALID_PROTOBUF", "INVALID_GRAPH", "NOT_IMPLEMENTED",
                                                 "Load model", "FAIL : ", "NO_SUCHFILE"))


