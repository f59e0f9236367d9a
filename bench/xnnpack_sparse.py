"""Does XNNPACK's sparse inference run under the pinned LiteRT, and what does it need? (docs/pruning.md)

Builds a MobileNet-v1-shaped float model in the pattern XNNPACK's README asks for (a 3x3 stride-2 CONV_2D on 3
channels first, 3x3 depthwise and 1x1 convolutions, a spatial MEAN last; 3x3 kernels padded by an explicit PAD, as
TF "SAME" padding is refused by the sparse path), with random weights, in three forms:

  dense      no zero weights
  zeros      the 1x1 kernels 80% zero (magnitude pruned), stored dense: what `prune` writes
  densify    the same zeros, the 1x1 kernels stored sparse (CSR sparsity parameters) behind DENSIFY ops

and times each in ai_edge_litert's Interpreter (its default XNNPACK delegate), one thread, interleaved rounds.
``zeros`` and ``densify`` compute the same function: their outputs are compared too.

    .venv/bin/python bench/xnnpack_sparse.py [--runs 30] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgebench.agent.optimize import prune

log = logging.getLogger("xnnpack_sparse")

# (kind, stride, output channels) after the first 3x3 stride-2 conv to 32 channels: MobileNet v1.
LAYERS = [("dw", 1, 32), ("pw", 1, 64), ("dw", 2, 64), ("pw", 1, 128), ("dw", 1, 128), ("pw", 1, 128),
          ("dw", 2, 128), ("pw", 1, 256), ("dw", 1, 256), ("pw", 1, 256), ("dw", 2, 256), ("pw", 1, 512),
          *[layer for _ in range(5) for layer in (("dw", 1, 512), ("pw", 1, 512))],
          ("dw", 2, 512), ("pw", 1, 1024), ("dw", 1, 1024), ("pw", 1, 1024)]


class Builder:
    """A TFLite ModelT built by hand with the schema's object API."""

    def __init__(self) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.s = schema
        self.model = schema.ModelT()
        self.model.version, self.model.description = 3, "edgebench xnnpack sparse probe"
        self.model.buffers = [schema.BufferT()]
        self.model.operatorCodes, self.codes = [], {}
        self.graph = schema.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self.model.subgraphs = [self.graph]

    def tensor(self, shape: list, data: np.ndarray | None = None, dtype: int = 0, name: str = "") -> int:
        t = self.s.TensorT()
        t.shape, t.type, t.name, t.buffer = np.array(shape, np.int32), dtype, name or f"t{len(self.graph.tensors)}", 0
        if data is not None:
            buffer = self.s.BufferT()
            buffer.data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            self.model.buffers.append(buffer)
            t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def op(self, code: int, inputs: list, outputs: list, options_type: int = 0, options=None) -> None:
        if code not in self.codes:
            c = self.s.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            self.model.operatorCodes.append(c)
            self.codes[code] = len(self.model.operatorCodes) - 1
        o = self.s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes[code], np.array(inputs, np.int32), np.array(outputs, np.int32)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.graph.operators.append(o)

    def conv(self, x: int, shape: list, weights: np.ndarray, stride: int, depthwise: bool) -> tuple[int, list]:
        s = self.s
        kernel = weights.shape[1]
        if kernel > 1:  # explicit PAD + VALID: XNNPACK fuses it into the conv as padding 1 on each side, which its
            x, shape = self.pad(x, shape, kernel // 2)  # sparse (NCHW) path needs; TF SAME padding is refused there
        options = s.DepthwiseConv2DOptionsT() if depthwise else s.Conv2DOptionsT()
        options.padding, options.strideW, options.strideH = s.Padding.VALID, stride, stride
        options.fusedActivationFunction = s.ActivationFunctionType.RELU6
        if depthwise:
            options.depthMultiplier = 1
        out_c = weights.shape[3] if depthwise else weights.shape[0]
        out_shape = [1, (shape[1] - kernel) // stride + 1, (shape[2] - kernel) // stride + 1, out_c]
        w = self.tensor(list(weights.shape), weights)
        b = self.tensor([out_c], np.zeros(out_c, np.float32))
        y = self.tensor(out_shape)
        code = s.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else s.BuiltinOperator.CONV_2D
        kind = s.BuiltinOptions.DepthwiseConv2DOptions if depthwise else s.BuiltinOptions.Conv2DOptions
        self.op(code, [x, w, b], [y], kind, options)
        return y, out_shape

    def pad(self, x: int, shape: list, pad: int) -> tuple[int, list]:
        paddings = self.tensor([4, 2], np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], np.int32),
                               dtype=self.s.TensorType.INT32)
        out_shape = [shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3]]
        y = self.tensor(out_shape)
        self.op(self.s.BuiltinOperator.PAD, [x, paddings], [y], self.s.BuiltinOptions.PadOptions, self.s.PadOptionsT())
        return y, out_shape

    def finish(self, inputs: list, outputs: list) -> bytes:
        self.graph.inputs, self.graph.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        builder = prune._aligned_builder(1 << 20)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def mobilenet(sparsity: float, seed: int = 0) -> bytes:
    """The probe model with its 1x1 kernels ``sparsity`` zero (magnitude), stored dense."""
    rng = np.random.default_rng(seed)
    b = Builder()
    shape = [1, 224, 224, 3]
    x0 = b.tensor(shape, name="input")
    x, shape = b.conv(x0, shape, rng.normal(0, 0.3, (32, 3, 3, 3)).astype(np.float32), 2, False)
    for kind, stride, out_c in LAYERS:
        in_c = shape[3]
        if kind == "dw":
            x, shape = b.conv(x, shape, rng.normal(0, 0.3, (1, 3, 3, in_c)).astype(np.float32), stride, True)
            continue
        w = rng.normal(0, (2.0 / in_c) ** 0.5, (out_c, 1, 1, in_c)).astype(np.float32)
        if sparsity:
            w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
        x, shape = b.conv(x, shape, w, stride, False)
    axes = b.tensor([2], np.array([1, 2], np.int32), dtype=b.s.TensorType.INT32)
    y = b.tensor([1, 1, 1, shape[3]], name="output")
    options = b.s.ReducerOptionsT()
    options.keepDims = True
    b.op(b.s.BuiltinOperator.MEAN, [x, axes], [y], b.s.BuiltinOptions.ReducerOptions, options)
    return b.finish([x0], [y])


