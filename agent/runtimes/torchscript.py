"""TorchScript / PyTorch Mobile runtime plugin: ``torch.jit.load`` for TorchScript archives (.pt, .jit), the lite
interpreter (``torch.jit.mobile``) for archives made for PyTorch Mobile (.ptl: they hold a ``bytecode.pkl``).

TorchScript records no tensor metadata beyond forward's schema (argument names and types): a Tensor argument's
shape is unknown (``inputs.ANY_RANK``, so ``--shape`` gives it) unless the graph still carries its traced sizes, and
its dtype is float32 unless the graph says otherwise (traced sizes and dtype, or an embedding's indices: int64).
``int``/``float``/``bool`` arguments (Silero VAD's ``forward(x, sr: int)``) are 0-d inputs that take their value from
``--input NAME=NUMBER`` and are passed to forward as Python numbers. Everything runs on torch's CPU kernels.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from edgebench.agent.errors import (
    ChildFailed,
    EdgebenchError,
    InputError,
    ModelError,
    RuntimeUnavailable,
    UsageError,
    first_line,
    load_error,
)
from edgebench.agent.modelfile import archive_records
from edgebench.agent.runtimes.base import Backend, OpProfiler, Runtime, RuntimeOptions, Session
from edgebench.agent.runtimes.names import FORMATS
from edgebench.agent.tensors import ANY_RANK, TensorSpec

FULL = "torch.jit"
LITE = "torch.jit.mobile (lite interpreter)"
_INSTALL = "PyTorch is not installed: pip install 'edgebench[torch]' (or torch)"
# forward's non-tensor argument types -> the dtype of the 0-d array that carries the value
_SCALARS = {"int": "int64", "float": "float64", "bool": "bool"}
_TENSORS = ("Tensor", "Optional[Tensor]")
_SCALAR_TYPES = {"Float": "float32", "Double": "float64", "Half": "float16", "Long": "int64", "Int": "int32",
                 "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}
# (op, argument position) whose tensor holds indices, so an input fed there is int64
_INDEX_ARGUMENTS = {("aten::embedding", 1), ("aten::embedding_bag", 1)}
_RUN_MARK = "## edgebench run ##"  # the profiler's record_function around each profiled inference


@dataclass
class Argument:
    name: str
    type: str  # TorchScript's spelling: Tensor, int, Optional[Tensor], List[Tensor]...


Hint = tuple[Optional[tuple], Optional[str]]  # (shape, dtype) of an argument, where the graph says


def _is_lite(path: str) -> bool:
    """An archive made for PyTorch Mobile: it holds the lite interpreter's ``bytecode.pkl``."""
    return "bytecode.pkl" in archive_records(path)


