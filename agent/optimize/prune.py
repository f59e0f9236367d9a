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
files, e.g. labels) is carried over to the pruned file; the result says so.
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


def prune(source: str | Path, target: str | Path, fraction: float, fmt: Optional[str] = None) -> dict:
    """Write a magnitude-pruned copy of ``source`` to ``target`` and return what was done, as plain data:
    ``{"fraction", "format", "pruned_tensors", "zeroed" (values set to zero now), "skipped": [{"name", "why"}],
    "sparsity_before", "sparsity_after" (weights.weight_sparsity of each file, the pruned one read back from disk),
    "size_bytes": {"original", "pruned"}, "compressed_bytes": {"original", "pruned"}, "compression",
    "trailing_bytes": {"found", "preserved"} (TFLite), "notes": [...]}``."""
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
    writer = _prune_onnx if fmt == ONNX else _prune_tflite
    result = writer(source, original, fraction)
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
            "trailing_bytes": None}


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


def _prune_tflite(source: Path, original: bytes, fraction: float) -> dict:
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
    builder = _aligned_builder(len(original) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    start = trailing_zip(original)
    trailing = original[start:]
    notes = ["TFLite: flatbuffer rebuilt with the schema's object API; subgraphs, signatures and metadata kept"]
    if trailing:
        notes.append(f"{len(trailing)} bytes appended after the flatbuffer (metadata associated files, a zip) "
                     "carried over unchanged")
    return {"data": bytes(builder.Output()) + trailing, "pruned_tensors": len(refs), "zeroed": zeroed,
            "skipped": skipped, "notes": notes,
            "trailing_bytes": {"found": len(trailing), "preserved": bool(trailing)}}
