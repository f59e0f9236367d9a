"""How sparse a model's weights are: the fraction of its compute kernels' values that are exactly zero.

What counts as a weight: a constant tensor that feeds a compute op as its kernel, i.e. the weight input of a
convolution (Conv, ConvTranspose; TFLite CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, CONV_3D), a matrix product
(MatMul, Gemm, their integer and QLinear forms; TFLite FULLY_CONNECTED, BATCH_MATMUL) or a recurrent cell's input
and recurrence matrices (ONNX LSTM, GRU, RNN). Biases, normalisation parameters, embeddings and every other
constant are not counted: pruning leaves them alone and they are a small share of any model's size.

A weight stored through a cast or a dequantization (fp16 + Cast/DEQUANTIZE, int8 + DequantizeLinear) is followed
back to its stored tensor and counted in its stored type. For an integer tensor a zero is the stored value equal
to its zero point (per channel where the quantization is per channel), i.e. a real 0.0.

Where it can be read: ONNX needs the ``onnx`` package (boards carry onnxruntime, which has no API for initializer
values, and parsing the protobuf by hand is not worth it); TFLite needs ``ai_edge_litert``'s generated schema and
``flatbuffers`` (present with ai-edge-litert, absent with tflite-runtime). Where they are missing,
``weight_sparsity`` returns None and ``unavailable_reason`` says why. Cost: numpy over views of the stored bytes,
no Python loop per value (a 50 MB model in well under a second).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgebench.agent.errors import ModelError, first_line
from edgebench.agent.modelfile import ONNX, TFLITE

log = logging.getLogger(__name__)

# ONNX compute op -> [(weight input index, zero-point input index or None, scale input index or None)].
ONNX_KERNELS: dict[str, list[tuple[int, Optional[int], Optional[int]]]] = {
    "Conv": [(1, None, None)], "ConvTranspose": [(1, None, None)],
    "MatMul": [(0, None, None), (1, None, None)], "Gemm": [(0, None, None), (1, None, None)],
    "ConvInteger": [(1, 3, None)], "MatMulInteger": [(0, 2, None), (1, 3, None)],
    "QLinearConv": [(3, 5, 4)], "QLinearMatMul": [(0, 2, 1), (3, 5, 4)],
    "LSTM": [(1, None, None), (2, None, None)], "GRU": [(1, None, None), (2, None, None)],
    "RNN": [(1, None, None), (2, None, None)],
}
# Nodes a stored weight passes through on its way to the kernel (a cast, a dequantization, a layout change, a
# slice or a concatenation: an exported LSTM reorders its gates so): followed to the kernel, the stored tensor
# counted whole.
_ONNX_PASS_THROUGH = {"Cast", "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Split",
                      "Concat", "DequantizeLinear"}

TFLITE_KERNELS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "CONV_3D_TRANSPOSE",
                  "FULLY_CONNECTED", "BATCH_MATMUL")
# The kernel's weight input: 1 for all of them (TRANSPOSE_CONV: output_shape, weights, input); BATCH_MATMUL's
# left operand may be the constant one too.
_TFLITE_WEIGHT_INPUTS = {"BATCH_MATMUL": (0, 1)}
_TFLITE_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8,
                  "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64}


@dataclass
class WeightRef:
    """One stored weight tensor: its values (a read-only view of the stored bytes, in the stored type), how a real
    0.0 is stored, and a handle the pruner writes back through (an ONNX TensorProto, a TFLite buffer index)."""

    name: str
    op: str
    values: np.ndarray
    zero_point: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    axis: int = 0
    handle: Any = None
    dense_size: Optional[int] = None  # a TFLite DENSIFY source: the dense tensor's size (values are the stored ones)
    shape: tuple = ()  # the kernel's (dense) shape as the model declares it
    notes: list[str] = field(default_factory=list)

    def per_channel(self, array: Optional[np.ndarray]) -> Any:
        """A zero point or scale shaped to broadcast against ``values`` (scalar when per tensor)."""
        if array is None or array.size == 0:
            return None
        if array.size == 1 or self.values.ndim == 0:
            return array.reshape(()).item() if array.size == 1 else None
        shape = [1] * self.values.ndim
        shape[self.axis] = array.size
        return array.reshape(shape)

    def zero_mask(self) -> np.ndarray:
        zero = self.per_channel(self.zero_point)
        return self.values == (0 if zero is None else zero)

    def zeros(self) -> int:
        stored = int(np.count_nonzero(self.zero_mask()))
        # A DENSIFY source stores only some values: the rest of the dense tensor is zero.
        return stored + (self.dense_size - self.values.size if self.dense_size is not None else 0)

    def count(self) -> int:
        return self.dense_size if self.dense_size is not None else int(self.values.size)


def unavailable_reason(fmt: str) -> Optional[str]:
    """Why this machine cannot read a ``fmt`` model's weights, or None when it can."""
    try:
        if fmt == ONNX:
            import onnx  # noqa: F401
        elif fmt == TFLITE:
            import flatbuffers  # noqa: F401
            from ai_edge_litert import schema_py_generated  # noqa: F401
        else:
            return f"weight sparsity is not read for {fmt} models"
    except ImportError:
        if fmt == ONNX:
            return "reading ONNX weights needs the onnx package (pip install 'edgebench[variants]')"
        return "reading TFLite weights needs ai-edge-litert's schema and flatbuffers (pip install ai-edge-litert)"
    return None


