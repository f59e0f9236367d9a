"""Weight sparsity of real model files (agent/engine/weights.py), checked against independent counts: numpy over
onnx.numpy_helper arrays for ONNX, the TFLite interpreter's own view of each kernel tensor for TFLite."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from edgebench.agent.engine import weights
from edgebench.agent.errors import ModelError

KERNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def onnx_direct_kernels(path) -> list[np.ndarray]:
    """Independently: the constants that are a Conv/ConvTranspose's input 1 or a MatMul/Gemm's constant input,
    with no node in between (true of the PP-OCR detector and classifier)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    found = {}
    for node in model.graph.node:
        slots = (1,) if node.op_type in ("Conv", "ConvTranspose") else (0, 1) if node.op_type in (
            "MatMul", "Gemm") else ()
        for slot in slots:
            if slot < len(node.input) and node.input[slot] in consts:
                found[node.input[slot]] = consts[node.input[slot]]
    return list(found.values())


@pytest.mark.parametrize("name", ["ppocr_det.onnx", "ppocr_cls.onnx"])
def test_onnx_counts_match_numpy(models, name):
    arrays = onnx_direct_kernels(models[name])
    result = weights.weight_sparsity(models[name], "onnx")
    assert result["weights"] == sum(a.size for a in arrays)
    assert result["zeros"] == sum(int(np.count_nonzero(a == 0)) for a in arrays)
    assert result["tensors"] == len(arrays)
    assert result["sparsity"] == pytest.approx(result["zeros"] / result["weights"])
    assert set(result["by_dtype"]) == {"float32"}


def test_onnx_weights_in_subgraphs_and_lstm_are_counted(models):
    """silero-vad keeps its weights inside If branches, and its LSTM reaches them through Slice/Concat."""
    refs = weights.read_weights(models["silero_vad.onnx"], "onnx")
    names = {r.name for r in refs}
    assert any(n.endswith("decoder.rnn.weight_ih") for n in names)
    assert any(n.endswith("decoder.rnn.weight_hh") for n in names)
    assert {r.op for r in refs} == {"Conv", "LSTM"}
    assert not any("bias" in n for n in names)  # biases are not weights here


def tflite_kernels(path) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Independently, through the interpreter: each kernel op's input 1, its zero points and their axis."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in KERNEL_OPS and len(op["inputs"]) > 1:
            index = int(op["inputs"][1])
            quant = details[index]["quantization_parameters"]
            found[index] = (interpreter.get_tensor(index), quant["zero_points"], quant["quantized_dimension"])
    return list(found.values())


@pytest.mark.parametrize("name", ["deeplabv3.tflite", "efficientnet_lite0_int8.tflite", "sine_float.tflite"])
def test_tflite_counts_match_the_interpreter(models, name):
    kernels = tflite_kernels(models[name])
    result = weights.weight_sparsity(models[name], "tflite")
    assert result["tensors"] == len(kernels)
    assert result["weights"] == sum(a.size for a, _, _ in kernels)
    zeros = 0
    for array, zero, axis in kernels:
        if zero.size > 1:  # per channel: conv kernels along axis 0, depthwise ones along axis 3
            zero = np.expand_dims(zero, [d for d in range(array.ndim) if d != axis])
        zeros += int(np.count_nonzero(array == (zero if zero.size else 0)))
    assert result["zeros"] == zeros


def test_tflite_counts_match_the_buffer_sizes(models):
    """Each counted tensor's values are its whole buffer: weights x itemsize == the bytes of those buffers."""
    from ai_edge_litert import schema_py_generated as schema

    data = models["deeplabv3.tflite"].read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    refs = weights.tflite_weights(data, model)
    assert sum(r.values.nbytes for r in refs) == sum(model.Buffers(r.handle).DataLength() for r in refs)


def test_int8_zero_is_the_zero_point(tmp_path):
    """A DequantizeLinear weight with zero point 3: the stored 3s are the real zeros, not the stored 0s."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    q = np.array([[3, 0, 3, 5], [1, 3, 3, 3]], dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"]), helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(q, "Wq"), numpy_helper.from_array(np.array(0.5, np.float32), "s"),
         numpy_helper.from_array(np.array(3, np.int8), "zp")])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = weights.weight_sparsity(path, "onnx")
    assert result["weights"] == 8 and result["zeros"] == 5
    assert result["by_dtype"]["int8"]["sparsity"] == pytest.approx(5 / 8)


def test_fifty_megabytes_in_well_under_a_second(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3200, 4000)).astype(np.float32)  # 51 MB
    w[:, :1000] = 0
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3200])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4000])],
                              [numpy_helper.from_array(w, "W")])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph), str(path))
    start = time.perf_counter()
    result = weights.weight_sparsity(path, "onnx")
    assert time.perf_counter() - start < 1.0
    assert result["sparsity"] == pytest.approx(0.25)


def test_without_onnx_there_is_no_figure_and_a_reason(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError, as on a board
    assert weights.weight_sparsity(models["ppocr_cls.onnx"], "onnx") is None
    assert "onnx package" in weights.unavailable_reason("onnx")


def test_without_the_litert_schema_there_is_no_figure(models, monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.schema_py_generated"):  # a tflite-runtime board has neither
        monkeypatch.setitem(sys.modules, module, None)
    assert weights.weight_sparsity(models["sine_float.tflite"], "tflite") is None
    assert "ai-edge-litert" in weights.unavailable_reason("tflite")


@pytest.mark.parametrize("fmt,content", [("onnx", b"\x08\x07garbage that is no protobuf\xff\xff"),
                                         ("tflite", b"\x10\x00\x00\x00TFL3" + b"\x00" * 8)])
def test_a_broken_model_is_one_model_error(tmp_path, fmt, content):
    path = tmp_path / f"broken.{fmt}"
    path.write_bytes(content)
    with pytest.raises(ModelError) as caught:
        weights.weight_sparsity(path, fmt)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
