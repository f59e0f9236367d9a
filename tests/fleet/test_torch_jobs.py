"""PyTorch models on the fleet: a TorchScript model and an ExecuTorch program pushed as jobs, run by a real agent,
their results in InfluxDB under their runtime; a model no runtime of the job can run is refused at submission."""

from __future__ import annotations

import json
import urllib.error

import pytest


def _submit(fleet, model: dict, device: str, **options) -> dict:
    batch = fleet.submit([model["sha256"]], {"ids": [device]}, **options)
    (job,) = fleet.wait_jobs(batch["batch_id"], timeout=180)
    assert job["state"] == "done", job
    (result,) = fleet.collector.get(f"/api/v1/results?batch={batch['batch_id']}")["results"]
    return result


def test_torchscript_and_executorch_jobs_reach_influxdb_under_their_runtime(fleet, models):
    fleet.start_collector()
    fleet.start_agent("torch-board", "class=x86")
    silero = fleet.upload(models["silero_vad.jit"])
    minilm = fleet.upload(models["minilm_l6_fp32.pte"])
    assert (silero["format"], minilm["format"]) == ("torchscript", "pte")
    # Silero's forward(x, sr): a 16 kHz chunk of 512 samples and the sample rate, as a job's generated inputs
    vad = _submit(fleet, silero, "torch-board", shape=["x=1x512"], input=["sr=16000"])
    embedding = _submit(fleet, minilm, "torch-board")
    assert vad["summary"]["runtime"]["runtime"] == "torchscript"
    assert embedding["summary"]["runtime"]["runtime"] == "executorch"
    rows = fleet.wait_results(2)
    by_runtime = {row["runtime"]: row for row in rows}
    assert set(by_runtime) == {"torchscript", "executorch"}
    assert by_runtime["executorch"]["model"] == "minilm_l6_fp32.pte"
    assert by_runtime["torchscript"]["model"] == "silero_vad.jit"
    assert all(row["p50_ms"] > 0 for row in rows)


def test_a_model_its_runtime_cannot_run_is_refused_before_any_board_gets_it(fleet, models, cli):
    collector = fleet.start_collector()
    fleet.start_agent("torch-board-2", "class=x86")
    push = ("push", "--server", collector.url, "--token", collector.token, "--devices", "class=x86")
    source = cli(*push[:1], models["minilm_l6.pt2"], *push[1:])
    assert source.code != 0 and len(source.err.strip().splitlines()) == 1, source
    assert "minilm_l6.pt2: a pt2 model is not run as it is: make ExecuTorch programs" in source.err
    mismatch = cli(*push[:1], models["silero_vad.jit"], *push[1:], "--runtime", "litert")
    assert mismatch.code != 0 and "runtime litert cannot run torchscript models" in mismatch.err, mismatch
    # the collector refuses it too, for clients that skip the CLI's check
    source = fleet.upload(models["minilm_l6.pt2"])
    with pytest.raises(urllib.error.HTTPError) as refused:
        fleet.submit([source["sha256"]], {"ids": ["torch-board-2"]})
    assert refused.value.code == 400 and "not run as it is" in json.loads(refused.value.read())["error"]
    assert fleet.collector.get("/api/v1/jobs")["jobs"] == []
