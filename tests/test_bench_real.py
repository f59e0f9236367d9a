"""`edgebench bench` on the real pretrained models (TFLite through LiteRT, ONNX through ONNX Runtime)."""

from __future__ import annotations

import hashlib
import json
import os
import re

import jsonschema
import numpy as np
import pytest

from edgebench.agent.engine.report import SCHEMA_FILE

from .conftest import FAST

pytestmark = pytest.mark.slow


def check_report(report: dict, model_path) -> None:
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    stats, samples = report["stats"], report["samples"]["latency_ns"]
    assert report["model"]["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert report["model"]["size_bytes"] == model_path.stat().st_size
    assert stats["count"] == len(samples) == report["timing"]["measured"]["runs"] >= 30
    ms = np.sort(np.array(samples)) / 1e6
    assert stats["min_ms"] == pytest.approx(ms[0]) and stats["max_ms"] == pytest.approx(ms[-1])
    assert stats["p50_ms"] == pytest.approx(np.percentile(ms, 50))
    assert stats["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    low, high = stats["p90_ci_ms"]
    assert low <= stats["p90_ms"] <= high
    # Every sample lies inside the measured window, and throughput is runs over that window.
    duration_s = report["timing"]["measured"]["duration_s"]
    assert sum(samples) / 1e9 <= duration_s
    assert stats["throughput_ips"] == pytest.approx(len(samples) / duration_s)
    offsets = report["samples"]["start_offset_ns"]
    assert offsets[0] == 0 and all(b > a for a, b in zip(offsets, offsets[1:]))
    memory = report["memory"]
    assert memory["rss_after_load_bytes"] > memory["rss_before_load_bytes"]
    assert memory["peak_load_bytes"] >= memory["rss_after_load_bytes"]
    assert memory["peak_steady_bytes"] >= memory["rss_before_measure_bytes"] * 0.9
    assert report["device"]["cores"] == os.cpu_count()
    assert report["device"]["python"].startswith("CPython") or report["device"]["python"]
    # Every repeat is in the report, and the pooled samples are theirs.
    repeats = report["repeats"]
    assert len(repeats) == report["settings"]["repeats"] and len({r["pid"] for r in repeats}) == len(repeats)
    assert sum(len(r["samples"]["latency_ns"]) for r in repeats) == len(samples) == len(report["samples"]["repeat"])
    assert all(r["stats"]["count"] >= report["settings"]["min_runs"] for r in repeats)


def test_tflite_int8_classifier(cli, models, tmp_path):
    path = models["efficientnet_lite0_int8.tflite"]
    result = cli("bench", path, *FAST, "--json", tmp_path / "r.json")
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    check_report(report, path)
    assert report["runtime"]["runtime"] == "litert" and report["runtime"]["used"] == ["xnnpack"]
    (spec,) = report["model"]["inputs"]
    assert spec["dtype"] == "uint8" and spec["shape"] == [1, 224, 224, 3]
    assert spec["scale"] == pytest.approx(0.0126, abs=1e-4) and spec["zero_point"] == 131
    assert report["model"]["outputs"][0]["shape"] == [1, 1000]
    assert "latency (ms)" in result.out
    # the p90 a rerun should confirm: from the run's parts (one repeat: batches), with where a rerun lands
    assert re.search(r"p90 [0-9.]+ ms, 95% interval \[[0-9.]+, [0-9.]+\] from \d+ parts of the run; an identical "
                     r"rerun: \[", result.out), result.out


def test_repeats_of_a_real_model(cli, models, tmp_path):
    """Three fresh processes, each loading the int8 classifier: one report with each repeat's own figures."""
    path = models["efficientnet_lite0_int8.tflite"]
    result = cli("bench", path, "--min-runs", "15", "--min-duration", "0", "--warmup-runs", "2",
                 "--warmup-duration", "0", "--repeats", "3", "--no-sensors", "--json", tmp_path / "r.json")
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    check_report(report, path)
    assert report["stats"]["count"] == 45 and report["settings"]["min_runs"] == 15
    loads = [r["timing"]["load_ms"] for r in report["repeats"]]
    assert report["timing"]["load_ms"] == pytest.approx(sorted(loads)[1])  # the median over the repeats
    assert "repeats   3 fresh processes" in result.out


def test_tflite_delegate_fallback_is_reported(cli, models):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--delegate", "gpu,cpu", "--json", "-")
    assert result.code == 0, result
    runtime = result.json()["runtime"]
    assert runtime["requested"] == ["gpu", "cpu"] and runtime["used"] == ["cpu"]
    (fallback,) = runtime["fallbacks"]
    assert fallback["candidate"] == "gpu" and fallback["reason"]


def test_tflite_resize_tensor_input(cli, models):
    """A --shape on a fixed-shape TFLite model resizes it (resize_tensor_input) before the first invoke."""
    result = cli("bench", models["sine_float.tflite"], *FAST, "--json", "-")
    name = result.json()["model"]["inputs"][0]["name"]
    result = cli("bench", models["sine_float.tflite"], *FAST, "--shape", f"{name}=8x1", "--json", "-")
    assert result.code == 0, result
    assert result.json()["inputs_fed"][0]["shape"] == [8, 1]


def test_onnx_dynamic_shapes_need_and_take_shape(cli, models):
    path = models["ppocr_rec.onnx"]
    result = cli("bench", path, *FAST)
    assert result.code == 3, result
    assert "dynamic dimension" in result.err and "--shape x=" in result.err and "Traceback" not in result.err
    result = cli("bench", path, *FAST, "--shape", "x=1x3x48x160", "--threads", "1", "--json", "-")
    assert result.code == 0, result
    report = result.json()
    check_report(report, path)
    assert report["inputs_fed"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 48, 160], "source": "random"}]
    assert report["runtime"]["used"] == ["CPUExecutionProvider"] and report["runtime"]["threads"] == 1


