"""Drift against a reference model in fleet jobs (``edgebench push --reference``): real Mosquitto, influxd, collector
and agent processes. The reference travels as a sha256 only, is fetched through the agent's model cache, and the
drift (edgebench.agent.optimize.compare) lands in InfluxDB next to the benchmark's result; a reference that cannot be
compared still stores the benchmark's result, with the reason as ``drift_error``."""

from __future__ import annotations

import json
import math

import pytest

from edgebench.agent.fleet import protocol as p

from ..conftest import save_onnx
from .conftest import FAST

SHA = "ab" * 32


def two_input_model(path):
    """z = x + y: a reference with two inputs, which no one-input model can be compared with."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"])], "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_push_with_a_reference_writes_drift_and_keeps_results_it_cannot_compare(fleet, tiny_onnx, cli, tmp_path):
    collector = fleet.start_collector()
    fleet.start_agent("board-a", "class=x86")
    reference, _, _ = tiny_onnx(seed=3, name="linear_fp32.onnx")
    candidate, _, _ = tiny_onnx(seed=3, name="linear_noisy.onnx", noise=0.3)
    out = tmp_path / "push.json"
    result = cli("push", candidate, "--reference", reference, "--server", collector.url, "--token", collector.token,
                 "--devices", "board-a",
                 "--shape", "x=1x8", "--no-sensors", *FAST, "--wait", "--wait-timeout", "120", "--json", str(out),
                 timeout=180)
    assert result.code == 0, result
    rows = json.loads(out.read_text())["rows"]
    assert [row["state"] for row in rows] == ["done"]
    drift = rows[0]["drift"]
    assert drift["samples"] == p.DRIFT_SAMPLES and 0 < drift["max_abs_err"] < 1 and 0.5 < drift["cosine_mean"] < 1
    assert 0 <= drift["top1_agreement"] <= 1 and "error" not in drift  # a softmax: class probabilities

    point = fleet.wait_results(1)[0]
    assert point["reference"] == drift["reference_sha"][:12]
    assert point["model_size_bytes"] == candidate.stat().st_size
    assert math.isclose(point["drift_max_abs_err"], drift["max_abs_err"])
    assert math.isclose(point["drift_mean_abs_err"], drift["mean_abs_err"])
    assert math.isclose(point["drift_cosine"], drift["cosine_mean"])
    assert math.isclose(point["drift_top1_agreement"], drift["top1_agreement"])
    assert point["drift_samples"] == p.DRIFT_SAMPLES and point.get("drift_error") is None

    # A reference with two inputs: the benchmark's result is stored all the same, with the reason it has no drift.
    mismatched = two_input_model(tmp_path / "two_inputs.onnx")
    out = tmp_path / "push-mismatch.json"
    result = cli("push", candidate, "--reference", mismatched, "--server", collector.url, "--token",
                 collector.token, "--devices", "board-a",
                 "--shape", "x=1x8", "--no-sensors", *FAST, "--wait", "--wait-timeout", "120", "--json", str(out),
                 timeout=180)
    assert result.code == 0, result
    rows = json.loads(out.read_text())["rows"]
    assert [row["state"] for row in rows] == ["done"] and rows[0]["p50_ms"] > 0
    assert "different numbers of inputs" in rows[0]["drift"]["error"]
    points = fleet.wait_results(2)
    point = next(pt for pt in points if pt["job_id"] == rows[0]["job_id"])
    assert point["p50_ms"] > 0 and "different numbers of inputs" in point["drift_error"]
    assert point["drift_max_abs_err"] is None and point["reference"] == rows[0]["drift"]["reference_sha"][:12]


def test_push_with_its_reference_says_which_variant_to_ship_per_board_class(fleet, tiny_onnx, cli, tmp_path):
    """The reference pushed among the models: each board's jobs are judged as `variants` judges one machine, and the
    boards of one class that agree give one line."""
    collector = fleet.start_collector()
    fleet.start_agent("board-a", "class=x86")
    fleet.start_agent("board-b", "class=x86")
    reference, _, _ = tiny_onnx(seed=3, name="linear_fp32.onnx")
    noisy, _, _ = tiny_onnx(seed=3, name="linear_noisy.onnx", noise=0.3)
    out = tmp_path / "push.json"
    result = cli("push", reference, noisy, "--reference", reference, "--server", collector.url, "--token",
                 collector.token, "--devices", "class=x86", "--shape", "x=1x8", "--no-sensors", *FAST, "--repeats",
                 "2", "--wait", "--wait-timeout", "180", "--json", str(out), timeout=240)
    assert result.code == 0, result
    document = json.loads(out.read_text())
    verdicts = document["recommendations"]
    assert sorted(v["device"] for v in verdicts) == ["board-a", "board-b"]
    for verdict in verdicts:
        assert verdict["class"] == "x86"
        # cosine of the noisy model against the reference, as measured on that board, decides its budget
        drift = next(row["drift"] for row in document["rows"]
                     if row["device"] == verdict["device"] and row["model"] == "linear_noisy.onnx")
        within = drift["cosine_mean"] >= 0.99
        assert verdict["within_budgets"] == (["linear_noisy.onnx"] if within else [])
        assert verdict["variant"] in ("linear_fp32.onnx", "linear_noisy.onnx")
    lines = [line for line in result.out.splitlines() if line.startswith(("class x86", "board-a:", "board-b:"))]
    if len({v["variant"] for v in verdicts}) == 1:
        assert lines == [f"class x86 (2 boards): {verdicts[0]['line']}"]
    else:
        assert sorted(lines) == sorted(f"{v['device']}: {v['line']}" for v in verdicts)


def test_a_job_names_its_reference_by_sha256_only():
    job = {"job_id": "j1", "model": {"sha256": SHA, "size_bytes": 10}}
    p.check_job(dict(job, reference="cd" * 32))
    for bad in ("../../etc/passwd", "http://example.com/model.onnx", {"sha256": SHA}, "AB" * 32):
        with pytest.raises(p.ProtocolError):
            p.check_job(dict(job, reference=bad))


@pytest.mark.parametrize("drift,ok", [
    ({"max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 0.99, "top1_agreement": 1.0, "samples": 8,
      "reference_sha": SHA}, True),
    ({"max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 0.99, "samples": 8, "reference_sha": SHA}, True),
    ({"error": "the models have different numbers of inputs", "reference_sha": SHA}, True),
    ({"max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 0.99, "samples": 8}, False),  # no reference
    ({"max_abs_err": -1, "mean_abs_err": 0.01, "cosine_mean": 0.99, "samples": 8, "reference_sha": SHA}, False),
    ({"max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 2.0, "samples": 8, "reference_sha": SHA}, False),
    ({"max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 0.9, "samples": 8, "reference_sha": SHA,
      "outputs": [1.0] * 1000}, False),  # unknown keys: the event stays small
    ({"error": "x" * 3000, "reference_sha": SHA}, False),
])
def test_result_drift_is_validated(drift, ok):
    payload = {"event": "result", "job_id": "j1", "run_id": "j1", "drift": drift,
               "summary": {"stats": {"count": 5, "p50_ms": 1.0}, "model": {}, "runtime": {}}}
    if ok:
        p._events(payload)
    else:
        with pytest.raises(p.ProtocolError):
            p._events(payload)
