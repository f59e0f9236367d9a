"""Bad input: one clear line on stderr, a distinct exit code, no traceback."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from .conftest import FAST, save_onnx


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.code == code, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: "), result
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], result


def test_missing_file(cli, tmp_path):
    assert_one_line_error(cli("bench", tmp_path / "nope.tflite"), 3, "not found", "nope.tflite")


def test_directory_and_empty_file(cli, tmp_path):
    assert_one_line_error(cli("bench", tmp_path), 3, "is a directory")
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert_one_line_error(cli("bench", tmp_path / "empty.onnx"), 3, "is empty")


@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".pte", ".pt", ".pt2"])
def test_random_bytes(cli, tmp_path, suffix):
    path = tmp_path / f"random{suffix}"
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(b"\xff" + noise)  # 0xff is never the first byte of either format
    assert_one_line_error(cli("bench", path), 3, "is not a TFLite, ONNX, ExecuTorch, PyTorch or GGUF model",
                          f"named {suffix}")


def test_truncated_tflite(cli, models, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(models["efficientnet_lite0_int8.tflite"].read_bytes()[:4096])
    result = cli("bench", path)
    assert result.code == 3 and "Traceback" not in result.err, result
    assert "truncated" in result.err or "cannot load" in result.err


def test_truncated_onnx(cli, models, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(models["ppocr_cls.onnx"].read_bytes()[:30000])
    assert_one_line_error(cli("bench", path), 3, "cannot load the model")


def test_unsupported_op(cli, tmp_path):
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], "custom",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    import onnx

    onnx.save(model, str(path))
    assert_one_line_error(cli("bench", path), 3, "FancyOp")


def test_wrong_npy_shape_and_dtype(cli, tiny_onnx, tmp_path):
    path, _, _ = tiny_onnx(features=8)
    np.save(tmp_path / "shape.npy", np.zeros((1, 5), np.float32))
    assert_one_line_error(cli("bench", path, "--input", f"x={tmp_path / 'shape.npy'}"), 3, "shape 1x5", "Nx8")
    np.save(tmp_path / "text.npy", np.array([["a"] * 8]))
    assert_one_line_error(cli("bench", path, "--input", f"x={tmp_path / 'text.npy'}"), 3, "dtype <U1", "float32")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert_one_line_error(cli("bench", path, "--input", f"x={tmp_path / 'junk.npy'}"), 3, "not a readable .npy")


def test_unknown_names_and_bad_flags(cli, tiny_onnx):
    path, _, _ = tiny_onnx()
    assert_one_line_error(cli("bench", path, "--shape", "y=1x8"), 3, "'y'", "inputs are: x")
    assert_one_line_error(cli("bench", path, "--shape", "x=1xfoo"), 2, "integers")
    assert_one_line_error(cli("bench", path, "--shape", "x=1x2x3"), 3, "3 dimensions")
    assert_one_line_error(cli("bench", path, "--min-duration", "5", "--max-duration", "1"), 2, "--max-duration")
    assert_one_line_error(cli("bench", path, "--runtime", "nosuch"), 2, "unknown runtime")
    assert_one_line_error(cli("bench", path, "--runtime", "litert"), 2, "cannot run onnx")
    result = cli("bench", path, "--min-runs", "zero")
    assert result.code == 2 and "not a positive integer" in result.err


def test_tiny_model_runs_with_generated_and_literal_inputs(cli, tiny_onnx):
    path, _, _ = tiny_onnx()
    result = cli("bench", path, *FAST, "--input", "x=0.5", "--json", "-")
    assert result.code == 0, result
    assert result.json()["inputs_fed"][0]["source"] == "value:0.5"


def test_save_onnx_helper_rejects_invalid(tmp_path):
    """The test helper itself validates models, so a broken fixture cannot pass silently."""
    import onnx

    graph = helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "bad", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(onnx.checker.ValidationError):
        save_onnx(helper.make_model(graph), tmp_path / "bad.onnx")
