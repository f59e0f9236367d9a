"""The native C++ harness (native/) against the Python engine: same outputs on the same inputs, the same report
through `edgebench bench --runtime native`, comparable latency, and clear errors with distinct exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgebench.agent.engine import bench
from edgebench.agent.engine.executors.native import BINARY_ENV, NativeExecutor, command
from edgebench.agent.engine.isolation import ChildLimits
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.report import SCHEMA_FILE
from edgebench.agent.errors import ChildFailed
from edgebench.agent.runtimes import runtime_class
from edgebench.agent.runtimes.base import RuntimeOptions

from ..conftest import FAST

ONE_RUN = ["--min-runs", "1", "--min-duration", "0", "--warmup-runs", "0", "--warmup-duration", "0"]
QUICK = RunSettings(min_runs=30, min_duration_s=0.05, warmup_runs=2, warmup_duration_s=0.02)


def run_native(binary: Path, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def native_io(binary: Path, model: Path, out: Path, *args: object) -> tuple[dict, dict, dict]:
    """Run the harness once, dumping what it fed and what came out: (feeds, outputs, result)."""
    proc = run_native(binary, model, *ONE_RUN, "--dump-inputs", out, "--dump-outputs", out, *args)
    assert proc.returncode == 0, proc.stderr
    result = events(proc.stdout)[-1]["result"]
    manifest = json.loads((out / "manifest.json").read_text())
    feeds = {item["name"]: np.load(out / item["file"]) for item in manifest["inputs"]}
    outputs = {item["name"]: np.load(out / item["file"]) for item in manifest["outputs"]}
    return feeds, outputs, result


def python_outputs(runtime: str, model: Path, feeds: dict) -> dict:
    session = runtime_class(runtime)().load(str(model), RuntimeOptions())
    try:
        return {name: np.asarray(array) for name, array in session.infer(feeds).items()}
    finally:
        session.close()


def check_report(report: dict, model: Path) -> None:
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    samples = report["samples"]["latency_ns"]
    stats = report["stats"]
    assert report["runtime"]["runtime"] == "native"
    assert report["model"]["size_bytes"] == model.stat().st_size
    assert stats["count"] == len(samples) == report["timing"]["measured"]["runs"] >= 40
    ms = np.sort(np.array(samples)) / 1e6
    assert stats["p50_ms"] == pytest.approx(np.percentile(ms, 50))  # computed in Python, by agent/engine/stats.py
    assert stats["min_ms"] == pytest.approx(ms[0]) and stats["max_ms"] == pytest.approx(ms[-1])
    offsets = report["samples"]["start_offset_ns"]
    assert offsets[0] == 0 and all(b > a for a, b in zip(offsets, offsets[1:]))
    assert sum(samples) / 1e9 <= report["timing"]["measured"]["duration_s"]
    assert report["timing"]["load_ms"] > 0 and report["timing"]["first_inference_ms"] > 0
    assert report["timing"]["warmup"]["runs"] >= 2
    memory = report["memory"]
    assert memory["rss_after_load_bytes"] > memory["rss_before_load_bytes"]
    assert memory["peak_load_bytes"] >= memory["rss_after_load_bytes"]
    assert memory["peak_method"] == "vmhwm" and memory["peak_steady_bytes"] > 0
    assert memory["rss_samples"], "the parent samples the harness's RSS like the Python worker's"


# ------------------------------------------------------------------------------------ needs no binary at all

def test_command_line_from_a_worker_request(tmp_path):
    request = {"model": "/m/x.onnx", "runtime": "native",
               "options": {"threads": 2, "delegates": ["gpu", "xnnpack"], "providers": ["cuda", "cpu"],
                           "delegate_options": {"device": "0"}},
               "settings": {"min_runs": 40, "min_duration_s": 0.1, "max_duration_s": 60.0, "warmup_runs": 2,
                            "warmup_duration_s": 1e-05, "progress_interval_s": 0.5},
               "shape_args": ["x=1x3x48x192"], "input_args": ["sr=16000"], "seed": 3}
    argv = command(tmp_path / "edgebench-native", request, 7)
    assert argv[1:4] == ["/m/x.onnx", "--events-fd", "7"]
    pairs = dict(zip(argv[4::2], argv[5::2]))
    assert pairs["--threads"] == "2" and pairs["--delegate"] == "gpu,xnnpack" and pairs["--providers"] == "cuda,cpu"
    assert pairs["--delegate-option"] == "device=0" and pairs["--min-runs"] == "40"
    assert pairs["--warmup-duration"] == "1e-05" and pairs["--shape"] == "x=1x3x48x192"
    assert pairs["--input"] == "sr=16000" and pairs["--seed"] == "3"


def test_missing_binary_says_how_to_build_it(cli, models, monkeypatch, tmp_path):
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "edgebench-native"))
    assert "make native" in NativeExecutor.unavailable_reason()
    result = cli("bench", models["sine_float.tflite"], "--runtime", "native", *FAST)
    assert result.code == 4, result
    assert "make native" in result.err and len(result.err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ same inputs, same outputs

@pytest.mark.parametrize("name", ["efficientnet_lite0_int8.tflite", "sine_float.tflite"])
def test_tflite_outputs_match_the_python_engine(native_bin, models, tmp_path, name):
    feeds, outputs, result = native_io(native_bin, models[name], tmp_path)
    assert result["backend"]["used"] == ["xnnpack"] and result["backend"]["module"] == "tflite-c"
    reference = python_outputs("litert", models[name], feeds)
    assert outputs.keys() == reference.keys()
    for key, array in outputs.items():
        assert array.dtype == reference[key].dtype and array.shape == reference[key].shape
        if array.dtype.kind in "iu":  # quantized: at most one step apart (XNNPACK builds may round differently)
            assert np.abs(array.astype(np.int64) - reference[key].astype(np.int64)).max() <= 1
            assert array.argmax() == reference[key].argmax()
        else:
            np.testing.assert_allclose(array, reference[key], rtol=1e-5, atol=1e-6)


def test_onnx_outputs_match_the_python_engine_on_python_made_inputs(native_bin, models, tmp_path):
    """Inputs written by numpy, read by the harness's .npy reader: both engines see exactly the same data."""
    model = models["ppocr_cls.onnx"]
    image = np.random.default_rng(1).random((1, 3, 48, 192)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    feeds, outputs, result = native_io(native_bin, model, tmp_path / "out", "--input", f"x={tmp_path / 'image.npy'}")
    np.testing.assert_array_equal(feeds["x"], image)
    assert result["feeds"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 48, 192],
                                "source": f"file:{tmp_path / 'image.npy'}"}]
    assert result["backend"]["used"] == ["CPUExecutionProvider"] and result["backend"]["module"] == "onnxruntime-c"
    reference = python_outputs("onnxruntime", model, {"x": image})
    for key, array in outputs.items():
        np.testing.assert_allclose(array, reference[key], rtol=1e-5, atol=1e-6)


