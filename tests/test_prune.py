"""Magnitude pruning of real models (agent/optimize/prune.py): the pruned files load and run in their runtimes,
each pruned tensor is at least the fraction sparse when read back, nothing else changes, and bad input is one
line."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from edgebench.agent.engine import weights
from edgebench.agent.errors import ModelError, UsageError
from edgebench.agent.optimize import prune


def per_tensor_sparsity(path, fmt) -> dict[str, float]:
    return {r.name: r.zeros() / r.count() for r in weights.read_weights(path, fmt)}


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), "half", None])
def test_a_fraction_outside_zero_one_is_a_usage_error(fraction):
    with pytest.raises(UsageError) as caught:
        prune.check_fraction(fraction)
    assert "\n" not in str(caught.value)


def test_an_unreadable_model_is_one_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ModelError) as caught:
        prune.prune(bad, tmp_path / "out.onnx", 0.5)
    assert "\n" not in str(caught.value)
    with pytest.raises(ModelError):
        prune.prune(tmp_path / "missing.onnx", tmp_path / "out.onnx", 0.5)


def test_the_source_is_never_overwritten(models, tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(models["ppocr_cls.onnx"].read_bytes())
    with pytest.raises(UsageError):
        prune.prune(source, source, 0.5)


def run_onnx(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_onnx_pruned_runs_and_is_sparse(models, tmp_path):
    import onnx
    from onnx import numpy_helper

    source, target = models["ppocr_cls.onnx"], tmp_path / "pruned.onnx"
    result = prune.prune(source, target, 0.5)
    assert result["pruned_tensors"] == result["sparsity_after"]["tensors"] > 0
    assert all(s >= 0.5 for s in per_tensor_sparsity(target, "onnx").values())
    assert result["sparsity_after"]["sparsity"] >= 0.5 > result["sparsity_before"]["sparsity"]
    # Same graph, same bytes on disk; much smaller compressed.
    assert result["size_bytes"]["pruned"] == pytest.approx(result["size_bytes"]["original"], rel=0.01)
    assert result["compressed_bytes"]["pruned"] < 0.8 * result["compressed_bytes"]["original"]
    # Only the kernels changed: every other constant (biases, batch-norm parameters, shapes) is identical.
    kernels = {r.name for r in weights.read_weights(source, "onnx")}
    before, after = (
        {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in onnx.load(str(p)).graph.node
         if n.op_type == "Constant" and n.attribute[0].name == "value"} for p in (source, target))
    others = [name for name in before if name not in kernels]
    assert others and all(np.array_equal(before[n], after[n]) for n in others)
    x = {"x": np.random.default_rng(0).random((1, 3, 48, 192), dtype=np.float32)}
    out = run_onnx(target, x)[0]
    assert out.shape == run_onnx(source, x)[0].shape and np.isfinite(out).all()


def test_onnx_int8_is_pruned_in_the_real_domain(tmp_path):
    """Per-channel scales: the smallest |q - zp| * scale go, and a pruned value is stored as the zero point."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    q = np.array([[10, 12, 30, 5], [4, 6, 9, 8]], dtype=np.int8)  # rows: channels along axis 0
    zp = np.array([4, 8], dtype=np.int8)
    scale = np.array([1.0, 100.0], dtype=np.float32)  # row 1's small steps are large real values
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"], axis=0),
         helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(q, "Wq"), numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "zp")])
    source, target = tmp_path / "q.onnx", tmp_path / "q_pruned.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    prune.prune(source, target, 0.5)
    pruned = numpy_helper.to_array(onnx.load(str(target)).graph.initializer[0])
    # real magnitudes: row 0: 6, 8, 26, 1; row 1: 400, 200, 100, 0 -> the four smallest are 0, 1, 6, 8
    assert pruned.tolist() == [[4, 4, 30, 4], [4, 6, 9, 8]]
    assert run_onnx(target, {"x": np.ones((1, 2), np.float32)})[0].shape == (1, 4)


