"""PyTorch variants as ExecuTorch programs: a torch.export program (.pt2) lowered to XNNPACK as float32, and int8
by PT2E quantization (torchao's prepare_pt2e/convert_pt2e with ExecuTorch's XNNPACKQuantizer), each exported again
and lowered the same way. Benchmarked by the executorch runtime.

The .pt2 itself is not runnable: the float row every variant is compared against is its float32 ExecuTorch program
(``MODEL.float32.pte``), made first. Its tensors are read from the ExportedProgram (``describe``), not from a
runtime, so that calibration sets can be built before anything is lowered.

A model can also be given as ``package.module:factory`` (a callable returning an ``nn.Module``) with example inputs
(``--shape NAME=DIMS``: float32, ``--input NAME=file.npy``: that array; NAME a positional parameter of ``forward``):
``export_factory`` exports it with ``torch.export.export`` into the output folder, and the .pt2 goes on from there.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgebench.agent.errors import InputError, ModelError, UsageError, first_line
from edgebench.agent.modelfile import PT2
from edgebench.agent.optimize.makers.base import Variant, produce, quiet_library
from edgebench.agent.tensors import TensorSpec

FORMAT = PT2
RUNTIME = "executorch"
SUFFIX = ".pte"
KINDS = ("dynamic-int8", "static-int8")
CALIBRATED = ("static-int8",)
FLOAT = "float32"
NOTES = {
    "dynamic-int8": "int8 per-channel weights of linear layers, activations quantized at run time (XNNPACK dynamic)",
    "static-int8": "int8 per-channel weights and calibrated int8 activations (PT2E, XNNPACK)",
}
log = logging.getLogger(__name__)
# ``package.module:factory``: dotted Python names, a colon, a name (a file of that name wins: it is a model file)
FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def quiet_libraries() -> contextlib.AbstractContextManager:
    """torch.export, PT2E and the lowering warn through Python and log through C++: kept out of the output
    (makers/base.quiet_library)."""
    return quiet_library("torch")


def check_installed() -> None:
    try:
        with quiet_libraries():  # torchao, imported by the lowering, logs warnings about its optional kernels
            import executorch.exir  # noqa: F401 - the lowering
            import torch  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"making PyTorch variants needs torch and executorch: pip install 'edgebench[torch-export]' "
                         f"({exc})") from None


# ---------------------------------------------------------------- the source

def load(path: Path):
    """The ExportedProgram of a .pt2; a file torch.export cannot read is one ModelError."""
    check_installed()
    import torch

    try:
        with quiet_libraries():
            return torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign archive: many exception kinds
        raise ModelError(f"{path} cannot be read as a torch.export program: {first_line(exc)}") from None


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _spec(name: str, value) -> TensorSpec:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ModelError(f"the program's {name!r} is {type(value).__name__}, not a tensor: export it with tensor "
                         "inputs and outputs only")
    shape = tuple(int(d) if isinstance(d, int) else str(d) for d in value.shape)
    return TensorSpec(name, _dtype_name(value.dtype), shape)


def tensor_specs(exported) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The user inputs and outputs of an ExportedProgram as TensorSpecs: names from the graph signature (the
    inputs: ``forward``'s parameter names), shapes and dtypes from the fake tensors torch.export recorded (a symbolic
    dimension by its name)."""
    from torch.export.graph_signature import OutputKind

    nodes = {node.name: node for node in exported.graph.nodes}
    inputs = [_spec(name, nodes[name].meta.get("val")) for name in exported.graph_signature.user_inputs]
    output_node = next(node for node in exported.graph.nodes if node.op == "output")
    values = list(output_node.args[0])
    outputs = []
    for spec, value in zip(exported.graph_signature.output_specs, values):
        if spec.kind == OutputKind.USER_OUTPUT:
            name = getattr(spec.arg, "name", None) or f"output_{len(outputs)}"
            outputs.append(_spec(name, value.meta.get("val") if hasattr(value, "meta") else value))
    return inputs, outputs


