#!/usr/bin/env python3
"""Rebuild a fully-int8 TFLite model as a float32 one: every constant dequantized (int8 weights, int32 biases, with
their per-tensor or per-channel scale and zero point), QUANTIZE/DEQUANTIZE ops dropped, unused tensors removed.

No float TFLite image classifier ships in a package this machine can reach (../shared/models.md), so the tests and
the demo get one this way: EfficientNet-Lite0's real pretrained weights, as its int8 release stores them. The float
model's input takes the real values the int8 input encoded, ``real = scale * (pixel - zero_point)`` (for
EfficientNet-Lite0: ``--image-mean 131 --image-std 79.58``); its labels (the zip appended to the int8 file) are kept.

Usage: ``python scripts/dequantize_tflite.py INT8.tflite FLOAT.tflite`` (scripts/fetch_models.py calls it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

INTEGER_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32}


def _dequantized(data: bytes, tensor, dtype) -> bytes:
    values = np.frombuffer(data, dtype=dtype).reshape(tensor.shape).astype(np.float64)
    scale = np.asarray(tensor.quantization.scale, dtype=np.float64)
    zero = np.asarray(tensor.quantization.zeroPoint if tensor.quantization.zeroPoint is not None else
                      [0] * len(scale), dtype=np.float64)
    if len(scale) > 1:  # per channel, along the quantized dimension
        shape = [1] * values.ndim
        shape[tensor.quantization.quantizedDimension] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero) * scale).astype(np.float32).tobytes()


def _drop_identity_ops(schema, model, graph) -> None:
    """QUANTIZE and DEQUANTIZE are float-to-float identities once every tensor is float: their readers read the
    op's input instead."""
    kept = []
    for op in graph.operators:
        if model.operatorCodes[op.opcodeIndex].builtinCode in (schema.BuiltinOperator.QUANTIZE,
                                                                 schema.BuiltinOperator.DEQUANTIZE):
            source, target = op.inputs[0], op.outputs[0]
            for other in graph.operators:
                other.inputs = [source if i == target else i for i in other.inputs]
            graph.outputs = [source if i == target else i for i in graph.outputs]
            continue
        kept.append(op)
    graph.operators = kept


def _drop_unused_tensors(graph) -> None:
    used = sorted({i for op in graph.operators for i in [*op.inputs, *op.outputs] if i >= 0}
                  | set(graph.inputs) | set(graph.outputs))
    index = {old: new for new, old in enumerate(used)}
    graph.tensors = [graph.tensors[i] for i in used]
    for op in graph.operators:
        op.inputs = [index[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [index[i] for i in op.outputs]
    graph.inputs = [index[i] for i in graph.inputs]
    graph.outputs = [index[i] for i in graph.outputs]


def derive(source: Path, target: Path, name: str = "") -> None:
    """scripts/fetch_models.py's entry point: ``target`` is ``source`` dequantized."""
    dequantize(source, target)


def dequantize(source: Path, target: Path) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from edgebench.agent.optimize.prune import trailing_zip

    data = source.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    types = {getattr(schema.TensorType, name): dtype for name, dtype in INTEGER_TYPES.items()}
    for code in model.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            quant = tensor.quantization
            if tensor.type not in types or quant is None or quant.scale is None or not len(quant.scale):
                continue
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data):
                buffer.data = np.frombuffer(_dequantized(bytes(bytearray(buffer.data)), tensor, types[tensor.type]),
                                            dtype=np.uint8)
            tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
        _drop_identity_ops(schema, model, graph)
        _drop_unused_tensors(graph)
    for code in model.operatorCodes:
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # 127: see builtin_code
    # The metadata describes the uint8 input and output; the labels zip after the flatbuffer stays valid.
    model.metadata = [item for item in model.metadata or [] if item.name != b"TFLITE_METADATA"] or None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()) + data[trailing_zip(data):])


if __name__ == "__main__":
    dequantize(Path(sys.argv[1]), Path(sys.argv[2]))
