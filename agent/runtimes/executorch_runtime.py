"""ExecuTorch runtime plugin: runs a .pte program's ``forward`` method through executorch's Python bindings.

What runs where is fixed when the program is exported (its delegates, e.g. XNNPACK, were lowered into it), so this
runtime takes no delegate or provider chain. Placement is read from the .pte itself (``pte_graph``).

The bindings' C++ extension (``_portable_lib``) is imported directly, after torch (it links libtorch): the public
``executorch.runtime`` wraps the same extension but its module imports ``executorch.exir``, the exporter, which costs
seconds and which a board carrying only the runtime may not have. Inputs are torch tensors, made once in ``bind``.
"""

from __future__ import annotations

import importlib.util
import re
from functools import partial
from typing import Any, Callable, Optional

import numpy as np

from edgebench.agent.errors import InputError, ModelError, RuntimeUnavailable, UsageError, first_line, load_error
from edgebench.agent.runtimes import pte_graph
from edgebench.agent.runtimes.base import Backend, Node, Placement, Runtime, RuntimeOptions, Session
from edgebench.agent.runtimes.names import FORMATS
from edgebench.agent.tensors import TensorSpec

METHOD = "forward"
KERNELS = "cpu"  # the runtime's own kernels (portable/optimized ops), as placement spells them
SOURCE = "executorch-program"
_INSTALL_HINT = "ExecuTorch is not installed: pip install 'edgebench[torch]' (or executorch and torch)"
# executorch's Error codes (runtime/core/error.h) the bindings print as bare numbers ("error: 0x:23"), worded
_ERRORS = {0x12: "invalid argument", 0x14: "an operator this executorch build lacks (OperatorMissing)",
           0x20: "not found", 0x21: "out of memory", 0x22: "the file could not be read",
           0x23: "the program is damaged or not a valid ExecuTorch program (InvalidProgram)",
           0x24: "its external data is invalid", 0x25: "out of resources",
           0x30: "a delegate refused the program (DelegateInvalidCompatibility)", 0x31: "a delegate ran out of memory"}
# executorch's ScalarType codes (runtime/core/portable_type/scalar_type.h) -> numpy dtype names
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool", 27: "uint16", 28: "uint32", 29: "uint64"}


def _bindings() -> Any:
    import torch  # noqa: F401 - loads libtorch, which the extension links against
    from executorch.extension.pybindings import _portable_lib

    return _portable_lib


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


def describe(exc: BaseException) -> str:
    """The bindings' one-line message, with the name of the error code it ends with."""
    message = first_line(exc)
    found = re.search(r"0x:?([0-9a-fA-F]+)\s*$", message)
    meaning = _ERRORS.get(int(found.group(1), 16)) if found else None
    return f"{meaning} ({message})" if meaning else message


def backend_label(delegate_id: str) -> str:
    """A delegate's name as a chain spells it: ``XnnpackBackend`` -> ``xnnpack``."""
    name = delegate_id[: -len("Backend")] if delegate_id.endswith("Backend") else delegate_id
    return name.lower() or "delegate"


def _spec(name: str, info: Any) -> TensorSpec:
    dtype = _SCALAR_TYPES.get(int(info.dtype()))
    if dtype is None:
        raise ModelError(f"tensor {name!r} has ExecuTorch scalar type {info.dtype()}, which edgebench cannot "
                         "feed or read")
    return TensorSpec(name=name, dtype=dtype, shape=tuple(int(d) for d in info.sizes()))


def _tensor_specs(meta: Any, count: int, tensor_meta: Callable[[int], Any], names: list[str], kind: str) -> list:
    specs = []
    for index in range(count):
        name = names[index] if index < len(names) else f"{kind}_{index}"
        try:
            info = tensor_meta(index)
        except Exception:  # noqa: BLE001 - the bindings raise for a non-tensor value (an int, a list)
            raise ModelError(f"{meta.name()}'s {kind} {index} is not a tensor; edgebench feeds tensors only") from None
        specs.append(_spec(name, info))
    return specs


def program_placement(plan: pte_graph.Plan) -> Placement:
    """Every node the program runs, in execution order: each XNNPACK operator inside a delegate call (the graph the
    delegate was handed; XNNPACK may fuse some of them further when it builds its runtime), one node for a call into
    a backend whose payload is opaque, and each kernel call on the runtime's own kernels. ``partition`` numbers the
    delegate calls, then each run of consecutive kernel calls."""
    delegate_calls = [call for call in plan.calls if call.delegate is not None]
    nodes, cpu_partition, previous_was_kernel = [], len(delegate_calls) - 1, False
    partition = 0
    for call in plan.calls:
        if call.delegate is None:
            if not previous_was_kernel:
                cpu_partition += 1
            previous_was_kernel = True
            nodes.append(Node(f"{call.op}#{call.index}", call.op, KERNELS, cpu_partition))
            continue
        previous_was_kernel = False
        label = backend_label(plan.delegates[call.delegate]) if call.delegate < len(plan.delegates) else "delegate"
        if call.inner:
            nodes += [Node(f"{label}{partition}/{op}#{k}", op, label, partition) for k, op in enumerate(call.inner)]
        else:
            nodes.append(Node(f"{label}{partition}#{call.index}", plan.delegates[call.delegate], label, partition))
        partition += 1
    first = backend_label(plan.delegates[0]) if plan.delegates else "xnnpack"
    return Placement(source=SOURCE, first_choice=first, nodes=nodes)