class _SchemaReader(pickle.Unpickler):
    """Reads bytecode.pkl for its schemas only: it builds no object the pickle names (tensor constants come back as
    None), so nothing in the file runs."""

    def persistent_load(self, pid: Any) -> None:
        return None

    def find_class(self, module: str, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _lite_schema(path: str) -> tuple[list[Argument], list[str]]:
    """forward's arguments and return types from the lite interpreter's bytecode (its module exposes no schema):
    ``(version, (NAME.forward, code, (("arguments", ((("name", N), ("type", T), ...), ...)), ("returns", ...))))``."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/bytecode.pkl"))
            bytecode = _SchemaReader(io.BytesIO(archive.read(name))).load()
        for entry in bytecode[1:]:
            if isinstance(entry, tuple) and len(entry) >= 3 and str(entry[0]).endswith(".forward"):
                schema = dict(entry[2])
                arguments = [Argument(dict(a)["name"], dict(a)["type"]) for a in schema["arguments"]]
                return arguments[1:], [dict(r)["type"] for r in schema["returns"]]
    except Exception as exc:  # noqa: BLE001 - a bytecode layout this reader does not know: say so in one line
        raise ModelError(f"{path}: its bytecode.pkl cannot be read for forward's schema ({first_line(exc)})") from None
    raise ModelError(f"{path}: its bytecode has no forward method with a schema (bytecode version {bytecode[0]})")


def _full_schema(module: Any) -> tuple[list[Argument], list[str]]:
    schema = module.forward.schema
    return [Argument(a.name, str(a.type)) for a in schema.arguments[1:]], [str(r.type) for r in schema.returns]


def _graph_hints(module: Any) -> list[Hint]:
    """Per argument of forward (in order), what the graph says: a Tensor's sizes and dtype when tracing left them in
    the graph (a saved archive keeps none), else int64 when it feeds an embedding's indices."""
    import torch

    hints: list[Hint] = []
    for value in list(module.inlined_graph.inputs())[1:]:
        kind, shape, dtype = value.type(), None, None
        if isinstance(kind, torch.TensorType):
            if kind.dim() is not None:
                shape = tuple(kind.varyingSizes())
            dtype = _SCALAR_TYPES.get(str(kind.scalarType()))
            if dtype is None and any((use.user.kind(), use.offset) in _INDEX_ARGUMENTS for use in value.uses()):
                dtype = "int64"
        hints.append((shape, dtype))
    return hints


def _input_spec(argument: Argument, hint: Hint) -> TensorSpec:
    if argument.type in _SCALARS:
        return TensorSpec(argument.name, _SCALARS[argument.type], (), extra={"argument": argument.type})
    if argument.type not in _TENSORS:
        raise ModelError(f"forward's argument {argument.name!r} is {argument.type}, which edgebench cannot feed (it "
                         f"feeds Tensor, int, float and bool arguments)")
    shape, dtype = hint
    return TensorSpec(argument.name, dtype or "float32", shape if shape is not None else (ANY_RANK,))


def _output_specs(returns: list[str]) -> list[TensorSpec]:
    """Named as fetch_outputs names them; a Dict's or List's entries are known only once it has run."""
    kinds = returns
    if len(returns) == 1 and returns[0].startswith("Tuple["):
        kinds = _split_types(returns[0][len("Tuple["):-1])
    elif len(returns) == 1 and returns[0].startswith(("Dict[", "List[")):
        return []
    return [TensorSpec(f"output_{i}", "unknown", (ANY_RANK,)) for i in range(len(kinds))]


def _split_types(text: str) -> list[str]:
    """``Tensor, Tuple[Tensor, int]`` -> its top-level types."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    return [*parts, text[start:].strip()] if text.strip() else parts


def _flatten(result: Any, name: str, into: dict[str, np.ndarray]) -> None:
    import torch

    if isinstance(result, torch.Tensor):
        tensor = result.detach()
        into[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    elif isinstance(result, (tuple, list)):
        for index, item in enumerate(result):
            _flatten(item, f"{name}_{index}", into)
    elif isinstance(result, dict):
        for key, item in result.items():
            _flatten(item, f"{name}_{key}" if name != "output" else str(key), into)
    elif result is not None:
        into[name] = np.asarray(result)


def _message(exc: BaseException) -> str:
    """The line that says what went wrong: a TorchScript error's first line only says that the interpreter failed,
    and its last names the exception forward raised (``builtins.ValueError: ...``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and "failed in the TorchScript interpreter" in lines[0]:
        return re.sub(r"^builtins\.", "", lines[-1])
    return first_line(exc)


def _forward_error(exc: Exception) -> Exception:
    """What forward raised, as one line: out of memory is the runtime failing (exit 5, like the engine's MemoryError);
    anything else stays a plain exception, so the engine names the phase it failed in (exit 5, as for every runtime
    whose model raises while running: docs/cli.md)."""
    message = _message(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in message or "bad_alloc" in message:
        return ChildFailed(f"the runtime ran out of memory running the model: {message}")
    return RuntimeError(message)


def _as_argument(spec: TensorSpec, array: np.ndarray) -> Any:
    import torch

    if "argument" in spec.extra:
        return array.item()  # forward(x, sr: int) takes a Python number, not a 0-d tensor
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class TorchScriptSession(Session):
    def __init__(self, module: Any, path: str, lite: bool, backend: Backend):
        self._module, self._path, self._lite = module, path, lite
        self.backend = backend
        self._specs: Optional[tuple[list[TensorSpec], list[TensorSpec]]] = None

    def _describe(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        # Read on first use, after load() returned: reading the graph is not part of the model's load time.
        if self._specs is None:
            arguments, returns = _lite_schema(self._path) if self._lite else _full_schema(self._module)
            hints = [] if self._lite else _graph_hints(self._module)
            hints += [(None, None)] * (len(arguments) - len(hints))
            self._specs = ([_input_spec(a, hint) for a, hint in zip(arguments, hints)], _output_specs(returns))
        return self._specs

    @property
    def inputs(self) -> list[TensorSpec]:  # type: ignore[override]
        return self._describe()[0]

    @property
    def outputs(self) -> list[TensorSpec]:  # type: ignore[override]
        return self._describe()[1]

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        missing = [spec.name for spec in self.inputs if spec.name not in feeds]
        if missing:
            raise InputError(f"no data for the model's input {missing[0]!r}")
        arguments = [_as_argument(spec, feeds[spec.name]) for spec in self.inputs]
        forward = self._module.forward

        def run() -> Any:
            # One Python frame around forward: the price of a one-line error instead of TorchScript's traceback.
            try:
                return forward(*arguments)
            except Exception as exc:  # noqa: BLE001 - torch raises its own types; named in one line
                raise _forward_error(exc) from None

        return run

    def fetch_outputs(self, result: Any) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = {}
        _flatten(result if isinstance(result, (tuple, list, dict)) else (result,), "output", outputs)
        return outputs

    def op_profiler(self) -> OpProfiler:
        return TorchOpProfiler(self)


class TorchOpProfiler(OpProfiler):
    """torch.profiler around the same module: each profiled inference inside a record_function mark, whose
    operator events (aten::...) are the nodes, named by their op and its occurrence in the run (TorchScript's
    ops have no names of their own). A submodule's method call (``forward``) is looked through to its ops."""

    source = "torch-profiler"

    def __init__(self, session: TorchScriptSession):
        self._session = session
        self._profile: Any = None
        self._stopped = False

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        import torch

        run = self._session.bind(feeds)
        mark = torch.profiler.record_function
        self._profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._profile.start()

        def profiled() -> Any:
            with mark(_RUN_MARK):
                return run()

        return profiled

    def collect(self, runs: int) -> list[dict]:
        self._stop()
        marks = sorted((e for e in self._profile.events() if e.name == _RUN_MARK), key=lambda e: e.time_range.start)
        marks = marks[-runs:] if runs else []
        nodes: dict[str, dict] = {}
        for index, mark in enumerate(marks):
            seen: dict[str, int] = {}
            for event in _ops(mark):
                name = f"{event.name}#{seen.setdefault(event.name, 0)}"
                seen[event.name] += 1
                node = nodes.setdefault(name, {"name": name, "op": event.name, "backend": "cpu",
                                               "duration_ns": [0] * len(marks)})
                node["duration_ns"][index] += round(event.time_range.elapsed_us() * 1000)
        return list(nodes.values())

    def _stop(self) -> None:
        if self._profile is not None and not self._stopped:
            self._stopped = True
            self._profile.stop()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()


def _ops(event: Any) -> list:
    """The operator events directly under ``event``, in order; a method call (no ``::``) is looked through."""
    found = []
    for child in sorted(event.cpu_children, key=lambda e: e.time_range.start):
        found.extend([child] if "::" in child.name else _ops(child))
    return found


def _configure(torch: Any, threads: Optional[int]) -> None:
    """Process-wide settings, fine in the worker (a process of its own): no autograd, so the bound callable is the
    bare forward; the intra-op threads asked for, one inter-op thread (settable only before torch first uses it)."""
    torch.set_grad_enabled(False)
    if threads:
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)


class TorchScriptRuntime(Runtime):
    name = "torchscript"
    formats = FORMATS["torchscript"]

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        return _INSTALL if importlib.util.find_spec("torch") is None else None

    @classmethod
    def preload(cls) -> None:
        if cls.unavailable_reason() is None:
            import torch  # noqa: F401 - imported for the workers the zygote forks
            import torch.jit.mobile  # noqa: F401

    @classmethod
    def check_options(cls, options: RuntimeOptions) -> None:
        given = options.chain_flags()
        if given:
            raise UsageError(f"torchscript runs on torch's own CPU kernels and takes no delegates or execution "
                             f"providers ({', '.join(given)}); --threads sets its threads")

    def load(self, path: str, options: RuntimeOptions) -> Session:
        self.check_options(options)
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeUnavailable(reason)
        import torch
        import torch.jit.mobile

        _configure(torch, options.threads)
        lite = _is_lite(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the lite interpreter's deprecation notice, on every load
                if lite:
                    module = torch.jit.mobile._load_for_lite_interpreter(path, map_location="cpu")
                else:
                    module = torch.jit.load(path, map_location="cpu").eval()
        except (MemoryError, EdgebenchError):
            raise
        except Exception as exc:  # noqa: BLE001 - torch's RuntimeError and friends: one line, exit 3 (or 5: memory)
            raise load_error(_message(exc), "TorchScript") from None
        backend = Backend(runtime=self.name, module=LITE if lite else FULL, version=torch.__version__,
                          requested=["cpu"], used=["cpu"], threads=torch.get_num_threads())
        with contextlib.suppress(Exception):  # a private helper: the note is worth having, not worth failing for
            if lite:
                backend.notes.append(f"bytecode version {torch._C._get_model_bytecode_version(path)}")
        return TorchScriptSession(module, path, lite, backend)