def describe(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """variants' entry point: the .pt2's inputs and outputs, read without lowering or running anything."""
    return tensor_specs(load(path))


def is_factory(text: str) -> bool:
    """``package.module:factory`` and not a file of that name."""
    return bool(FACTORY.match(text)) and not Path(text).exists()


def _resolve_factory(spec: str) -> Callable:
    module_name, _, attribute = spec.partition(":")
    added = "" not in sys.path and str(Path.cwd()) not in sys.path
    if added:  # as `python -m` does: a factory of the user's own project, run from its folder
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raises while importing
        raise UsageError(f"{spec}: module {module_name!r} cannot be imported ({first_line(exc)})") from None
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
    factory = getattr(module, attribute, None)
    if factory is None:
        raise UsageError(f"{spec}: module {module_name!r} has no {attribute!r}")
    if not callable(factory):
        raise UsageError(f"{spec}: {attribute!r} is a {type(factory).__name__}, not a callable that returns the "
                         "model")
    return factory


def forward_inputs(module) -> tuple[list[str], list[str]]:
    """``forward``'s positional parameters: the required ones and the optional ones (with a default)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return [], []
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return ([p.name for p in positional if p.default is p.empty], [p.name for p in positional
                                                                     if p.default is not p.empty])


def example_inputs(spec: str, names: Sequence[str], optional: Sequence[str], shapes: dict, sources: dict,
                   seed: int) -> list[np.ndarray]:
    """The arrays a module is exported with: ``--input NAME=file.npy`` (the array as stored) or ``--shape NAME=DIMS``
    (float32, random in [0, 1)), for each required positional parameter of ``forward``, and the optional ones
    given."""
    known = [*names, *optional]
    unknown = sorted((set(shapes) | set(sources)) - set(known))
    if unknown:
        raise UsageError(f"{spec}: forward() has no positional parameter {', '.join(map(repr, unknown))} (it takes "
                         f"{', '.join(known) or 'none'})")
    missing = [name for name in names if name not in shapes and name not in sources]
    if missing:
        raise UsageError(f"{spec}: give each input of forward() as --shape NAME=DIMS (float32) or --input "
                         f"NAME=file.npy; missing: {', '.join(missing)}")
    given = [name for name in known if name in shapes or name in sources]
    if given != known[:len(given)]:
        raise UsageError(f"{spec}: inputs are passed by position: give forward()'s parameters in order, "
                         f"{', '.join(known[:len(given)])}")
    rng = np.random.default_rng(seed)
    arrays = []
    for name in given:
        source = sources.get(name)
        if source is None:
            arrays.append(rng.random(shapes[name], dtype=np.float64).astype(np.float32))
            continue
        if source.kind != "file" or Path(source.value).suffix.lower() != ".npy":
            raise UsageError(f"{spec}: --input {name}: a module's example input is a .npy file (or --shape "
                             f"{name}=DIMS for float32 data)")
        try:
            array = np.load(source.value, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--input {name}={source.value}: not a readable .npy file ({first_line(exc)})") from None
        if name in shapes and tuple(array.shape) != tuple(shapes[name]):
            raise UsageError(f"--input {name}: {source.value} has shape {'x'.join(map(str, array.shape))}, --shape "
                             f"says {'x'.join(map(str, shapes[name]))}")
        arrays.append(array)
    return arrays


def export_factory(spec: str, shapes: dict, sources: dict, seed: int, target: Path) -> list[str]:
    """Build the module ``spec`` names, export it with the example inputs to ``target`` (.pt2); its notes. Every
    failure is one line: a UsageError for a wrong name, a ModelError for a module torch.export cannot take."""
    check_installed()
    import torch

    factory = _resolve_factory(spec)
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise ModelError(f"{spec}: the factory raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"{spec}: the factory returned a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    names, optional = forward_inputs(module)
    arrays = example_inputs(spec, names, optional, shapes, sources, seed)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in arrays)
    try:
        with quiet_libraries(), torch.no_grad():
            exported = torch.export.export(module, (), kwargs=dict(zip(names + optional, tensors)))
        torch.export.save(exported, str(target))
    except Exception as exc:  # noqa: BLE001 - torch.export's many ways to refuse a module
        raise ModelError(f"{spec}: torch.export.export failed: {first_line(exc)}") from None
    given = ", ".join(f"{name} {'x'.join(map(str, a.shape))} {a.dtype}" for name, a in zip(names + optional, arrays))
    return [f"exported from {spec} with example inputs {given} (static shapes)"]


# ---------------------------------------------------------------- lowering and quantizing

def takes_keywords(exported) -> bool:
    """Whether the program takes its inputs by keyword: only then does its ExecuTorch program keep their names
    (ExecuTorch records the inputs' pytree, and a positional argument has no name in it)."""
    kwargs_spec = exported.call_spec.in_spec.child(1)
    return bool(kwargs_spec.context)


def export_by_keyword(module, names: Sequence[str], tensors: Sequence, keyword: bool):
    """torch.export of ``module`` called with its inputs by keyword. A module that takes them only by position (a
    program exported positionally, unlifted) is wrapped in one whose forward takes them by name."""
    import torch

    if not keyword:
        module = _ByKeyword(module, names)
    return torch.export.export(module, (), kwargs=dict(zip(names, tensors)))


def _ByKeyword(module, names: Sequence[str]):
    import torch

    class ByKeyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.names = module, list(names)

        def forward(self, **inputs):
            return self.inner(*[inputs[name] for name in self.names])

    return ByKeyword()


def call(module, names: Sequence[str], tensors: Sequence, keyword: bool):
    """Run an unlifted program (or its prepared, observed form) the way it was exported: by keyword or by position."""
    return module(**dict(zip(names, tensors))) if keyword else module(*tensors)


def keyword_program(exported):
    """The program itself when it takes its inputs by keyword, else the same program exported again so that it does
    (the .pte then names its inputs: ``bench --input input_ids=...`` and the variants' input sets find them)."""
    if takes_keywords(exported):
        return exported
    specs, _ = tensor_specs(exported)
    return export_by_keyword(exported.module(), [spec.name for spec in specs], example_args(exported, specs, []),
                             keyword=False)


def lower(exported, target: Path) -> None:
    """Lower a torch.export ExportedProgram to an ExecuTorch program with XNNPACK taking what it can; its inputs
    keep their names."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    partitioner = [XnnpackPartitioner()]
    program = to_edge_transform_and_lower(keyword_program(exported), partitioner=partitioner).to_executorch()
    with open(target, "wb") as handle:
        program.write_to_file(handle)


def derive_fp32(source: Path, target: Path, name: str = "") -> None:
    """scripts/fetch_models.py's entry point: the float32 ExecuTorch program of a .pt2."""
    import torch

    check_installed()
    lower(torch.export.load(str(source)), target)


def derive_dynamic_int8(source: Path, target: Path, name: str = "") -> None:
    """scripts/fetch_models.py's entry point: the dynamic int8 ExecuTorch program of a .pt2, made as variants makes it
    (no calibration: its activations are quantized at run time)."""
    check_installed()
    exported = load(source)
    specs, _ = tensor_specs(exported)
    with quiet_libraries():
        make_int8("dynamic-int8", exported, specs, [], target)


def _tensors(feeds: dict, specs: Sequence[TensorSpec]) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[spec.name]).astype(spec.dtype, copy=False))
                 for spec in specs)


