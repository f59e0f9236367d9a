"""Where the nodes ran (placement) and where the time goes (--profile-ops), on the real models, checked against an
independent count of each model's own op list: the .tflite flatbuffer's operators (LiteRT's schema module), ONNX
Runtime's optimised graph saved to a file and read back with onnx."""

from __future__ import annotations

import csv
import json
from collections import Counter

import jsonschema
import pytest

from edgebench.agent.engine import ops
from edgebench.agent.engine.report import SCHEMA_FILE
from edgebench.agent.errors import EXIT_PLACEMENT, EXIT_USAGE

from .conftest import FAST

pytestmark = pytest.mark.slow
QUIET = [*FAST, "--no-sensors", "--history", "off", "-q"]
CLS_SHAPE = ["--shape", "x=1x3x48x192"]


def tflite_op_types(path) -> Counter:
    """The model's operators by type, read from the flatbuffer itself (no interpreter, no delegate)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = (model.OperatorCodes(graph.Operators(i).OpcodeIndex()) for i in range(graph.OperatorsLength()))
    return Counter(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())] for code in codes)


def ort_optimized_op_types(path, tmp_path) -> Counter:
    """The nodes of ONNX Runtime's optimised graph (what the session runs), saved by ONNX Runtime and read by onnx."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def bench(cli, tmp_path, model, *flags, name="r.json"):
    result = cli("bench", model, *QUIET, *flags, "--json", tmp_path / name)
    report = json.loads((tmp_path / name).read_text()) if (tmp_path / name).exists() else None
    if report is not None:
        jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    return result, report


def test_litert_placement_matches_the_models_op_list(cli, models, tmp_path):
    path = models["efficientnet_lite0_int8.tflite"]
    result, report = bench(cli, tmp_path, path)
    assert result.code == 0, result
    placement = report["placement"]
    expected = tflite_op_types(path)
    assert placement["nodes"] == sum(expected.values())
    assert Counter(node["op"] for node in placement["per_node"]) == expected
    on_xnnpack = [node for node in placement["per_node"] if node["backend"] == "xnnpack"]
    assert placement["first_choice"] == "xnnpack"
    assert placement["coverage"] == pytest.approx(len(on_xnnpack) / placement["nodes"])
    assert sum(b["nodes"] for b in placement["backends"]) == placement["nodes"]
    # Every node the delegate left is counted under its op type, and only those.
    left = Counter(node["op"] for node in placement["per_node"] if node["backend"] != "xnnpack")
    assert {item["op"]: item["count"] for item in placement["fallback_ops"]} == dict(left)
    xnnpack = next(b for b in placement["backends"] if b["name"] == "xnnpack")
    assert xnnpack["partitions"] == len({node["partition"] for node in on_xnnpack})
    # The report also says how sparse the weights are (engine/weights.py, read by the parent from the file).
    from edgebench.agent.engine.weights import weight_sparsity

    expected_weights = weight_sparsity(path, "tflite")
    assert {k: report["weights"][k] for k in expected_weights} == expected_weights
    assert report["weights"]["xnnpack_sparse"]["possible"] is False
    assert f"weights   {expected_weights['weights'] / 1e6:.3g} M weights (int8)" in cli(
        "bench", path, *FAST, "--no-sensors", "--history", "off").out


def test_litert_builtin_kernels_take_every_node(cli, models, tmp_path):
    path = models["deeplabv3.tflite"]
    result, report = bench(cli, tmp_path, path, "--delegate", "cpu", "--require-delegate")
    assert result.code == 0, result
    placement = report["placement"]
    assert placement["nodes"] == sum(tflite_op_types(path).values())
    assert placement["coverage"] == 1.0 and placement["fallback_ops"] == []
    assert placement["backends"] == [{"name": "cpu", "nodes": placement["nodes"], "partitions": 1}]