def run_tflite(path, seed: int = 0) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    spec = interpreter.get_input_details()[0]
    rng = np.random.default_rng(seed)
    x = rng.random(spec["shape"], dtype=np.float32)
    if spec["dtype"] != np.float32:
        x = (x * 255).astype(spec["dtype"])
    interpreter.set_tensor(spec["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("name", ["deeplabv3.tflite", "efficientnet_lite0_int8.tflite", "sine_float.tflite"])
def test_tflite_pruned_runs_is_sparse_and_keeps_its_labels(models, tmp_path, name):
    source, target = models[name], tmp_path / name
    result = prune.prune(source, target, 0.5)
    sparsity = per_tensor_sparsity(target, "tflite")
    assert len(sparsity) == result["pruned_tensors"] > 0 and all(s >= 0.5 for s in sparsity.values())
    out = run_tflite(target)
    assert out.shape == run_tflite(source).shape and np.isfinite(out.astype(np.float64)).all()
    # The labels zipped after the flatbuffer (TFLite metadata's associated files) come along unchanged.
    if zipfile.is_zipfile(source):
        assert result["trailing_bytes"]["preserved"]
        with zipfile.ZipFile(source) as before, zipfile.ZipFile(target) as after:
            assert before.namelist() == after.namelist()
            assert all(before.read(n) == after.read(n) for n in before.namelist())
    else:
        assert result["trailing_bytes"] == {"found": 0, "preserved": False}


def test_tflite_leaves_biases_and_other_buffers_alone(models, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    source, target = models["deeplabv3.tflite"], tmp_path / "d.tflite"
    prune.prune(source, target, 0.5)
    data = [p.read_bytes() for p in (source, target)]
    parsed = [schema.Model.GetRootAs(d, 0) for d in data]
    kernels = {r.handle for r in weights.tflite_weights(data[0], parsed[0])}
    assert parsed[0].BuffersLength() == parsed[1].BuffersLength()
    changed = {i for i in range(parsed[0].BuffersLength())
               if not np.array_equal(parsed[0].Buffers(i).DataAsNumpy(), parsed[1].Buffers(i).DataAsNumpy())}
    assert changed and changed <= kernels


def test_pruned_values_zero_exactly_the_ceiling(models):
    ref = weights.read_weights(models["sine_float.tflite"], "tflite")[0]
    values, zeroed = prune.pruned_values(ref, 0.3)
    assert np.count_nonzero(values == 0) == math.ceil(0.3 * ref.values.size) == zeroed
    kept = np.abs(values[values != 0])
    assert kept.min() >= np.abs(ref.values[values == 0]).max()  # the smallest went, the largest stayed


def test_tflite_sparse_storage_is_smaller_and_computes_the_same(models, tmp_path):
    """1x1 kernels stored CSR behind DENSIFY (what XNNPACK needs to try sparse inference): the same function,
    the same counted sparsity, a smaller file."""
    from ai_edge_litert import schema_py_generated as schema

    source = models["deeplabv3.tflite"]
    dense = prune.prune(source, tmp_path / "dense.tflite", 0.5)
    sparse = prune.prune(source, tmp_path / "sparse.tflite", 0.5, sparse_storage=True)
    assert sparse["sparse_storage"]["tensors"] > 0 and sparse["sparse_storage"]["bytes_saved"] > 0
    assert sparse["size_bytes"]["pruned"] < 0.85 * dense["size_bytes"]["pruned"]
    for key in ("weights", "zeros", "tensors"):
        assert sparse["sparsity_after"][key] == dense["sparsity_after"][key]
    np.testing.assert_array_equal(run_tflite(tmp_path / "sparse.tflite"), run_tflite(tmp_path / "dense.tflite"))
    model = schema.Model.GetRootAs((tmp_path / "sparse.tflite").read_bytes(), 0)
    codes = {model.OperatorCodes(i).BuiltinCode() for i in range(model.OperatorCodesLength())}
    assert schema.BuiltinOperator.DENSIFY in codes


def test_sparse_storage_is_refused_for_onnx(models, tmp_path):
    with pytest.raises(UsageError):
        prune.prune(models["ppocr_cls.onnx"], tmp_path / "p.onnx", 0.5, sparse_storage=True)


def test_the_xnnpack_sparse_outlook_names_what_is_missing(models, tmp_path, monkeypatch):
    source = models["deeplabv3.tflite"]
    outlook = weights.xnnpack_sparse_outlook(weights.read_weights(source, "tflite"))
    assert not outlook["possible"] and "DENSIFY" in outlook["why"]
    prune.prune(source, tmp_path / "half.tflite", 0.5, sparse_storage=True)
    outlook = weights.xnnpack_sparse_outlook(weights.read_weights(tmp_path / "half.tflite", "tflite"))
    assert outlook["densify_kernels"] > 0 and "2/3" in outlook["why"]
    prune.prune(source, tmp_path / "most.tflite", 0.8, sparse_storage=True)
    refs = weights.read_weights(tmp_path / "most.tflite", "tflite")
    monkeypatch.setattr(weights, "cpu_keeps_dense", lambda: None)  # an ARM board
    assert weights.xnnpack_sparse_outlook(refs)["possible"]
    monkeypatch.setattr(weights, "cpu_keeps_dense", lambda: "AVX")  # this kind of x86 host
    assert weights.xnnpack_sparse_outlook(refs) == {
        "densify_kernels": 37, "conv1x1_zero_fraction": pytest.approx(0.8, abs=0.01), "possible": False, "why": "AVX"}
