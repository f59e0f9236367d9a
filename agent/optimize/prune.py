"""Magnitude pruning: a copy of a model whose weight tensors have their smallest values set to zero.

Per tensor and unstructured: in each prunable tensor (the kernels of convolutions, matrix products, fully-connected
and recurrent ops, exactly the tensors ``engine.weights`` counts) the ``fraction`` of values smallest in magnitude
becomes 0. Magnitude is taken in the real domain: ``|q - zero_point| * scale`` for an integer tensor, whose pruned
values are set to the zero point (a real 0.0); ``|w|`` for fp16 and float tensors. Biases, normalisation
parameters, embeddings and every other constant are left alone, and so are TFLite tensors already stored sparse
(a DENSIFY op's source). No fine-tuning follows: the drift of the pruned model against the original is the price,
and `edgebench compare` measures it.

Pruning changes no shape and no op, so dense kernels run exactly as much arithmetic as before: expect the same
speed and a smaller file once compressed (zeros compress well). docs/pruning.md has the measurements, and what a
runtime needs to turn zeros into speed (XNNPACK's sparse inference).

ONNX models are rewritten with the ``onnx`` package; TFLite models with the flatbuffer object API of
``ai_edge_litert.schema_py_generated``. Data appended after a TFLite flatbuffer (the zip of metadata associated
files, e.g. labels) is carried over to the pruned file; the result says so. With ``sparse_storage`` a TFLite
model's pruned float 1x1 CONV_2D kernels are stored CSR behind DENSIFY ops: a smaller file, and the only form in
which XNNPACK considers its sparse kernels.
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgebench.agent.engine import weights
from edgebench.agent.errors import ModelError, UsageError, first_line
from edgebench.agent.modelfile import ONNX, TFLITE, identify

log = logging.getLogger(__name__)

COMPRESSION = "zlib level 6"


def check_fraction(fraction: Any) -> float:
    """The pruning fraction as a float in (0, 1), or a UsageError."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise UsageError(f"--prune {fraction!r}: not a number (the fraction of weights to zero, e.g. 0.5)") from None
    if not 0.0 < value < 1.0:  # NaN fails this too
        raise UsageError(f"--prune {fraction}: the fraction of weights to zero must be between 0 and 1 (exclusive)")
    return value


def unavailable_reason(fmt: str) -> Optional[str]:
    """Why this machine cannot prune a ``fmt`` model, or None."""
    if fmt not in (ONNX, TFLITE):
        return f"pruning {fmt} models is not supported"
    return weights.unavailable_reason(fmt)


def compressed_size(data: bytes) -> int:
    """The size zlib level 6 (gzip's default) makes of ``data``: what a download or an OTA update would carry."""
    return len(zlib.compress(data, 6))