def example_args(exported, specs: Sequence[TensorSpec], input_sets: Sequence[dict]) -> tuple:
    """Inputs to trace the quantized module with: the program's own example inputs, else the first input set, else
    zeros of its shapes."""
    stored = getattr(exported, "example_inputs", None)
    if stored and stored[0] and not stored[1]:
        return tuple(stored[0])
    if stored and stored[1] and all(spec.name in stored[1] for spec in specs):
        return tuple(stored[1][spec.name] for spec in specs)
    if input_sets:
        return _tensors(input_sets[0], specs)
    import torch

    return tuple(torch.zeros([d if isinstance(d, int) and d >= 0 else 1 for d in spec.shape],
                             dtype=getattr(torch, spec.dtype)) for spec in specs)


def quantizer_for(kind: str):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=kind == "dynamic-int8")
    return XNNPACKQuantizer().set_global(config)


def make_int8(kind: str, exported, specs: Sequence[TensorSpec], input_sets: Sequence[dict], target: Path
              ) -> list[str]:
    """PT2E: annotate for XNNPACK, run the calibration sets through the observed module (static), convert, export
    the quantized module again and lower it."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    args = example_args(exported, specs, input_sets)
    names, keyword = [spec.name for spec in specs], takes_keywords(exported)
    prepared = prepare_pt2e(exported.module(), quantizer_for(kind))
    with torch.no_grad():
        for feeds in (input_sets if kind in CALIBRATED else []) or [None]:
            call(prepared, names, args if feeds is None else _tensors(feeds, specs), keyword)
        converted = convert_pt2e(prepared)
        lower(export_by_keyword(converted, names, args, keyword), target)
    return [NOTES[kind]]


def float_target(model: Path, out_dir: Path) -> Path:
    return out_dir / f"{model.stem}.{FLOAT}{SUFFIX}"


def produce_all(model: Path, kinds: Sequence[str], out_dir: Path, input_sets: Sequence[dict],
                step: Callable[[str], None]) -> list[Variant]:
    """The float32 program first (the row every variant is compared against: one that cannot be lowered stops the
    command), then each kind, all in ``out_dir``. Input sets are keyed by the program's input names."""
    exported = load(model)
    specs, _ = tensor_specs(exported)
    step("lowering the float32 program to ExecuTorch (XNNPACK)")
    target = float_target(model, out_dir)
    note = f"{model.name} lowered to ExecuTorch, XNNPACK"
    base = produce(FLOAT, lambda: lower(exported, target) or [note], target, quiet_libraries)
    if base.error:
        raise ModelError(f"{model.name}: the float32 program {base.error.replace('could not be produced: ', '')} "
                         "(ExecuTorch lowering failed)")
    rows = [base]
    for kind in kinds:
        step(f"making {kind}" + (f" (calibrating on {len(input_sets)} input sets)" if kind in CALIBRATED else ""))
        path = out_dir / f"{model.stem}.{kind}{SUFFIX}"
        rows.append(produce(kind, lambda p=path, k=kind: make_int8(k, exported, specs, input_sets, p), path,
                            quiet_libraries))
    return rows

