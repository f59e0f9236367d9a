"""LiteRT / TensorFlow Lite runtime plugin (``ai_edge_litert``, else the legacy ``tflite_runtime``).

Delegates form an ordered fallback chain: the first that loads and accepts the model is used, and each one
skipped is reported with its reason. ``xnnpack`` is the interpreter's built-in default delegate, ``cpu`` the
built-in kernels without it, ``ref`` the reference kernels; other names map to the external delegate
libraries below, and any ``.so`` path is loaded as an external delegate.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Optional

import numpy as np

from edgebench.agent.errors import (
    ChildFailed,
    EdgebenchError,
    InputError,
    ModelError,
    RuntimeUnavailable,
    UsageError,
    load_error,
)
from edgebench.agent.runtimes.base import Backend, Fallback, Node, Placement, Runtime, RuntimeOptions, Session
from edgebench.agent.runtimes.names import FORMATS
from edgebench.agent.tensors import TensorSpec

BUILTIN_RESOLVERS = {
    "xnnpack": "BUILTIN",
    "cpu": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "ref": "BUILTIN_REF",
}
# Library names of the common external delegates, looked up through the dynamic loader's search path.
EXTERNAL_DELEGATES = {
    "gpu": "libtensorflowlite_gpu_delegate.so",
    "edgetpu": "libedgetpu.so.1",
    "nnapi": "libnnapi_delegate.so",
    "hexagon": "libhexagon_delegate.so",
    "armnn": "libarmnnDelegate.so",
    "qnn": "libQnnTFLiteDelegate.so",
}
DEFAULT_CHAIN = ("xnnpack",)
MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
_INSTALL_HINT = "install LiteRT: pip install 'edgebench[litert]' (or ai-edge-litert)"


def _installed_module() -> Optional[str]:
    for name in MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            return name
    return None


def _numpy_conflict(module_name: str) -> Optional[str]:
    # tflite-runtime 2.14 (the last release) was compiled against NumPy 1.x: it imports under NumPy 2, then
    # Interpreter() fails. Say so before the user sees that crash.
    if module_name.startswith("tflite_runtime") and int(np.__version__.split(".")[0]) >= 2:
        return (f"tflite-runtime was built for NumPy 1.x and cannot run with NumPy {np.__version__}: "
                f"{_INSTALL_HINT}, or pip install 'numpy<2'")
    return None


def _package_version(module_name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}[module_name.split(".")[0]]
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _spec(detail: dict, signature: Optional[np.ndarray] = None) -> TensorSpec:
    dims = signature if signature is not None and len(signature) == len(detail["shape"]) else detail["shape"]
    shape = tuple(int(d) if d >= 0 else None for d in dims)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = scale and np.dtype(detail["dtype"]).kind in "iu"
    return TensorSpec(name=detail["name"], dtype=np.dtype(detail["dtype"]).name, shape=shape,
                      scale=float(scale) if quantized else None,
                      zero_point=int(zero_point) if quantized else None,
                      extra={"index": int(detail["index"])})


class LiteRTSession(Session):
    def __init__(self, interpreter: Any, backend: Backend):
        self._interp = interpreter
        self.backend = backend
        self._input_details = interpreter.get_input_details()
        self._output_details = interpreter.get_output_details()
        self.inputs = [_spec(d, d.get("shape_signature")) for d in self._input_details]
        self.outputs = [_spec(d, d.get("shape_signature")) for d in self._output_details]

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        interp = self._interp
        current = {d["index"]: tuple(d["shape"]) for d in interp.get_input_details()}
        resized = False
        for detail in self._input_details:
            array = feeds[detail["name"]]
            if current[detail["index"]] != array.shape:
                interp.resize_tensor_input(detail["index"], list(array.shape), strict=False)
                resized = True
        try:
            if resized:
                interp.allocate_tensors()
            for detail in self._input_details:
                interp.set_tensor(detail["index"], feeds[detail["name"]])
        except ValueError as exc:
            raise InputError(f"the model does not accept these inputs: {exc}") from None
        return interp.invoke  # the bare call: nothing between the engine's clock and the interpreter

    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        return {d["name"]: self._interp.get_tensor(d["index"]) for d in self._output_details}

    def placement(self, feeds: dict[str, np.ndarray]) -> Optional[Placement]:
        try:  # the interpreter's op list: its only view of the graph after the delegate was applied (private API)
            ops = self._interp._get_ops_details()
            names = {t["index"]: t["name"] for t in self._interp.get_tensor_details()}
        except Exception:  # noqa: BLE001 - an interpreter without it: placement unknown, not an error
            return None
        return graph_placement(ops, names, self.backend.used[0], self.backend.requested[0])

    def op_profiler(self) -> str:
        return ("LiteRT's Python interpreter exposes no per-op profiler: run with --runtime native, whose TFLite C "
                "library has one")


def delegate_label(used: str) -> str:
    """The chain's name of a delegate (``gpu``), or a delegate library's file name without its directory."""
    return used.rsplit("/", 1)[-1] if _library_path(used) else used.lower()


def graph_placement(ops: list[dict], names: dict[int, str], used: str, first_choice: str) -> Placement:
    """Which nodes the delegate took, from the interpreter's op list: the model's own nodes come first, then one
    ``DELEGATE`` node per partition, whose inputs and outputs are the partition's boundary. A model node belongs to
    a partition when it lies on a path from the boundary's inputs to its outputs (walked back from the outputs);
    every other model node runs on the interpreter's own kernels (``cpu``)."""
    model_nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in model_nodes for t in op["outputs"]}
    by_index = {op["index"]: op for op in model_nodes}
    taken: dict[int, int] = {}
    for partition, kernel in enumerate(op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in kernel["inputs"]}
        pending = [int(t) for t in kernel["outputs"]]
        while pending:
            node = producer.get(pending.pop())
            if node is None or node in taken:
                continue
            taken[node] = partition
            pending += [int(t) for t in by_index[node]["inputs"] if int(t) >= 0 and int(t) not in boundary]
    label = delegate_label(used)
    on_delegate = label not in ("cpu", "ref")
    kernels = label if not on_delegate else "cpu"
    result, cpu_partition, previous = [], len(set(taken.values())) - 1, None
    for op in model_nodes:
        name = names.get(int(op["outputs"][0]), f"#{op['index']}") if len(op["outputs"]) else f"#{op['index']}"
        if op["index"] in taken:
            result.append(Node(name, op["op_name"], label, taken[op["index"]]))
            previous = None
            continue
        if previous is None or previous + 1 != op["index"]:
            cpu_partition += 1
        previous = op["index"]
        result.append(Node(name, op["op_name"], kernels, cpu_partition))
    return Placement(source="litert-graph", first_choice=delegate_label(first_choice), nodes=result)


