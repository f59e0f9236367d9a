"""``edgebench diff A.json B.json`` on real reports: a float model and its static int8 variant benchmarked together
(interleaved, --profile-ops), the float model alone without --profile-ops, and a LiteRT model with and without
XNNPACK. Every number the diff states is recomputed here from the two reports it read; bad input is one line and
exit 2."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import jsonschema
import numpy as np
import pytest

from edgebench.agent.engine import diff
from edgebench.agent.engine.bench import speedup
from edgebench.agent.engine.ops import short_backend
from edgebench.agent.engine.report import SCHEMA_FILE, fmt_latency, fmt_ratio, human_bytes, latency_unit
from edgebench.agent.errors import EXIT_USAGE

from .conftest import run_cli

pytestmark = pytest.mark.slow
SMALL = ["--repeats", "2", "--min-runs", "30", "--min-duration", "0", "--warmup-runs", "2", "--no-sensors",
         "--history", "off", "-q"]
CLS_SHAPE = ["--shape", "x=1x3x48x192"]


def static_int8(source, folder):
    """The static int8 (QDQ) variant exactly as `edgebench variants` makes it, calibrated on two generated sets."""
    from edgebench.agent.optimize.makers import onnx_variants

    with onnx_variants.quiet_libraries():
        prepared, _ = onnx_variants.preprocess(source, folder / "prepared.onnx")
        rng = np.random.default_rng(0)
        sets = [{"x": rng.random((1, 3, 48, 192), dtype=np.float32)} for _ in range(2)]
        onnx_variants.make_static_int8(prepared, folder / "cls_int8.onnx", sets)
    return folder / "cls_int8.onnx"


@pytest.fixture(scope="module")
def reports(models, tmp_path_factory) -> dict:
    """Report paths: float/int8 (one run, interleaved, profiled), plain (float, its own run, no --profile-ops),
    xnnpack/cpu (EfficientNet-Lite0 int8 with and without XNNPACK: LiteRT has placement but no per-op times)."""
    root = tmp_path_factory.mktemp("diff")
    cls, effnet = models["ppocr_cls.onnx"], models["efficientnet_lite0_int8.tflite"]
    int8 = static_int8(cls, root)
    runs = [
        ["bench", int8, "--baseline-model", cls, "--baseline-json", root / "float.json", "--json", root / "int8.json",
         *CLS_SHAPE, "--profile-ops"],
        ["bench", cls, *CLS_SHAPE, "--json", root / "plain.json"],
        ["bench", effnet, "--json", root / "xnnpack.json", "--profile-ops"],
        ["bench", effnet, "--delegate", "cpu", "--json", root / "cpu.json"],
    ]
    for argv in runs:
        result = run_cli(*argv, *SMALL)
        assert result.code == 0, result
    schema = json.loads(SCHEMA_FILE.read_text())
    paths = {name: root / f"{name}.json" for name in ("float", "int8", "plain", "xnnpack", "cpu")}
    for path in paths.values():
        jsonschema.validate(json.loads(path.read_text()), schema)
    return paths


def load(path) -> dict:
    return json.loads(path.read_text())


def run_diff(a, b, *flags, tmp_path=None):
    """The diff's text (stdout) and its document (--json FILE), from one run."""
    out = tmp_path / "diff.json"
    result = run_cli("diff", a, b, "--json", out, *flags)
    assert result.code == 0 and not result.err, result
    return result.out, json.loads(out.read_text())


def by_family(report: dict) -> dict:
    totals: dict = defaultdict(lambda: [0.0, 0])
    for row in report["ops"]["by_type"]:
        totals[diff.family(row["op"])][0] += row["total_us"]
        totals[diff.family(row["op"])][1] += row["count"]
    return totals