def weight_sparsity(path: str | Path, fmt: str) -> Optional[dict]:
    """The zero fraction of the model's weights (see the module docstring for what counts), as plain data:
    ``{"format", "method", "weights", "zeros", "sparsity", "tensors", "by_dtype": {dtype: {weights, zeros,
    sparsity, tensors}}}``; ``sparsity`` is None when the model has no weight tensor. None when this machine
    cannot read the format (``unavailable_reason`` says why). A file that cannot be parsed is a ModelError."""
    reason = unavailable_reason(fmt)
    if reason:
        log.info("weight sparsity not measured: %s", reason)
        return None
    refs = read_weights(path, fmt)
    return summarize(refs, fmt)


def read_weights(path: str | Path, fmt: str) -> list[WeightRef]:
    """The model's weight tensors (ModelError when the file cannot be parsed)."""
    path = Path(path)
    if fmt == ONNX:
        return onnx_weights(load_onnx(path))
    if fmt == TFLITE:
        data = read_bytes(path)
        return tflite_weights(data, tflite_model(data, path))
    raise ModelError(f"weights of {fmt} models cannot be read")


def summarize(refs: list[WeightRef], fmt: str) -> dict:
    by_dtype: dict[str, dict] = {}
    for ref in refs:
        entry = by_dtype.setdefault(str(ref.values.dtype), {"weights": 0, "zeros": 0, "tensors": 0})
        entry["weights"] += ref.count()
        entry["zeros"] += ref.zeros()
        entry["tensors"] += 1
    for entry in by_dtype.values():
        entry["sparsity"] = _ratio(entry["zeros"], entry["weights"])
    weights = sum(e["weights"] for e in by_dtype.values())
    zeros = sum(e["zeros"] for e in by_dtype.values())
    method = ("exact zeros (stored value == zero point for integer tensors) in the constant weight inputs of "
              "conv/matmul/gemm/fully-connected/recurrent ops; biases, norms and embeddings not counted")
    return {"format": fmt, "method": method, "weights": weights, "zeros": zeros,
            "sparsity": _ratio(zeros, weights), "tensors": len(refs), "by_dtype": by_dtype}


def _ratio(part: int, whole: int) -> Optional[float]:
    return part / whole if whole else None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None


# ---- ONNX -----------------------------------------------------------------------------------------------------

def load_onnx(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))  # external data (a model over 2 GB) is loaded from beside the file
    except Exception as exc:  # protobuf's DecodeError, a missing external data file, ...
        raise ModelError(f"{path} is not a readable ONNX model: {first_line(exc)}") from None


def _onnx_graphs(graph: Any) -> list:
    """The graph and every subgraph (If branches, Loop and Scan bodies), depth first."""
    from onnx import AttributeProto

    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                found.extend(_onnx_graphs(attr.g))
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found.extend(_onnx_graphs(sub))
    return found


def _onnx_constants(graphs: list) -> dict:
    """Every constant tensor by name: initializers and Constant nodes' ``value``. Names are unique across a
    model's graphs (SSA), so one map serves the subgraphs' references to the outer scope."""
    constants = {}
    for graph in graphs:
        for tensor in graph.initializer:
            constants[tensor.name] = tensor
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    constants[node.output[0]] = value
    return constants


def _onnx_array(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)  # raw_data: a frombuffer view, no per-value loop