def test_onnx_stateful_model_with_scalar_input(native_bin, models, tmp_path):
    model = models["silero_vad.onnx"]
    feeds, outputs, result = native_io(native_bin, model, tmp_path, "--shape", "input=1x512", "--shape",
                                       "state=2x1x128", "--input", "state=zeros", "--input", "sr=16000")
    assert feeds["sr"].shape == () and feeds["sr"].dtype == np.int64 and int(feeds["sr"]) == 16000
    assert not feeds["state"].any() and feeds["input"].dtype == np.float32
    assert (feeds["input"] >= 0).all() and (feeds["input"] < 1).all()  # generated like inputs.generate()
    fed = {f["name"]: f for f in result["feeds"]}
    assert fed["sr"] == {"name": "sr", "dtype": "int64", "shape": [], "source": "value:16000"}
    assert fed["state"]["source"] == "zeros"
    reference = python_outputs("onnxruntime", model, feeds)
    for key, array in outputs.items():
        np.testing.assert_allclose(array, reference[key], rtol=1e-5, atol=1e-6)


def test_tensor_specs_match_the_python_plugins(native_bin, models, tmp_path):
    """The report's model inputs/outputs are described the same by the native and the Python runtimes."""
    for name, runtime, args in [("efficientnet_lite0_int8.tflite", "litert", []),
                                ("ppocr_cls.onnx", "onnxruntime", ["--shape", "x=1x3x48x192"])]:
        _, _, result = native_io(native_bin, models[name], tmp_path / name, *args)
        session = runtime_class(runtime)().load(str(models[name]), RuntimeOptions())
        assert result["inputs"] == [spec.to_dict() for spec in session.inputs]
        assert result["outputs"] == [spec.to_dict() for spec in session.outputs]