class LiteRTRuntime(Runtime):
    name = "litert"
    formats = FORMATS["litert"]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        module_name = _installed_module()
        if module_name is None:
            return f"no TFLite runtime is installed: {_INSTALL_HINT}"
        return _numpy_conflict(module_name)

    @classmethod
    def preload(cls) -> None:
        module_name = _installed_module()
        if module_name and cls.unavailable_reason() is None:
            importlib.import_module(module_name)

    @classmethod
    def check_options(cls, options: RuntimeOptions) -> None:
        names = ", ".join([*BUILTIN_RESOLVERS, *EXTERNAL_DELEGATES])
        if options.providers:
            raise UsageError(f"litert takes delegates (--delegate {names} or a delegate library's .so path), not "
                             f"execution providers (--providers {','.join(options.providers)})")
        unknown = [name for name in options.delegates if not _known_delegate(name)]
        if unknown:
            raise UsageError(f"unknown TFLite delegate {unknown[0]!r}: give one of {names}, or the path of a "
                             "delegate library (.so)")
        if options.delegate_options and not any(_external(name) for name in options.delegates):
            raise UsageError("--delegate-option is for external delegates (gpu, edgetpu, nnapi, hexagon, armnn, qnn "
                             "or a .so path); the chain "
                             f"{','.join(options.delegates) or ','.join(DEFAULT_CHAIN)} has none")

    def load(self, path: str, options: RuntimeOptions) -> Session:
        self.check_options(options)
        module_name = _installed_module()
        reason = self.unavailable_reason()
        if reason or module_name is None:
            raise RuntimeUnavailable(reason or _INSTALL_HINT)
        module = importlib.import_module(module_name)
        chain = list(options.delegates) or list(DEFAULT_CHAIN)
        backend = Backend(runtime=self.name, module=module_name.split(".")[0],
                          version=_package_version(module_name), requested=chain, threads=options.threads)
        last_error = None
        for candidate in chain:
            try:
                interpreter = self._create(module, path, candidate, options)
            except (ModelError, ChildFailed):  # the model itself, or memory for it: no other delegate helps
                raise
            except Exception as exc:  # noqa: BLE001 - any delegate failure means: try the next one
                last_error = f"{type(exc).__name__}: {exc}".strip()
                backend.fallbacks.append(Fallback(candidate, last_error))
                continue
            backend.used = [candidate]
            return LiteRTSession(interpreter, backend)
        raise RuntimeUnavailable(f"no delegate in the chain {','.join(chain)} could run the model; "
                                 f"last error: {last_error}")

    @staticmethod
    def _create(module: Any, path: str, candidate: str, options: RuntimeOptions) -> Any:
        kwargs: dict[str, Any] = {"model_path": path, "num_threads": options.threads}
        key = candidate.lower()
        if key in BUILTIN_RESOLVERS:
            resolver = getattr(module, "OpResolverType", None)
            if resolver is None:  # very old tflite_runtime: only the default resolver exists
                if key != "xnnpack":
                    raise RuntimeUnavailable(f"this TFLite build cannot select the {key!r} kernels")
            else:
                kwargs["experimental_op_resolver_type"] = getattr(resolver, BUILTIN_RESOLVERS[key])
        else:
            library = EXTERNAL_DELEGATES.get(key, candidate)
            kwargs["experimental_delegates"] = [module.load_delegate(library, dict(options.delegate_options))]
        try:
            interpreter = module.Interpreter(**kwargs)
        except ValueError as exc:
            message = str(exc)
            if "delegate" in message.lower() and "experimental_delegates" in kwargs:
                raise  # the delegate refused the model: fall back
            raise _model_error(message) from None
        try:
            interpreter.allocate_tensors()
        except RuntimeError as exc:
            if "experimental_delegates" in kwargs:
                raise
            raise _model_error(str(exc)) from None
        return interpreter


def _external(name: str) -> bool:
    return name.lower() in EXTERNAL_DELEGATES or _library_path(name)


def _library_path(name: str) -> bool:
    return "/" in name or name.endswith(".so") or ".so." in name


def _known_delegate(name: str) -> bool:
    return name.lower() in BUILTIN_RESOLVERS or _external(name)


def _model_error(message: str) -> EdgebenchError:
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    if "Didn't find op" in message or "unsupported" in message.lower():
        return ModelError(f"the model uses an operator this TFLite runtime does not support: {first}")
    return load_error(first, "TFLite")