def onnx_weights(model: Any) -> list[WeightRef]:
    """The weight tensors of an ``onnx.ModelProto`` (each stored tensor once, however many ops use it)."""
    graphs = _onnx_graphs(model.graph)
    constants = _onnx_constants(graphs)
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for graph in graphs:
        for node in graph.node:
            for position, name in enumerate(node.input):
                consumers.setdefault(name, []).append((node, position))
    refs = []
    for name, tensor in constants.items():
        ref = _onnx_weight(name, tensor, consumers, constants)
        if ref is not None:
            refs.append(ref)
    return refs


def _onnx_weight(name: str, tensor: Any, consumers: dict, constants: dict) -> Optional[WeightRef]:
    """The constant as a weight, if it reaches a kernel's weight input directly or through pass-through nodes
    (followed forward: an exported LSTM reaches its op through Slice, Concat and Unsqueeze)."""
    frontier, quant = [name], None
    for _ in range(8):  # a short chain; a longer one is not a stored weight
        following = []
        for current in frontier:
            for node, position in consumers.get(current, ()):
                slots = {w: (zp, sc) for w, zp, sc in ONNX_KERNELS.get(node.op_type, ())}
                if position in slots:
                    zp, sc = slots[position]
                    zero, scale, axis = quant or (_onnx_input(node, zp, constants), _onnx_input(node, sc, constants), 0)
                    return _onnx_ref(name, tensor, node.op_type, zero, scale, axis)
                if node.op_type == "DequantizeLinear" and position == 0:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                    quant = (_onnx_input(node, 2, constants), _onnx_input(node, 1, constants), axis)
                if node.op_type in _ONNX_PASS_THROUGH and (position == 0 or node.op_type == "Concat"):
                    following.extend(node.output)
        if not following:
            return None
        frontier = following
    return None


def _onnx_input(node: Any, index: Optional[int], constants: dict) -> Optional[np.ndarray]:
    if index is None or index >= len(node.input) or node.input[index] not in constants:
        return None
    return _onnx_array(constants[node.input[index]])


def _onnx_ref(name: str, tensor: Any, op: str, zero: Optional[np.ndarray], scale: Optional[np.ndarray],
              axis: int) -> Optional[WeightRef]:
    values = _onnx_array(tensor)
    if values.dtype.kind not in "fiu" or values.size == 0:
        return None
    if values.dtype.kind == "f":
        zero = scale = None  # a float tensor's zero is 0.0 whatever dequantizes it later
    return WeightRef(name=tensor.name or name, op=op, values=values, zero_point=zero, scale=scale,
                     axis=axis if axis >= 0 else axis + values.ndim, handle=tensor)


# ---- TFLite ---------------------------------------------------------------------------------------------------

def tflite_model(data: bytes, path: Path) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        model.SubgraphsLength()
        return model
    except Exception as exc:  # a truncated flatbuffer raises struct or index errors
        raise ModelError(f"{path} is not a readable TFLite model: {first_line(exc)}") from None


def _tflite_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _tflite_buffer_bytes(model: Any, data: bytes, index: int) -> Optional[np.ndarray]:
    """A buffer's bytes as a uint8 view: inside the flatbuffer, or (models over 2 GB) at an offset into the file."""
    buffer = model.Buffers(index)
    if buffer is None:
        return None
    if buffer.Offset() > 1:
        return np.frombuffer(data, np.uint8, count=buffer.Size(), offset=buffer.Offset())
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy()  # a view over ``data``, no copy


def tflite_weights(data: bytes, model: Any) -> list[WeightRef]:
    """The weight tensors of a TFLite flatbuffer (``data``, its parsed ``model``), each stored buffer once."""
    from ai_edge_litert import schema_py_generated as schema

    ops, types = _tflite_names(schema.BuiltinOperator), _tflite_names(schema.TensorType)
    codes = [ops.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "?")
             for c in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))]
    refs: dict[int, WeightRef] = {}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        producers = {}
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            for out in op.OutputsAsNumpy() if op.OutputsLength() else ():
                producers[int(out)] = op
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code = codes[op.OpcodeIndex()]
            if code not in TFLITE_KERNELS or not op.InputsLength():
                continue
            inputs = op.InputsAsNumpy()
            for position in _TFLITE_WEIGHT_INPUTS.get(code, (1,)):
                if position < len(inputs) and inputs[position] >= 0:
                    ref = _tflite_trace(model, data, subgraph, int(inputs[position]), code, codes, types, producers)
                    if ref is not None and ref.handle not in refs:
                        refs[ref.handle] = ref
    return list(refs.values())


