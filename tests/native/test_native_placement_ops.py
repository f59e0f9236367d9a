"""Placement and the per-op profile from the native harness (issue 14): where each node ran is counted the same as
the Python runtime counts it on the same model, and --profile-ops gives each executed node a time in each profiled
run. Structure and counts only: no wall-clock threshold is asserted (the TFLite ops' share of the end-to-end time
is printed)."""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import pytest

from edgebench.agent.engine import bench, ops
from edgebench.agent.engine.executors import WORKER_RESULT_SCHEMA
from edgebench.agent.engine.executors.native import read_profiles
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.runtimes.base import RuntimeOptions

SCHEMA = json.loads(WORKER_RESULT_SCHEMA.read_text())
QUICK = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0)
PROFILE_RUNS = 4
PROFILED = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0,
                       profile_runs=PROFILE_RUNS)
# (model, Python runtime, TFLite delegate chain, --shape)
CASES = [("efficientnet_lite0_int8.tflite", "litert", ("xnnpack",), ()),
         ("efficientnet_lite0_int8.tflite", "litert", ("cpu",), ()),
         ("deeplabv3.tflite", "litert", (), ()),
         ("ppocr_cls.onnx", "onnxruntime", (), ("x=1x3x48x192",))]
IDS = [f"{name}-{','.join(chain) or 'default'}" for name, _, chain, _ in CASES]


def worker_result(models, name: str, runtime: str, chain: tuple, shapes: tuple, settings: RunSettings) -> dict:
    request = bench.BenchRequest(str(models[name]), runtime=runtime, options=RuntimeOptions(delegates=list(chain)),
                                 settings=settings, shape_args=shapes)
    _, worker_request, executor = bench.prepare(request)
    result = executor.execute(worker_request, request.limits).result
    jsonschema.validate(result, SCHEMA)  # the one contract, placement and ops included
    return result


def counted(result: dict) -> dict:
    summary = ops.summarize_placement(result["placement"])
    return {key: summary[key] for key in ("source", "first_choice", "nodes", "backends", "fallback_ops")}


@pytest.mark.parametrize("name, runtime, chain, shapes", CASES, ids=IDS)
def test_placement_is_counted_like_the_python_runtime(native_bin, models, name, runtime, chain, shapes):
    native = worker_result(models, name, "native", chain, shapes, QUICK)
    python = worker_result(models, name, runtime, chain, shapes, QUICK)
    print(f"\n{name} {chain}: native {counted(native)}\n{' ' * len(name)}  python {counted(python)}")
    assert counted(native) == counted(python)
    if runtime == "litert":
        # Node by node too: names, op types, backends, partitions. (ONNX Runtime's optimiser names the nodes it
        # inserts afresh in each session, so there the counts are compared.)
        assert native["placement"] == python["placement"]
    assert native["ops"] is None and "profile_files" not in native