def test_float_against_int8(reports, tmp_path):
    a, b = load(reports["float"]), load(reports["int8"])
    text, document = run_diff(reports["float"], reports["int8"], "--top", "0", tmp_path=tmp_path)
    assert document["schema"] == "edgebench.diff/1"
    assert document["a"]["file"] == str(reports["float"]) and document["b"]["model"]["name"] == "cls_int8.onnx"
    assert document["same_model"] is False
    assert "two different models: A is ppocr_cls.onnx, B is cls_int8.onnx" in text

    for name, report in (("A", a), ("B", b)):
        assert (report["validity"]["valid"] or
                f"{name} is NOT VALID: {'; '.join(report['validity']['reasons'])}" in document["notes"])

    # latency: each percentile of each report, and B's speed-up over A from bench.speedup (paired: interleaved)
    unit, scale = latency_unit(a["stats"]["p50_ms"])
    assert f"latency ({unit})" in text
    for row in document["latency"]:
        metric = row["metric"]
        assert (row["a"], row["b"]) == (a["stats"][metric], b["stats"][metric])
        assert math.isclose(row["change_pct"], (b["stats"][metric] / a["stats"][metric] - 1) * 100)
        assert row["speedup"] == speedup(a, b, metric)
        assert row["speedup"]["method"] == "paired t on log"
        line = next(line for line in text.splitlines() if line.startswith(metric[:-3] + " "))
        assert line.split()[1:3] == [fmt_latency(a["stats"][metric], scale), fmt_latency(b["stats"][metric], scale)]
        assert line.endswith(fmt_ratio(row["speedup"]))

    # memory and model size
    for key in diff.MEMORY:
        assert document["memory"][key]["a"] == a["memory"][key] and document["memory"][key]["b"] == b["memory"][key]
    size = document["model_size"]
    assert (size["a"], size["b"], size["change"]) == (a["model"]["size_bytes"], b["model"]["size_bytes"],
                                                      b["model"]["size_bytes"] - a["model"]["size_bytes"])
    line = next(line for line in text.splitlines() if line.startswith("model size "))
    assert line.index(human_bytes(size["a"])) < line.index(human_bytes(size["b"]), len("model size ") + 1), line
    line = next(line for line in text.splitlines() if line.startswith("peak RSS measuring "))
    assert human_bytes(a["memory"]["peak_steady_bytes"]) in line and human_bytes(b["memory"]["peak_steady_bytes"]) \
        in line, line

    # placement: both on the CPU provider, every node
    placement = document["placement"]
    assert placement["backends"] == [{"name": "CPUExecutionProvider", "a_nodes": a["placement"]["nodes"],
                                      "b_nodes": b["placement"]["nodes"], "a_partitions": 1, "b_partitions": 1}]
    assert "fell back: nothing in either" in text

    # per-op time by op type: each family's per-run total from each report's by_type, the change, the order
    ops = document["ops"]
    fam_a, fam_b = by_family(a), by_family(b)
    assert {row["op"] for row in ops["by_type"]} == set(fam_a) | set(fam_b)
    for row in ops["by_type"]:
        a_us, a_count = fam_a.get(row["op"], (None, 0))
        b_us, b_count = fam_b.get(row["op"], (None, 0))
        assert (row["a_us"], row["b_us"], row["a_count"], row["b_count"]) == (a_us, b_us, a_count, b_count)
        assert math.isclose(row["change_us"], (b_us or 0) - (a_us or 0), abs_tol=1e-9)
        assert row["status"] == ("changed" if a_us is not None and b_us is not None else "new" if a_us is None
                                 else "gone")
    changes = [abs(row["change_us"]) for row in ops["by_type"]]
    assert changes == sorted(changes, reverse=True)
    assert math.isclose(ops["total"]["a_us"], sum(r["total_us"] for r in a["ops"]["by_type"]))
    assert math.isclose(ops["total"]["b_us"], sum(r["total_us"] for r in b["ops"]["by_type"]))

    # the QDQ model's Conv runs as QLinearConv (one row), and its DequantizeLinear is new
    conv = next(row for row in ops["by_type"] if row["op"] == "Conv")
    assert "QLinearConv" in conv["b_ops"] and "QLinearConv" not in fam_b
    dequantize = next(row for row in ops["by_type"] if row["op"] == "DequantizeLinear")
    assert dequantize["status"] == "new" and dequantize["a_us"] is None
    op_unit, op_scale = latency_unit(max(ops["total"]["a_us"], ops["total"]["b_us"]) / 1e3)
    line = next(line for line in text.splitlines() if line.startswith("DequantizeLinear "))
    assert line.endswith(f"+{fmt_latency(dequantize['b_us'] / 1e3, op_scale)} {op_unit} new"), line
    conv_line = next(line for line in text.splitlines() if line.startswith(f"{'+'.join(conv['a_ops'])} -> "))
    assert conv_line.endswith(f"({conv['change_pct']:+.0f}%)"), conv_line

    # both reports' profiling cost
    for name, report in (("A", a), ("B", b)):
        assert (f"profiled  {name}: {report['ops']['runs']} runs [onnxruntime-profiler]" in text
                and f"{report['ops']['overhead']:.2f}x the measured p50" in text), text
        assert document["ops"][name.lower()]["overhead"] == report["ops"]["overhead"]