def densify(data: bytes) -> bytes:
    """The same model with each float 1x1 CONV_2D kernel stored sparse behind a DENSIFY op (prune.store_sparse,
    what `prune(..., sparse_storage=True)` writes)."""
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    stored = prune.store_sparse(model, set(range(len(model.buffers))))
    log.info("densify: %d kernels stored sparse, %d bytes saved", stored["tensors"], stored["bytes_saved"])
    builder = prune._aligned_builder(len(data))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def latency_ms(path: Path, x: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, x)
    for _ in range(3):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=None, help="keep the three models here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="xnnpack-sparse-"))
    out.mkdir(parents=True, exist_ok=True)
    zeros = mobilenet(args.sparsity)
    models = {"dense": mobilenet(0.0), "zeros": zeros, "densify": densify(zeros)}
    paths = {}
    for name, data in models.items():
        paths[name] = out / f"probe_{name}.tflite"
        paths[name].write_bytes(data)
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    medians: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    for _ in range(args.rounds):  # interleaved: drift hits every form alike
        for name, path in paths.items():
            ms, outputs[name] = latency_ms(path, x, args.runs)
            medians[name].append(ms)
    agree = float(np.max(np.abs(outputs["zeros"] - outputs["densify"])))
    for name in models:
        values = sorted(medians[name])
        log.info("%-8s %8d bytes  p50 per round %s ms  (median %.2f)", name, paths[name].stat().st_size,
                 " ".join(f"{v:.2f}" for v in values), statistics.median(values))
    log.info("max |zeros - densify| output difference: %.3g", agree)
    ratio = statistics.median(medians["zeros"]) / statistics.median(medians["densify"])
    log.info("densify is %.2fx the speed of the same zeros stored dense", ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