def test_onnx_provider_fallback(cli, models):
    result = cli("bench", models["ppocr_cls.onnx"], *FAST, "--shape", "x=1x3x48x192", "--providers", "CUDA,CPU",
                 "--json", "-")
    assert result.code == 0, result
    runtime = result.json()["runtime"]
    assert runtime["used"] == ["CPUExecutionProvider"]
    assert runtime["fallbacks"][0]["candidate"] == "CUDAExecutionProvider"


def test_stateful_model_with_literal_and_file_inputs(cli, models, tmp_path):
    """Silero VAD: audio chunk + recurrent state + a scalar int64 sample rate that must be 16000."""
    path = models["silero_vad.onnx"]
    audio = (np.sin(np.arange(512) / 8) * 0.3).astype(np.float32)[None, :]
    np.save(tmp_path / "audio.npy", audio)
    result = cli("bench", path, *FAST, "--input", f"input={tmp_path / 'audio.npy'}", "--input", "state=zeros",
                 "--shape", "state=2x1x128", "--input", "sr=16000", "--json", "-")
    assert result.code == 0, result
    fed = {f["name"]: f for f in result.json()["inputs_fed"]}
    assert fed["input"]["source"].startswith("file:") and fed["input"]["shape"] == [1, 512]
    assert fed["sr"] == {"name": "sr", "dtype": "int64", "shape": [], "source": "value:16000"}
    # A wrong chunk length is the model's own error, reported in one line with exit code 5.
    result = cli("bench", path, *FAST, "--shape", "input=1x100", "--shape", "state=2x1x128", "--input", "sr=16000")
    assert result.code == 5 and "first inference failed" in result.err and "Traceback" not in result.err


def test_json_to_stdout_is_the_only_stdout(cli, models):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--json", "-")
    assert result.code == 0
    assert result.json()["schema"] == "edgebench.bench/2"


def test_external_delegate_paths_fall_back_with_reasons(cli, models, tmp_path):
    """A delegate .so that does not exist, and a real shared library that is not a delegate: both are
    skipped with their reason and the next delegate in the chain runs the model."""
    missing = tmp_path / "libedgetpu.so.1"
    not_a_delegate = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                                      "/lib/aarch64-linux-gnu/libm.so.6") if os.path.exists(p))
    result = cli("bench", models["sine_float.tflite"], *FAST, "--delegate", f"{missing},{not_a_delegate},xnnpack",
                 "--json", "-")
    assert result.code == 0, result
    runtime = result.json()["runtime"]
    assert runtime["used"] == ["xnnpack"]
    assert [f["candidate"] for f in runtime["fallbacks"]] == [str(missing), not_a_delegate]
    assert all(f["reason"] for f in runtime["fallbacks"])
    result = cli("bench", models["sine_float.tflite"], *FAST, "--delegate", str(missing))
    assert result.code == 4 and "no delegate in the chain" in result.err, result