def test_json_to_stdout_is_the_document_alone(reports, tmp_path):
    _, document = run_diff(reports["float"], reports["int8"], tmp_path=tmp_path)
    result = run_cli("diff", reports["float"], reports["int8"], "--json", "-")
    assert result.code == 0, result
    printed = result.json()
    assert {**printed, "created": None} == {**document, "created": None}


def test_unpaired_runs_and_a_side_without_times(reports, tmp_path):
    """Two runs measured apart: Welch's interval on the repeats' values; the plain run has no per-op times."""
    a, b = load(reports["plain"]), load(reports["float"])
    text, document = run_diff(reports["plain"], reports["float"], tmp_path=tmp_path)
    assert document["same_model"] is True and "two different models" not in text
    for row in document["latency"]:
        assert row["speedup"] == speedup(a, b, row["metric"]) and row["speedup"]["method"] == "Welch t on log"
    assert document["ops"]["unavailable"] == {"a": "run bench with --profile-ops", "b": None}
    assert document["ops"]["by_type"] == [] and document["ops"]["b"]["runs"] == b["ops"]["runs"]
    ops_lines = [line for line in text.splitlines() if line.startswith("ops ")]
    assert ops_lines == ["ops       no per-op times in A: run bench with --profile-ops"]


def test_litert_with_and_without_xnnpack(reports, tmp_path):
    """Same model, two placements: the op types XNNPACK left to the CPU kernels fell back in A only; LiteRT's Python
    interpreter has no per-op times, and the diff says why in one line."""
    a, b = load(reports["xnnpack"]), load(reports["cpu"])
    text, document = run_diff(reports["xnnpack"], reports["cpu"], tmp_path=tmp_path)
    placement = document["placement"]
    assert placement["a"]["coverage"] == a["placement"]["coverage"] < 1
    assert placement["b"]["first_choice"] == b["placement"]["first_choice"] == "cpu"
    for side, report in (("a", a), ("b", b)):
        nodes = {row["name"]: row[f"{side}_nodes"] for row in placement["backends"] if row[f"{side}_nodes"]}
        assert nodes == {x["name"]: x["nodes"] for x in report["placement"]["backends"]}
    fell_b = {(f["op"], f["backend"]) for f in b["placement"]["fallback_ops"]}
    assert placement["fallback_only_a"] == [f for f in a["placement"]["fallback_ops"]
                                            if (f["op"], f["backend"]) not in fell_b]
    first = placement["fallback_only_a"][0]
    assert f"fell back in A only: {first['op']} x{first['count']} ({short_backend(first['backend'])})" in text
    assert f"coverage {a['placement']['coverage']:.0%}" in text
    assert document["ops"]["unavailable"]["a"] == a["ops"]["unavailable"]
    assert document["ops"]["unavailable"]["b"] == "run bench with --profile-ops"
    assert f"ops       no per-op times in A: {a['ops']['unavailable']}" in text.splitlines()