# ------------------------------------------------------------------ edgebench bench --runtime native: report

@pytest.mark.parametrize(("name", "args"), [
    ("efficientnet_lite0_int8.tflite", []),
    ("ppocr_cls.onnx", ["--shape", "x=1x3x48x192"]),
])
def test_bench_runtime_native_report_validates(native_bin, cli, models, name, args):
    result = cli("bench", models[name], "--runtime", "native", *FAST, *args, "--json", "-")
    assert result.code == 0, result
    report = result.json()
    check_report(report, models[name])
    assert report["model"]["format"] == name.rsplit(".", 1)[1]


def test_bench_native_table_and_fallback(native_bin, cli, models):
    result = cli("bench", models["sine_float.tflite"], "--runtime", "native", *FAST, "--delegate", "gpu,cpu")
    assert result.code == 0, result
    assert "latency (" in result.out and "verdict" in result.out
    result = cli("bench", models["sine_float.tflite"], "--runtime", "native", *FAST, "--delegate", "gpu,cpu",
                 "--shape", "serving_default_dense_input:0=8x1", "--json", "-")
    report = result.json()
    assert report["runtime"]["requested"] == ["gpu", "cpu"] and report["runtime"]["used"] == ["cpu"]
    assert report["runtime"]["fallbacks"][0]["candidate"] == "gpu"
    assert "libtensorflowlite_gpu_delegate.so" in report["runtime"]["fallbacks"][0]["reason"]
    assert report["inputs_fed"][0]["shape"] == [8, 1]


def test_samples_are_on_the_parent_clock(native_bin, models):
    """origin_monotonic_ns lies on this process's perf_counter_ns clock (CLOCK_MONOTONIC). How the native and Python
    engines' latencies compare is a speed claim, measured by bench/native_overhead.py, not asserted here (a timing
    ratio on a busy machine failed a clean-clone run)."""
    model = str(models["efficientnet_lite0_int8.tflite"])
    before = time.perf_counter_ns()
    native = bench.run(bench.BenchRequest(model, runtime="native", settings=QUICK))
    after = time.perf_counter_ns()
    origin = native["timing"]["measured"]["origin_monotonic_ns"]
    assert before < origin < after
    assert origin + native["samples"]["start_offset_ns"][-1] < after
    offsets = [offset for offset, _ in native["memory"]["rss_samples"]]
    assert offsets and min(offsets) < 0  # the parent's RSS samples, aligned to the first measured run


# -------------------------------------------------------------------------------------- errors and crashes

def _fake_tflite(path: Path) -> Path:
    path.write_bytes(b"\x10\x00\x00\x00TFL3" + bytes(120))  # sniffs as TFLite, is no valid flatbuffer
    return path


def _fake_onnx(path: Path) -> Path:
    path.write_bytes(b"\x08\x07\x12\x04junkjunkjunk")
    return path