def prune(source: str | Path, target: str | Path, fraction: float, fmt: Optional[str] = None,
          sparse_storage: bool = False) -> dict:
    """Write a magnitude-pruned copy of ``source`` to ``target`` and return what was done, as plain data:
    ``{"fraction", "format", "pruned_tensors", "zeroed" (values set to zero now), "skipped": [{"name", "why"}],
    "sparsity_before", "sparsity_after" (weights.weight_sparsity of each file, the pruned one read back from disk),
    "size_bytes": {"original", "pruned"}, "compressed_bytes": {"original", "pruned"}, "compression",
    "trailing_bytes": {"found", "preserved"} (TFLite; None for ONNX), "sparse_storage": {"tensors", "bytes_saved"}
    (TFLite with ``sparse_storage``; else None), "notes": [...]}``.

    ``sparse_storage`` (TFLite): store each pruned float 1x1 CONV_2D kernel sparse (CSR sparsity parameters)
    behind a DENSIFY op, the form XNNPACK needs to even try its sparse kernels (docs/pruning.md). ONNX has no
    such form: a UsageError."""
    fraction = check_fraction(fraction)
    model = identify(source)
    fmt = fmt or model.format
    if fmt != model.format:
        raise UsageError(f"{source} is a {model.format} model, not {fmt}")
    source, target = Path(model.path), Path(target)
    if target.resolve() == source:
        raise UsageError(f"the pruned model would overwrite its source {source}: name another target")
    reason = unavailable_reason(fmt)
    if reason:
        raise ModelError(f"cannot prune {source.name}: {reason}")
    original = weights.read_bytes(source)
    if sparse_storage and fmt != TFLITE:
        raise UsageError("sparse weight storage (DENSIFY) exists only in TFLite models")
    if fmt == ONNX:
        result = _prune_onnx(source, original, fraction)
    else:
        result = _prune_tflite(source, original, fraction, sparse_storage)
    data = result.pop("data")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write the pruned model {target}: {exc.strerror}") from None
    result.update(fraction=fraction, format=fmt, compression=COMPRESSION,
                  sparsity_before=weights.summarize(weights.read_weights(source, fmt), fmt),
                  sparsity_after=weights.weight_sparsity(target, fmt),
                  size_bytes={"original": len(original), "pruned": len(data)},
                  compressed_bytes={"original": compressed_size(original), "pruned": compressed_size(data)})
    log.info("pruned %d tensors of %s (%.0f%% each) into %s", result["pruned_tensors"], source.name,
             fraction * 100, target)
    return result


def pruned_values(ref: weights.WeightRef, fraction: float) -> tuple[np.ndarray, int]:
    """``ref``'s stored values with the ``fraction`` smallest in real magnitude set to a stored zero (the zero
    point for an integer tensor), and how many were not zero before. Ceil: each tensor ends at least
    ``fraction`` sparse."""
    values = np.array(ref.values)  # a writable copy in the stored type and shape
    flat = values.reshape(-1)
    count = math.ceil(fraction * flat.size)
    if count == 0:
        return values, 0
    zero = ref.per_channel(ref.zero_point)
    zero = np.zeros((), values.dtype) if zero is None else zero
    magnitude = np.abs(values.astype(np.float64) - zero)
    scale = ref.per_channel(ref.scale)
    if scale is not None:
        magnitude = magnitude * np.abs(scale)  # per-channel scales: compare in the real domain
    chosen = np.argpartition(magnitude.reshape(-1), count - 1)[:count]
    stored_zero = np.broadcast_to(np.asarray(zero, values.dtype), values.shape).reshape(-1)
    before = int(np.count_nonzero(flat[chosen] != stored_zero[chosen]))
    flat[chosen] = stored_zero[chosen]
    return values, before


def _prunable(refs: list[weights.WeightRef]) -> tuple[list[weights.WeightRef], list[dict]]:
    keep, skipped = [], []
    for ref in refs:
        if ref.dense_size is not None:
            skipped.append({"name": ref.name, "why": "already stored sparse (DENSIFY)"})
        elif ref.values.dtype.kind not in "fiu":
            skipped.append({"name": ref.name, "why": f"stored as {ref.values.dtype}"})
        else:
            keep.append(ref)
    return keep, skipped


def _prune_onnx(source: Path, original: bytes, fraction: float) -> dict:
    from onnx import numpy_helper

    model = weights.load_onnx(source)
    refs, skipped = _prunable(weights.onnx_weights(model))
    zeroed = 0
    for ref in refs:
        values, changed = pruned_values(ref, fraction)
        ref.handle.CopyFrom(numpy_helper.from_array(values, ref.handle.name))  # the initializer or Constant value
        zeroed += changed
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ModelError(f"cannot write the pruned {source.name}: {first_line(exc)}") from None
    notes = ["ONNX: initializers and Constant-node tensors rewritten in place; graph, opset and metadata kept"]
    return {"data": data, "pruned_tensors": len(refs), "zeroed": zeroed, "skipped": skipped, "notes": notes,
            "trailing_bytes": None, "sparse_storage": None}