class ExecuTorchSession(Session):
    def __init__(self, program: Any, method: Any, backend: Backend, plan: Optional[pte_graph.Plan], inputs: list,
                 outputs: list):
        self._program = program  # the method runs on the program's memory: it lives as long as the session
        self._method, self._plan = method, plan
        self.backend, self.inputs, self.outputs = backend, inputs, outputs

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        import torch

        tensors = []
        for spec in self.inputs:
            array = feeds[spec.name]
            if array.dtype.name != spec.dtype:
                raise InputError(f"input {spec.name!r} is {spec.dtype}, not {array.dtype.name}")
            tensors.append(torch.from_numpy(np.ascontiguousarray(array)))
        try:  # the program checks shapes when inputs are set: a shape it cannot take fails here, not in the loop
            self._method.set_inputs(tensors)
        except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError with an error code
            shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in self.inputs)
            raise InputError(f"the program does not accept these inputs (it takes {shapes}): "
                             f"{describe(exc)}") from None
        # Outputs not cloned: they alias the method's planned memory, as the C++ Module API returns them;
        # fetch_outputs copies them out before the next run.
        return partial(self._method.call, tensors, False)

    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        return {spec.name: value.detach().numpy().copy() for spec, value in zip(self.outputs, result)}

    def placement(self, feeds: dict[str, np.ndarray]) -> Optional[Placement]:
        return program_placement(self._plan) if self._plan is not None else None

    def op_profiler(self) -> str:
        return ("executorch's Python runtime in this build records no ETDump (its event tracer is compiled out: "
                "EXECUTORCH_ENABLE_EVENT_TRACER)")


class ExecuTorchRuntime(Runtime):
    name = "executorch"
    formats = FORMATS["executorch"]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("executorch") is None:
            return _INSTALL_HINT
        if importlib.util.find_spec("executorch.extension.pybindings._portable_lib") is None:
            return f"this executorch install has no Python runtime bindings (_portable_lib): {_INSTALL_HINT}"
        return None

    @classmethod
    def preload(cls) -> None:
        if cls.unavailable_reason() is None:
            _bindings()  # imports only: the threadpool starts in the forked worker, never in the zygote

    @classmethod
    def check_options(cls, options: RuntimeOptions) -> None:
        given = options.chain_flags()
        if given:
            raise UsageError(f"executorch takes no delegate or provider chain ({given[0]}): a .pte program's "
                             "delegates were chosen when it was exported")

    def load(self, path: str, options: RuntimeOptions) -> Session:
        self.check_options(options)
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeUnavailable(reason)
        lib = _bindings()
        backend = Backend(runtime=self.name, module="executorch", version=_version())
        if options.threads:  # before the method loads: XNNPACK takes the threadpool when it builds its runtime
            lib._unsafe_reset_threadpool(options.threads)
            backend.threads = int(lib._threadpool_get_thread_count())
        try:  # verified: a damaged program is refused here, before anything reads it
            program = lib._load_program(path, program_verification=lib.Verification.InternalConsistency)
        except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError for any program they refuse
            raise load_error(describe(exc), "ExecuTorch") from None
        plan = _read_plan(path, backend)
        methods = [program.get_method_name(i) for i in range(program.num_methods())]
        if METHOD not in methods:
            raise ModelError(f"the ExecuTorch program has no {METHOD!r} method (its methods: "
                             f"{', '.join(methods) or 'none'})")
        _check_backends(lib, plan)
        try:
            method = program.load_method(METHOD)
        except Exception as exc:  # noqa: BLE001
            raise load_error(describe(exc), "ExecuTorch") from None
        meta = method.method_meta()
        names = plan.input_names if plan is not None else []
        names = names if len(names) == meta.num_inputs() else []  # a keyword taking a list: its tensors unnamed
        if plan is not None and not names:
            backend.notes.append("the program keeps no input names (exported with positional arguments): its "
                                 "inputs are input_0, input_1, ...")
        inputs = _tensor_specs(meta, meta.num_inputs(), meta.input_tensor_meta, names, "input")
        outputs = _tensor_specs(meta, meta.num_outputs(), meta.output_tensor_meta, [], "output")
        return ExecuTorchSession(program, method, backend, plan, inputs, outputs)


def _read_plan(path: str, backend: Backend) -> Optional[pte_graph.Plan]:
    """The ``forward`` plan as the file says, and what it runs on (``backend.used``); None, with a note, when the
    reader cannot parse a program the runtime accepted (then placement is unknown, and the run goes on)."""
    try:
        with open(path, "rb") as handle:
            plans = pte_graph.read_plans(handle)
    except Exception as exc:  # noqa: BLE001 - the runtime accepted the program: a reader's failure costs only this
        backend.notes.append(f"could not read the program's delegates and kernels from the file: {first_line(exc)}")
        return None
    plan = next((p for p in plans if p.name == METHOD), None)
    if plan is not None:
        used = list(dict.fromkeys(plan.delegates[c.delegate] for c in plan.calls
                                  if c.delegate is not None and c.delegate < len(plan.delegates)))
        backend.used = used + ([KERNELS] if any(c.delegate is None for c in plan.calls) else [])
    return plan


def _check_backends(lib: Any, plan: Optional[pte_graph.Plan]) -> None:
    """A program delegating to a backend this build lacks fails in load_method with a bare error code: say which."""
    for delegate in dict.fromkeys(plan.delegates if plan else []):
        if not lib._is_available(delegate):
            have = ", ".join(lib._get_registered_backend_names()) or "none"
            raise RuntimeUnavailable(f"the program delegates to {delegate}, which this executorch build lacks "
                                     f"(it has: {have})")