def test_harness_exit_codes_are_distinct(native_bin, tmp_path):
    bad = _fake_tflite(tmp_path / "bad.tflite")
    cases = [
        (3, "TFLite cannot load the model", [bad]),
        (3, "ONNX Runtime cannot load the model", [_fake_onnx(tmp_path / "bad.onnx")]),
        (5, "cannot load the TensorFlow Lite C library", [bad, "--tflite-lib", tmp_path / "libnone.so"]),
        (6, "unknown TFLite delegate 'warp'", [bad, "--delegate", "warp"]),
        (2, "unknown option", [bad, "--warp"]),
    ]
    for code, needle, args in cases:
        proc = run_native(native_bin, *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert needle in proc.stderr
        if code > 2:
            (error,) = [e for e in events(proc.stdout) if e["type"] == "error"]
            assert error["exit_code"] == code and needle in error["message"]


@pytest.mark.parametrize(("args", "env", "code", "needle"), [
    (["--delegate", "warp"], {}, 2, "unknown TFLite delegate 'warp'"),
    ([], {"EDGEBENCH_TFLITE_LIB": "/nonexistent/libtensorflowlite_c.so"}, 4, "cannot load the TensorFlow Lite C"),
    (["--delegate", "/nonexistent/libdelegate.so"], {}, 4, "no delegate in the chain"),
    (["--input", "missing.npy"], {}, 3, "file not found"),
])
def test_cli_errors_from_the_harness(native_bin, cli, models, monkeypatch, args, env, code, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = cli("bench", models["sine_float.tflite"], "--runtime", "native", *FAST, *args)
    assert result.code == code, result
    assert needle in result.err and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_cli_bad_models_and_shapes(native_bin, cli, models, tmp_path):
    result = cli("bench", _fake_tflite(tmp_path / "bad.tflite"), "--runtime", "native", *FAST)
    assert result.code == 3 and "TFLite cannot load the model" in result.err, result
    result = cli("bench", _fake_onnx(tmp_path / "bad.onnx"), "--runtime", "native", *FAST)
    assert result.code == 3 and "ONNX Runtime cannot load the model" in result.err, result
    result = cli("bench", models["ppocr_cls.onnx"], "--runtime", "native", *FAST, "--providers", "quantum")
    assert result.code == 2 and "unknown ONNX Runtime execution provider" in result.err, result
    result = cli("bench", models["ppocr_cls.onnx"], "--runtime", "native", *FAST)
    assert result.code == 3 and "--shape x=1x3xNxN" in result.err, result
    result = cli("bench", models["silero_vad.onnx"], "--runtime", "native", *FAST, "--shape", "input=1x100",
                 "--shape", "state=2x1x128", "--input", "sr=16000")
    assert result.code == 5 and "the first inference failed" in result.err, result


def test_a_crash_and_a_hang_are_named(native_bin, models):
    """A harness killed by a signal mid-run, and one that outlives --timeout: clear errors, the caller survives."""
    model = str(models["sine_float.tflite"])

    def crash(phase: str, runs: int, elapsed: float) -> None:
        import psutil

        if phase == "measure":
            for child in psutil.Process().children():
                if child.name().startswith("edgebench-nat"):
                    os.kill(child.pid, signal.SIGSEGV)

    long_run = RunSettings(min_runs=1, min_duration_s=20, max_duration_s=20, warmup_runs=1, warmup_duration_s=0,
                           progress_interval_s=0.05)
    with pytest.raises(ChildFailed, match=r"segmentation fault \(SIGSEGV\) during the measured run"):
        bench.run(bench.BenchRequest(model, runtime="native", settings=long_run), progress=crash)
    with pytest.raises(ChildFailed, match="hung during the measured run: no result after 1.5s"):
        bench.run(bench.BenchRequest(model, runtime="native", settings=long_run, limits=ChildLimits(timeout_s=1.5)))
    report = bench.run(bench.BenchRequest(model, runtime="native", settings=QUICK))
    assert report["stats"]["count"] >= 30


def test_compare_explains_that_native_is_bench_only(native_bin, cli, models):
    path = models["sine_float.tflite"]
    result = cli("compare", path, path, "--candidate-runtime", "native", "--samples", "2")
    assert result.code == 4 and "only through `edgebench bench`" in result.err, result


def test_event_reader_is_linear_and_splits_lines_across_chunks():
    """The result line of a sub-microsecond model holds millions of samples: reading it must not be quadratic."""
    import random

    from edgebench.agent.engine.isolation import _EventReader

    events_text = (b'{"type": "progress", "phase": "load", "runs": 0, "elapsed_s": 0.0}\n'
                   b'{"type": "phase", "phase": "measure"}\n'
                   b'{"type": "result", "result": {"samples": {"latency_ns": [' + b",".join([b"123456"] * 2_000_000)
                   + b"]}}}\n")
    rng = random.Random(0)
    for chunk in (65536, None):
        reader = _EventReader(None)
        started = time.perf_counter()
        at = 0
        while at < len(events_text):
            size = chunk or rng.randint(1, 200_000)
            reader.feed(events_text[at:at + size])
            at += size
        assert time.perf_counter() - started < 10
        assert reader.phase == "measure" and len(reader.result["samples"]["latency_ns"]) == 2_000_000