def _aligned_builder(size: int) -> Any:
    """A flatbuffers Builder that aligns byte vectors of 16 bytes or more on 16 bytes. The TFLite schema asks
    ``Buffer.data`` for ``force_align: 16`` (weights read in place by SIMD kernels), which the generated Python
    object API ignores; TFLite's own Python writer has the same gap."""
    import flatbuffers

    class Builder(flatbuffers.Builder):
        def StartVector(self, elemSize: int, numElems: int, alignment: int) -> int:  # noqa: N802,N803
            if elemSize == 1 and numElems >= 16:
                alignment = max(alignment, 16)
            return super().StartVector(elemSize, numElems, alignment)

    return Builder(size)


def trailing_zip(data: bytes) -> int:
    """Where a zip appended to a TFLite flatbuffer starts (the metadata's associated files: labels, vocabularies),
    or len(data) when there is none. The zip's own offsets are relative to its start, so it can move."""
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return len(data)
    if not infos:
        return len(data)
    start = min(info.header_offset for info in infos)
    return start if 8 <= start < len(data) and data[start:start + 4] == b"PK\x03\x04" else len(data)


def _prune_tflite(source: Path, original: bytes, fraction: float, sparse_storage: bool) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    parsed = weights.tflite_model(original, source)
    if any(parsed.Buffers(i).Offset() > 1 for i in range(parsed.BuffersLength())):
        raise ModelError(f"cannot prune {source.name}: its weights are stored after the flatbuffer (a model over "
                         "2 GB), which the flatbuffer object API cannot rewrite")
    refs, skipped = _prunable(weights.tflite_weights(original, parsed))
    model = schema.ModelT.InitFromObj(parsed)
    zeroed = 0
    for ref in refs:
        values, changed = pruned_values(ref, fraction)
        model.buffers[ref.handle].data = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
        zeroed += changed
    stored = store_sparse(model, {r.handle for r in refs}) if sparse_storage else None
    builder = _aligned_builder(len(original) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    start = trailing_zip(original)
    trailing = original[start:]
    notes = ["TFLite: flatbuffer rebuilt with the schema's object API; subgraphs, signatures and metadata kept"]
    if stored is not None:
        notes.append(f"{stored['tensors']} float 1x1 CONV_2D kernels stored sparse behind DENSIFY ops")
    if trailing:
        notes.append(f"{len(trailing)} bytes appended after the flatbuffer (metadata associated files, a zip) "
                     "carried over unchanged")
    return {"data": bytes(builder.Output()) + trailing, "pruned_tensors": len(refs), "zeroed": zeroed,
            "skipped": skipped, "notes": notes, "sparse_storage": stored,
            "trailing_bytes": {"found": len(trailing), "preserved": bool(trailing)}}


# ---- sparse storage (TFLite DENSIFY) ----------------------------------------------------------------------------

def store_sparse(model: Any, pruned_buffers: set[int]) -> dict:
    """Rewrite each float 1x1 CONV_2D kernel among ``pruned_buffers`` of a ``ModelT`` as a sparse constant (CSR
    on the input-channel axis) feeding a DENSIFY op whose output is the kernel the conv reads. Only this form
    makes XNNPACK consider sparse inference (xnnpack_delegate.cc: DENSIFY of a constant with sparsity parameters
    marks the weights sparse); its other conditions are the model's pattern and the CPU (docs/pruning.md)."""
    from ai_edge_litert import schema_py_generated as schema

    densify = _opcode_index(model, schema.BuiltinOperator.DENSIFY)
    conv = [i for i, c in enumerate(model.operatorCodes)
            if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D]
    float_types = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}
    users: dict[int, int] = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    count, saved = 0, 0
    for graph in model.subgraphs:
        added = []
        for op in graph.operators:
            if op.opcodeIndex not in conv or op.inputs is None or len(op.inputs) < 2:
                continue
            weight = graph.tensors[op.inputs[1]]
            shape = [int(d) for d in weight.shape] if weight.shape is not None else []
            if (weight.buffer not in pruned_buffers or users.get(weight.buffer) != 1 or len(shape) != 4
                    or shape[1:3] != [1, 1] or weight.type not in float_types or weight.sparsity is not None):
                continue
            before = model.buffers[weight.buffer].data.size
            added.append(_densify_op(schema, model, graph, op.inputs[1], float_types[weight.type], densify))
            saved += before - model.buffers[graph.tensors[-1].buffer].data.size - _index_bytes(graph.tensors[-1])
            count += 1
        graph.operators = added + list(graph.operators)  # constants' DENSIFY first: the order stays topological
    return {"tensors": count, "bytes_saved": int(saved)}