def test_a_version_1_report(reports, tmp_path):
    """A report from before repeats and placement: the bare ratio of the two p50s, no interval; says so."""
    old = load(reports["plain"])
    old["schema"] = "edgebench.bench/1"
    for key in ("repeats", "placement", "ops"):
        old.pop(key, None)
    del old["stats"]["interval"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    new = load(reports["float"])
    text, document = run_diff(path, reports["float"], tmp_path=tmp_path)
    p50 = document["latency"][0]
    assert p50["speedup"] == {"metric": "p50_ms", "estimate": old["stats"]["p50_ms"] / new["stats"]["p50_ms"],
                              "ci": None, "method": None}
    assert "no interval: a report has no per-repeat values" in text, text
    assert "placement A: none in the report" in text and document["placement"]["a"] is None


def test_op_families():
    assert [diff.family(op) for op in ("QLinearConv", "ConvInteger", "FusedConv", "QGemm", "FusedMatMul",
                                       "MatMulInteger", "QLinearGlobalAveragePool", "DequantizeLinear",
                                       "QuantizeLinear", "DynamicQuantizeLinear", "CONV_2D", "Fused")] == [
        "Conv", "Conv", "Conv", "Gemm", "MatMul", "MatMul", "GlobalAveragePool", "DequantizeLinear",
        "QuantizeLinear", "DynamicQuantizeLinear", "CONV_2D", "Fused"]


def _malformed(report: dict) -> dict:
    report["stats"]["interval"]["p50_ms"]["per_unit"][0] = -1
    return report


@pytest.mark.parametrize(("name", "content", "says"), [
    ("missing", None, "not found"),
    ("directory", "DIR", "is not a regular file (it is a directory)"),
    ("text", "not json at all\n", ": not JSON ("),
    ("binary", b"\x00\xff\xfe\x00", ": not JSON (not UTF-8 text"),
    ("list", "[1, 2]", "not an edgebench bench report (a JSON list, not an object)"),
    ("compare", '{"schema": "edgebench.compare/1"}', "not an edgebench bench report (schema 'edgebench.compare/1'"),
    ("variants", '{"schema": "edgebench.variants/2", "variants": []}', "variants[i].report"),
    ("no schema", '{"model": {}}', "not an edgebench bench report (schema None"),
    ("no stats", lambda r: {k: v for k, v in r.items() if k != "stats"}, "(no 'stats' field)"),
    ("string p90", lambda r: {**r, "stats": {**r["stats"], "p90_ms": "fast"}}, "(stats.p90_ms is not a number)"),
    ("negative unit", _malformed, "stats.interval.p50_ms.per_unit holds values that are not finite positive"),
])
def test_bad_report_is_one_line_and_exit_2(reports, tmp_path, name, content, says):
    path = tmp_path / "bad.json"
    if content == "DIR":
        path.mkdir()
    elif callable(content):
        path.write_text(json.dumps(content(load(reports["plain"]))))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for argv in ((path, reports["plain"]), (reports["plain"], path)):
        result = run_cli("diff", *argv)
        assert result.code == EXIT_USAGE, result
        assert result.err.startswith(f"edgebench: error: report {path}") and says in result.err, result
        assert len(result.err.splitlines()) == 1 and not result.out, result


def test_an_unwritable_json_is_refused_before_reading(reports, tmp_path):
    result = run_cli("diff", reports["plain"], reports["float"], "--json", tmp_path / "no" / "d.json")
    assert result.code == EXIT_USAGE and "--json" in result.err and len(result.err.splitlines()) == 1, result


def test_the_header_names_what_else_differs(reports, tmp_path):
    """Notes for what can move the numbers besides what is compared; none for two runs of one configuration."""
    def notes(text):  # the short runs here are not valid (too few samples for p99): those notes aside
        return [line for line in text.splitlines() if line.startswith("note ") and "NOT VALID" not in line]

    text, document = run_diff(reports["plain"], reports["float"], tmp_path=tmp_path)
    assert notes(text) == [] and all("NOT VALID" in note for note in document["notes"])
    other = load(reports["plain"])
    other["inputs_fed"][0]["shape"] = [1, 3, 48, 320]
    other["runtime"]["threads"] = 4
    other["device"]["hostname"] = "another-board"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    text, document = run_diff(reports["plain"], path, tmp_path=tmp_path)
    host = load(reports["plain"])["device"]["hostname"]
    assert notes(text) == [
        "note  different thread counts: A default, B 4",
        "note  different inputs: A was fed x 1x3x48x192, B x 1x3x48x320",
        f"note  measured on different machines: A on {host} ({other['device']['cpu']}), B on another-board "
        f"({other['device']['cpu']})"]
    assert document["b"]["inputs"] == ["x 1x3x48x320"]
