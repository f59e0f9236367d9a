"""The executors' contract: the Python worker (over each runtime plugin) and the native harness return the same
worker result, checked against one JSON Schema (agent/engine/schemas/worker-result.v1.json)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from edgebench.agent.engine import bench
from edgebench.agent.engine.executors import WORKER_RESULT_SCHEMA
from edgebench.agent.engine.measure import RunSettings

QUICK = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0)
SCHEMA = json.loads(WORKER_RESULT_SCHEMA.read_text())
CASES = [("sine_float.tflite", "litert", ()), ("efficientnet_lite0_int8.tflite", "litert", ()),
         ("ppocr_cls.onnx", "onnxruntime", ("x=1x3x48x192",)),
         ("sine_float.tflite", "native", ()), ("efficientnet_lite0_int8.tflite", "native", ()),
         ("ppocr_cls.onnx", "native", ("x=1x3x48x192",))]


PROFILED = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0, profile_runs=3)
PROFILED_CASES = [("efficientnet_lite0_int8.tflite", "litert", ()),
                  ("ppocr_cls.onnx", "onnxruntime", ("x=1x3x48x192",)),
                  ("efficientnet_lite0_int8.tflite", "native", ()),
                  ("ppocr_cls.onnx", "native", ("x=1x3x48x192",))]


def worker_result(models, name: str, runtime: str, shapes: tuple, settings: RunSettings = QUICK,
                  inputs: tuple = ()) -> dict:
    request = bench.BenchRequest(str(models[name]), runtime=runtime, settings=settings, shape_args=shapes,
                                 input_args=inputs)
    _, worker_request, executor = bench.prepare(request)
    return executor.execute(worker_request, request.limits).result


@pytest.mark.parametrize("name, runtime, shapes", CASES, ids=[f"{r}-{n}" for n, r, _ in CASES])
def test_every_executor_returns_the_contract(request, models, name, runtime, shapes):
    if runtime == "native":
        request.getfixturevalue("native_bin")  # skips where the harness is not built
    result = worker_result(models, name, runtime, shapes)
    jsonschema.validate(result, SCHEMA)
    assert len(result["samples"]["latency_ns"]) == len(result["samples"]["start_offset_ns"]) \
        == result["timing"]["measured"]["runs"]


@pytest.mark.parametrize("name, runtime, shapes", PROFILED_CASES, ids=[f"{r}-{n}" for n, r, _ in PROFILED_CASES])
def test_placement_and_profiled_ops_keep_the_contract(request, models, name, runtime, shapes):
    if runtime == "native":
        request.getfixturevalue("native_bin")
    result = worker_result(models, name, runtime, shapes, PROFILED)
    jsonschema.validate(result, SCHEMA)
    assert result["placement"]["nodes"]
    profile = result["ops"]
    if profile["unavailable"]:  # LiteRT's Python interpreter has no per-op profiler
        assert runtime == "litert" and profile["source"] is None and profile["latency_ns"] == profile["nodes"] == []
    else:
        assert len(profile["latency_ns"]) == 3 and all(len(node["duration_ns"]) == 3 for node in profile["nodes"])


def test_torchscript_keeps_the_contract_with_its_op_profile(models):
    """TorchScript (Silero VAD: a tensor and an int argument) profiled: per-op times from torch.profiler; no placement
    (everything runs on torch's CPU kernels). ExecuTorch's case is in tests/test_executorch.py."""
    result = worker_result(models, "silero_vad.jit", "torchscript", ("x=1x512",), PROFILED, ("sr=16000",))
    jsonschema.validate(result, SCHEMA)
    assert result["placement"] is None and not result["ops"]["unavailable"]
    assert result["ops"]["source"] == "torch-profiler"
    assert result["ops"]["nodes"] and all(len(node["duration_ns"]) == 3 for node in result["ops"]["nodes"])


def test_the_contract_refuses_what_the_engine_could_not_use(models, native_bin):
    result = worker_result(models, "sine_float.tflite", "native", ())
    broken = [copy.deepcopy(result) for _ in range(4)]
    del broken[0]["samples"]["start_offset_ns"]
    broken[1]["timing"]["measured"]["runs"] = 0
    broken[2]["memory"]["peak_method"] = "guessed"
    broken[3]["extra_key"] = 1
    for document in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, SCHEMA)