def _opcode_index(model: Any, code: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            return i
    entry = schema.OperatorCodeT()
    entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
    model.operatorCodes.append(entry)
    return len(model.operatorCodes) - 1


def _densify_op(schema: Any, model: Any, graph: Any, index: int, dtype: type, opcode: int) -> Any:
    """Move tensor ``index``'s values into a new sparse tensor (same buffer, nonzeros only) and make ``index`` the
    output of a DENSIFY op reading it."""
    weight = graph.tensors[index]
    dense = model.buffers[weight.buffer].data.view(dtype).reshape(weight.shape[0], -1)  # [O, I]: H = W = 1
    sparse = schema.TensorT()
    sparse.shape, sparse.type = np.array(weight.shape, np.int32), weight.type
    sparse.name = (weight.name or b"") + b"/sparse"
    sparse.sparsity = _csr(schema, dense, [int(d) for d in weight.shape])
    sparse.buffer = weight.buffer
    model.buffers[weight.buffer].data = np.ascontiguousarray(dense[dense != 0]).view(np.uint8)  # CSR order
    weight.buffer = 0  # buffer 0 is the empty one: the dense kernel is now computed
    graph.tensors.append(sparse)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, np.array([len(graph.tensors) - 1], np.int32), np.array(
        [index], np.int32)
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.DensifyOptions, schema.DensifyOptionsT()
    return op


def _index_vector(schema: Any, array: np.ndarray) -> tuple[int, Any]:
    """The narrowest index vector that holds ``array``: uint16 halves the indices' cost for most layers."""
    if array.size == 0 or int(array.max()) < 1 << 16:
        vector, kind = schema.Uint16VectorT(), schema.SparseIndexVector.Uint16Vector
        vector.values = array.astype(np.uint16)
    else:
        vector, kind = schema.Int32VectorT(), schema.SparseIndexVector.Int32Vector
        vector.values = array.astype(np.int32)
    return kind, vector


def _csr(schema: Any, dense: np.ndarray, shape: list[int]) -> Any:
    """Sparsity parameters of an [O, 1, 1, I] kernel: O, 1, 1 dense, I compressed (CSR)."""
    def dim(size: int, segments: Optional[np.ndarray] = None, indices: Optional[np.ndarray] = None) -> Any:
        meta = schema.DimensionMetadataT()
        meta.format, meta.denseSize = schema.DimensionType.DENSE, size
        if segments is not None:
            meta.format = schema.DimensionType.SPARSE_CSR
            meta.arraySegmentsType, meta.arraySegments = _index_vector(schema, segments)
            meta.arrayIndicesType, meta.arrayIndices = _index_vector(schema, indices)
        return meta

    rows, cols = np.nonzero(dense)
    segments = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))])
    params = schema.SparsityParametersT()
    params.traversalOrder = np.arange(4, dtype=np.int32)
    params.dimMetadata = [dim(shape[0]), dim(1), dim(1), dim(shape[3], segments, cols)]
    return params


def _index_bytes(tensor: Any) -> int:
    meta = tensor.sparsity.dimMetadata[-1]
    return int(meta.arraySegments.values.nbytes + meta.arrayIndices.values.nbytes)