@pytest.mark.parametrize("name, runtime, chain, shapes", CASES, ids=IDS)
def test_profile_ops_times_every_executed_node(native_bin, models, name, runtime, chain, shapes):
    result = worker_result(models, name, "native", chain, shapes, PROFILED)
    profile = result["ops"]
    assert profile["unavailable"] is None and len(profile["latency_ns"]) == PROFILE_RUNS
    assert profile["nodes"], "every executed node has a time"
    assert all(len(node["duration_ns"]) == PROFILE_RUNS for node in profile["nodes"])
    names = [node["name"] for node in profile["nodes"]]
    assert len(names) == len(set(names))
    placement = result["placement"]["nodes"]
    on_kernels = [node for node in placement if node["backend"] in ("cpu", "CPUExecutionProvider")]
    if runtime == "onnxruntime":
        assert profile["source"] == "onnxruntime-profiler"
        # The nodes of the first inference's placement, each on its provider (the graph optimiser names the nodes
        # it inserts afresh in each session: ReorderOutput_token_<n>).
        assert Counter((n["op"], n["backend"]) for n in profile["nodes"]) == \
            Counter((n["op"], n["backend"]) for n in placement)
    else:
        assert profile["source"] == "tflite-telemetry-profiler"
        # The interpreter's own nodes one each, by the placement's names; each delegate kernel one node.
        partitions = {node["partition"] for node in placement if node["backend"] not in ("cpu", "ref")}
        kernels = [n for n in profile["nodes"] if n["backend"] not in ("cpu", "ref")]
        assert len(kernels) == len(partitions)
        assert {n["op"] for n in kernels} <= {"TfLiteXNNPackDelegate"}
        builtin = [(n["name"], n["op"]) for n in profile["nodes"] if n["backend"] == "cpu"]
        assert builtin == [(n["name"], n["op"]) for n in on_kernels]
    shares = [sum(node["duration_ns"][run] for node in profile["nodes"]) / latency
              for run, latency in enumerate(profile["latency_ns"])]
    print(f"\n{name} {chain}: {len(profile['nodes'])} nodes timed; their sum / end-to-end per profiled run: "
          + ", ".join(f"{share:.3f}" for share in shares))
    assert all(share > 0 for share in shares)


def test_bench_report_has_placement_and_ops(native_bin, cli, models):
    """Through `edgebench bench --runtime native --profile-ops`: the report's sections, its CSV, the table."""
    result = cli("bench", models["efficientnet_lite0_int8.tflite"], "--runtime", "native", "--profile-ops",
                 "--profile-runs", "3", "--min-runs", "20", "--min-duration", "0", "--warmup-runs", "2",
                 "--warmup-duration", "0", "--repeats", "1", "--json", "-")
    assert result.code == 0, result
    report = result.json()
    assert report["placement"]["backends"][0] == {"name": "xnnpack", "nodes": 60, "partitions": 2}
    assert report["ops"]["source"] == "tflite-telemetry-profiler" and report["ops"]["runs"] == 3
    assert {node["runs"] for node in report["ops"]["nodes"]} == {3}


def test_onnx_profile_files_become_the_contract(tmp_path):
    """read_profiles: ONNX Runtime's profile files, as the harness names them, become placement and ops.nodes."""
    def run(start: int, nodes: list) -> list:
        events = [{"cat": "Session", "name": "model_run", "ts": start, "dur": 100}]
        for offset, (name, op, provider, dur) in enumerate(nodes):
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": start + 1 + offset, "dur": dur,
                           "args": {"op_name": op, "provider": provider}})
        return events

    graph = [("conv", "Conv", "CUDAExecutionProvider", 5), ("softmax", "Softmax", "CPUExecutionProvider", 2)]
    placement_file, ops_file = tmp_path / "placement.json", tmp_path / "ops.json"
    placement_file.write_text(json.dumps(run(0, graph)))
    ops_file.write_text(json.dumps(run(0, graph) + run(1000, graph) + run(2000, graph)))
    result = {"backend": {"requested": ["CUDAExecutionProvider", "CPUExecutionProvider"]}, "placement": None,
              "ops": {"source": "onnxruntime-profiler", "unavailable": None, "latency_ns": [9000, 9100], "nodes": []},
              "profile_files": {"placement": str(placement_file), "ops": str(ops_file)}}
    read_profiles(result)
    assert "profile_files" not in result and not placement_file.exists() and not ops_file.exists()
    assert result["placement"]["first_choice"] == "CUDAExecutionProvider"
    assert [(n["name"], n["backend"], n["partition"]) for n in result["placement"]["nodes"]] == \
        [("conv", "CUDAExecutionProvider", 0), ("softmax", "CPUExecutionProvider", 1)]
    assert result["ops"]["nodes"] == [  # the last two runs: the first was the profiler's warm-up
        {"name": "conv", "op": "Conv", "backend": "CUDAExecutionProvider", "duration_ns": [5000, 5000]},
        {"name": "softmax", "op": "Softmax", "backend": "CPUExecutionProvider", "duration_ns": [2000, 2000]}]
