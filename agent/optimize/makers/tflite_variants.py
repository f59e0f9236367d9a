"""TFLite variants through Google's ai-edge-quantizer (no TensorFlow): float16 weights, dynamic-range int8, weight-only
int8 and full int8 (static, calibrated). Benchmarked by the litert runtime.

Two things the quantizer needs that many real .tflite files lack are fixed in a working copy first (docs/variants.md):
- operator codes: it reads only ``builtin_code``, which files written before TFLite 2.4 leave at 0 (ADD) while the
  real code sits in ``deprecated_builtin_code``; on such a file every recipe silently changes nothing;
- a SignatureDef: static calibration feeds inputs by signature; a model without one gets ``serving_default`` over
  its subgraph's own inputs and outputs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from edgebench.agent.errors import ModelError, UsageError, first_line
from edgebench.agent.modelfile import TFLITE
from edgebench.agent.optimize.makers.base import Variant, captured_stderr, produce, quiet_library

FORMAT = TFLITE
RUNTIME = "litert"
SUFFIX = ".tflite"
KINDS = ("fp16", "dynamic-int8", "weight-only-int8", "static-int8")
CALIBRATED = ("static-int8",)
SIGNATURE = "serving_default"
log = logging.getLogger(__name__)
# A quantized variant this close to the source's size was left as it was: its weights were already small.
UNCHANGED = 0.95


def check_installed() -> None:
    try:
        import ai_edge_quantizer  # noqa: F401
        import flatbuffers  # noqa: F401
        from ai_edge_litert import schema_py_generated  # noqa: F401
    except ImportError as exc:
        raise UsageError("making TFLite variants needs ai-edge-quantizer: pip install 'edgebench[variants-tflite]' "
                         f"({exc})") from None


def quiet_libraries() -> contextlib.AbstractContextManager:
    """The quantizer prints its size summary, warns through Python, and its interpreter logs through the C++ runtime's
    stderr: all kept out of the output (makers/base.quiet_library)."""
    return quiet_library("ai-edge-quantizer")


# ---------------------------------------------------------------- the working copy the quantizer gets

def prepare(source: Path, target: Path) -> list[str]:
    """Write ``source`` to ``target`` with every operator code in ``builtin_code`` and a SignatureDef; the notes say
    what was changed."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(source.read_bytes(), 0))
    except Exception as exc:  # noqa: BLE001 - not a flatbuffer the schema can read
        raise ModelError(f"{source.name} cannot be read as a TFLite flatbuffer: {first_line(exc)}") from None
    notes = []
    rewritten = 0
    for code in model.operatorCodes or []:
        real = max(code.builtinCode, code.deprecatedBuiltinCode)
        if code.builtinCode != real:
            code.builtinCode, rewritten = real, rewritten + 1
    if rewritten:
        notes.append(f"{rewritten} operator codes copied to builtin_code for the quantizer (an older TFLite file)")
    if not model.signatureDefs:
        model.signatureDefs = [_signature(schema, model.subgraphs[0])]
        notes.append(f"a {SIGNATURE} signature added over the model's inputs and outputs (static calibration "
                     "feeds inputs by signature)")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(builder.Output())
    return notes


def _signature(schema: Any, subgraph: Any) -> Any:
    def tensor_map(index: int) -> Any:
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = subgraph.tensors[index].name, index
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE.encode(), 0
    signature.inputs = [tensor_map(i) for i in subgraph.inputs]
    signature.outputs = [tensor_map(i) for i in subgraph.outputs]
    return signature


def signature_feeds(prepared: Path, input_sets: Sequence[dict]) -> dict[str, list[dict]]:
    """The calibration sets (keyed by tensor name, as the runtime names inputs) keyed by the first signature's input
    names instead, as ``Quantizer.calibrate`` takes them."""
    from ai_edge_litert.interpreter import Interpreter

    with captured_stderr():
        interpreter = Interpreter(model_path=str(prepared))
    key = next(iter(interpreter.get_signature_list()))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    by_tensor = {names[d["index"]]: name for name, d in
                 interpreter.get_signature_runner(key).get_input_details().items()}
    return {key: [{by_tensor.get(tensor, tensor): array for tensor, array in feeds.items()} for feeds in input_sets]}


# ---------------------------------------------------------------- the recipes

def float16_recipe() -> list:
    """Weights stored as float16, computed in float32 (the quantizer's float-casting algorithm, weight-only)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()


RECIPES: dict[str, tuple[str, str]] = {  # kind -> (ai_edge_quantizer.recipe function, what it makes)
    "dynamic-int8": ("dynamic_wi8_afp32", "int8 weights, activations quantized at run time (dynamic range)"),
    "weight-only-int8": ("weight_only_wi8_afp32", "int8 weights dequantized to float32 before compute"),
    "static-int8": ("static_wi8_ai8", "int8 weights and activations, calibrated; int8 inputs and outputs"),
}


def make(kind: str, prepared: Path, target: Path, calibration: dict) -> list[str]:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(prepared))
    if kind == "fp16":
        qt.load_quantization_recipe(float16_recipe())
        notes = ["float16 weights (conv, fully-connected, embedding), float32 compute, inputs and outputs"]
    else:
        function, description = RECIPES[kind]
        qt.load_quantization_recipe(getattr(recipe, function)())
        notes = [description]
    result = qt.quantize(qt.calibrate(calibration)) if kind in CALIBRATED else qt.quantize()
    result.export_model(str(target), overwrite=True)
    return notes


def produce_all(model: Path, kinds: Sequence[str], out_dir: Path, input_sets: Sequence[dict],
                step: Callable[[str], None]) -> list[Variant]:
    """Each variant in ``out_dir``; the working copy in a temporary directory, so ``out_dir`` holds the variants
    only."""
    with tempfile.TemporaryDirectory(prefix="edgebench-variants-") as work:
        step("preparing the model for quantization")
        prepared = Path(work) / f"{model.stem}.prep.tflite"
        notes = prepare(model, prepared)
        calibration = signature_feeds(prepared, input_sets) if set(kinds) & set(CALIBRATED) else {}
        rows = [Variant("float32", model, notes=notes)]
        source_size = model.stat().st_size
        for kind in kinds:
            step(f"making {kind}" + (f" (calibrating on {len(input_sets)} input sets)" if kind in CALIBRATED else ""))
            target = out_dir / f"{model.stem}.{kind}{SUFFIX}"
            row = produce(kind, lambda t=target, k=kind: make(k, prepared, t, calibration), target, quiet_libraries)
            if row.size_bytes and row.size_bytes >= UNCHANGED * source_size:
                row.notes.append(f"{row.size_bytes / source_size:.0%} of the source's size: the quantizer found little "
                                 "to change (weights already float16 or int8?)")
            rows.append(row)
    return rows