def test_require_delegate_fails_a_run_the_delegate_did_not_fully_take(cli, models, tmp_path):
    path = models["efficientnet_lite0_int8.tflite"]
    result, report = bench(cli, tmp_path, path, "--require-delegate")
    coverage = report["placement"]["coverage"]
    if coverage == 1.0:
        pytest.skip("this LiteRT's XNNPACK takes every node of the model")
    assert result.code == EXIT_PLACEMENT, result
    assert report is not None  # the run's report is written before the verdict
    (line,) = result.err.strip().splitlines()
    assert "--require-delegate: xnnpack took" in line and f"{coverage:.1%}" in line
    passing, _ = bench(cli, tmp_path, path, "--require-delegate", "--min-coverage", f"{coverage:.4f}", name="p.json")
    assert passing.code == 0, passing


@pytest.mark.parametrize("flags, needs", [(["--min-coverage", "0.5"], "--require-delegate"),
                                          (["--ops-csv", "x.csv"], "--profile-ops")])
def test_flags_that_need_another(cli, models, tmp_path, flags, needs):
    result = cli("bench", models["sine_float.tflite"], *QUIET, *flags)
    assert result.code == EXIT_USAGE and needs in result.err


def test_onnxruntime_profile_explains_the_run(cli, models, tmp_path):
    path = models["ppocr_cls.onnx"]
    runs = 12
    result, report = bench(cli, tmp_path, path, *CLS_SHAPE, "--profile-ops", "--profile-runs", str(runs),
                           "--ops-csv", tmp_path / "ops.csv")
    assert result.code == 0, result
    placement, profile = report["placement"], report["ops"]
    expected = ort_optimized_op_types(path, tmp_path)
    assert placement["nodes"] == sum(expected.values())
    assert Counter(node["op"] for node in placement["per_node"]) == expected
    assert placement["coverage"] == 1.0 and placement["first_choice"] == "CPUExecutionProvider"
    # Every node of the graph has a time in every profiled run, from ONNX Runtime's own events.
    assert profile["source"] == "onnxruntime-profiler" and profile["runs"] == runs
    assert {node["name"] for node in profile["nodes"]} == {node["name"] for node in placement["per_node"]}
    assert all(node["runs"] == runs for node in profile["nodes"])
    total = sum(node["mean_us"] for node in profile["nodes"])
    assert profile["sum_ms"] == pytest.approx(total / 1e3)
    assert sum(entry["total_us"] for entry in profile["by_type"]) == pytest.approx(total)
    assert sum(entry["count"] for entry in profile["by_type"]) == placement["nodes"]
    assert [n["mean_us"] for n in profile["top"]] == sorted((n["mean_us"] for n in profile["nodes"]),
                                                            reverse=True)[:ops.TOP]
    assert profile["measured_p50_ms"] == report["stats"]["p50_ms"]
    assert profile["overhead"] == pytest.approx(profile["profiled_p50_ms"] / profile["measured_p50_ms"])
    # The profiled runs never enter the latency figures.
    assert report["stats"]["count"] == report["timing"]["measured"]["runs"]
    with open(tmp_path / "ops.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == [node["name"] for node in profile["nodes"]]
    assert float(rows[0]["mean_us"]) == pytest.approx(profile["nodes"][0]["mean_us"], abs=1e-3)


def test_profile_ops_on_a_runtime_without_a_profiler_says_why(cli, models, tmp_path):
    result, report = bench(cli, tmp_path, models["sine_float.tflite"], "--profile-ops")
    assert result.code == 0, result
    assert report["ops"]["source"] is None and "--runtime native" in report["ops"]["unavailable"]
    assert report["placement"]["nodes"] == 3


def test_the_terminal_shows_the_placement_line_and_the_top_ops(cli, models, tmp_path):
    result = cli("bench", models["ppocr_cls.onnx"], *FAST, *CLS_SHAPE, "--no-sensors", "--history", "off",
                 "--profile-ops", "--profile-runs", "5", "--json", tmp_path / "r.json")
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    nodes = report["placement"]["nodes"]
    assert f"placement CPU: {nodes}/{nodes} nodes in 1 partition" in result.out
    slowest = report["ops"]["top"][0]
    assert any(line.strip().startswith(slowest["name"][:48]) for line in result.out.splitlines())


# ---------------------------------------------------------------- the counting itself, on given node lists

def raw_node(name, op, backend, partition):
    return {"name": name, "op": op, "backend": backend, "partition": partition}


def test_summarize_placement_counts_backends_partitions_and_fallbacks():
    raw = {"source": "test", "first_choice": "gpu", "nodes": [
        raw_node("a", "CONV_2D", "gpu", 0), raw_node("b", "RESIZE_BILINEAR", "cpu", 1),
        raw_node("c", "CONV_2D", "gpu", 2), raw_node("d", "RESIZE_BILINEAR", "cpu", 3),
        raw_node("e", "ADD", "gpu", 2)]}
    placement = ops.summarize_placement(raw)
    assert placement["coverage"] == pytest.approx(3 / 5)
    assert placement["backends"] == [{"name": "gpu", "nodes": 3, "partitions": 2},
                                     {"name": "cpu", "nodes": 2, "partitions": 2}]
    assert placement["fallback_ops"] == [{"op": "RESIZE_BILINEAR", "backend": "cpu", "count": 2}]
    from edgebench.agent.engine.report import placement_line

    assert placement_line(placement) == "gpu: 3/5 nodes in 2 partitions; cpu: RESIZE_BILINEAR x2"


def test_a_first_choice_that_took_nothing_has_coverage_zero():
    raw = {"source": "test", "first_choice": "gpu", "nodes": [raw_node("a", "CONV_2D", "xnnpack", 0)]}
    assert ops.summarize_placement(raw)["coverage"] == 0.0


def test_summarize_ops_pools_repeats_by_node():
    first = {"source": "p", "unavailable": None, "latency_ns": [1000_000, 1200_000],
             "nodes": [{"name": "a", "op": "Conv", "backend": "CPU", "duration_ns": [600_000, 700_000]},
                       {"name": "b", "op": "Add", "backend": "CPU", "duration_ns": [300_000, 300_000]}]}
    second = {"source": "p", "unavailable": None, "latency_ns": [1100_000],
              "nodes": [{"name": "a", "op": "Conv", "backend": "CPU", "duration_ns": [800_000]},
                        {"name": "b", "op": "Add", "backend": "CPU", "duration_ns": [300_000]}]}
    summary = ops.summarize_ops([first, second], measured_p50_ms=0.5)
    assert summary["runs"] == 3
    a = next(node for node in summary["nodes"] if node["name"] == "a")
    assert a["mean_us"] == pytest.approx(700.0) and a["median_us"] == pytest.approx(700.0) and a["runs"] == 3
    assert summary["sum_ms"] == pytest.approx(1.0)
    assert summary["accounted"] == pytest.approx(1.0 / 1.1)
    assert summary["overhead"] == pytest.approx(1.1 / 0.5)
    assert [entry["op"] for entry in summary["by_type"]] == ["Conv", "Add"]
    assert summary["by_type"][0]["share"] == pytest.approx(0.7)
    assert summary["per_node_cost_us"] == pytest.approx((1.1 - 0.5) * 1e3 / 2)
    # 91% of the end-to-end time is accounted for: only the profiler's cost is noted.
    assert summary["note"].startswith("profiling made an inference 2.20x slower, about 300.0 µs per node")
    summary = ops.summarize_ops([first, second], measured_p50_ms=1.05)
    assert summary["note"] is None


def test_a_provider_that_is_not_there_fails_require_delegate(cli, models, tmp_path):
    """The user story of issue 14: ``--providers CUDA`` on a CPU build ran on the CPU with exit 0."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    result, report = bench(cli, tmp_path, models["ppocr_cls.onnx"], *CLS_SHAPE, "--providers", "CUDA",
                           "--require-delegate")
    assert result.code == EXIT_PLACEMENT, result
    placement = report["placement"]
    assert placement["first_choice"] == "CUDAExecutionProvider" and placement["coverage"] == 0.0
    assert sum(item["count"] for item in placement["fallback_ops"]) == placement["nodes"]
    assert "CUDAExecutionProvider took 0.0% of the nodes" in result.err