def _tflite_trace(model: Any, data: bytes, subgraph: Any, index: int, code: str, codes: list, types: dict,
                  producers: dict) -> Optional[WeightRef]:
    """Follow a kernel's weight input back through DEQUANTIZE (fp16 or int8 storage) or DENSIFY to its buffer."""
    dense_size = None
    for _ in range(4):
        tensor = subgraph.Tensors(index)
        raw = _tflite_buffer_bytes(model, data, tensor.Buffer())
        if raw is not None:
            return _tflite_ref(tensor, raw, tensor.Buffer(), code, types, dense_size)
        parent = producers.get(index)
        if parent is None or codes[parent.OpcodeIndex()] not in ("DEQUANTIZE", "DENSIFY"):
            return None
        if codes[parent.OpcodeIndex()] == "DENSIFY":
            dense_size = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else None
        index = int(parent.InputsAsNumpy()[0])
    return None


def _tflite_ref(tensor: Any, raw: np.ndarray, buffer: int, code: str, types: dict,
                dense_size: Optional[int]) -> Optional[WeightRef]:
    dtype = _TFLITE_DTYPES.get(types.get(tensor.Type(), "?"))
    if dtype is None or len(raw) % np.dtype(dtype).itemsize:
        return None  # packed int4, strings, ...: not read
    values = raw.view(dtype)
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    if dense_size is None and shape and int(np.prod(shape)) == values.size:
        values = values.reshape(shape)
    quant = tensor.Quantization()
    zero_point = scale = None
    axis = 0
    if quant is not None and values.dtype.kind in "iu":
        zero_point = quant.ZeroPointAsNumpy() if quant.ZeroPointLength() else None
        scale = quant.ScaleAsNumpy() if quant.ScaleLength() else None
        axis = quant.QuantizedDimension()
    if dense_size is not None and zero_point is not None and zero_point.size > 1:
        zero_point = None  # stored values of a sparse tensor are not laid out per channel; zero points are 0 there
    name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else f"buffer {buffer}"
    return WeightRef(name=name, op=code, values=values, zero_point=zero_point, scale=scale, axis=axis,
                     handle=buffer, dense_size=dense_size, shape=shape)


# ---- XNNPACK sparse inference: would it even be tried? -----------------------------------------------------------

XNNPACK_MIN_ZEROS = 2 / 3  # of the 1x1 CONV_2D weights (tensorflow/lite/delegates/xnnpack/README.md)


def cpu_keeps_dense() -> Optional[str]:
    """Why XNNPACK on this CPU never runs sparse kernels, or None. On x86 its sparse microkernels are SSE-only and
    it turns sparse inference off on any CPU with AVX (XNNPACK src/xnnpack/hardware-config.h,
    xnn_is_chw_compatible_config); on ARM it is allowed."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx" in flags or not flags:  # unknown flags: every x86-64 made since 2011 has AVX
        return "this x86 CPU has AVX, and XNNPACK keeps dense kernels there (its sparse kernels are SSE-only)"
    return None


def xnnpack_sparse_outlook(refs: list[WeightRef]) -> dict:
    """Whether XNNPACK would consider sparse inference for a TFLite model's weights (``tflite_weights``) on this
    CPU: ``{"densify_kernels", "conv1x1_zero_fraction", "possible", "why"}``. "possible" is necessary, not
    sufficient: XNNPACK also checks the graph's pattern (docs/pruning.md), and says nothing back that Python sees."""
    pointwise = [r for r in refs if r.op == "CONV_2D" and len(r.shape) == 4 and tuple(r.shape[1:3]) == (1, 1)
                 and r.values.dtype.kind == "f"]
    stored_sparse = sum(1 for r in refs if r.dense_size is not None)
    total = sum(r.count() for r in pointwise)
    fraction = sum(r.zeros() for r in pointwise) / total if total else None
    why = None
    if not pointwise:
        why = "no float 1x1 CONV_2D kernels (XNNPACK's sparse path is for float 1x1 convolutions)"
    elif not stored_sparse:
        why = "weights stored dense: XNNPACK only considers sparse inference for weights behind DENSIFY ops"
    elif fraction < XNNPACK_MIN_ZEROS:
        why = f"1x1 kernels {fraction:.0%} zero; XNNPACK needs at least 2/3"
    else:
        why = cpu_keeps_dense()
    return {"densify_kernels": stored_sparse, "conv1x1_zero_fraction": fraction, "possible": why is None,
            "why": why or "the weights qualify; whether sparse kernels run depends on the graph's pattern"}
