"""End to end: real Mosquitto, influxd, collector and agent processes, a real model, the engineers' CLI."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from edgebench.agent.fleet import protocol as p

from .conftest import FAST, assert_exactly_once
from .services import wait_for


def mqtt_publish(port: int, topic: str, payload: bytes, qos: int = 1, username=None, password=None,
                 client_id: str = "test-publisher"):
    """Publish one message with a v5 client; returns the PUBACK reason code."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    codes = []
    client.on_publish = lambda c, u, mid, reason, props: codes.append(reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        wait_for(lambda: codes or qos == 0, 10, "PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0] if codes else None


def test_push_wait_prints_the_fleet_comparison(fleet, sine_model, cli, tmp_path):
    collector = fleet.start_collector()
    fleet.start_agent("board-a", "class=x86,site=lab1")
    fleet.start_agent("board-b", "class=x86,site=lab2")
    out = tmp_path / "push.json"
    result = cli("push", sine_model, "--server", collector.url, "--token", collector.token, "--devices",
                 "class=x86", "--no-sensors", *FAST,
                 "--wait", "--wait-timeout", "120", "--json", str(out), timeout=180)
    assert result.code == 0, result
    assert "board-a" in result.out and "board-b" in result.out and "p99 ms" in result.out
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {row["device"] for row in rows} == {"board-a", "board-b"}
    assert all(row["state"] == "done" and row["p50_ms"] > 0 and row["model"] == "sine_float.tflite" for row in rows)
    for row in rows:  # the p90 with its interval (one repeat: batch means), as the table prints it
        low, high = row["p90_ci_ms"]
        assert low <= row["p90_estimate_ms"] <= high
        assert f"{row['p90_estimate_ms']:.3f} [{low:.3f}, {high:.3f}]" in result.out
    anonymous = cli("push", sine_model, "--server", collector.url, "--devices", "class=x86", *FAST,
                    env={"EDGEBENCH_TOKEN": ""})
    assert anonymous.code != 0 and len(anonymous.err.strip().splitlines()) == 1
    assert "401" in anonymous.err and "give a token" in anonymous.err
    points = fleet.wait_results(2)
    assert_exactly_once(points, [row["job_id"] for row in rows])
    assert {pt["label_site"] for pt in points} == {"lab1", "lab2"} and {pt["model"] for pt in points} == {
        "sine_float.tflite"}

    devices = cli("devices", "--server", collector.url, "--token", collector.token, "--json", "-")
    assert devices.code == 0 and {d["device_id"] for d in devices.json()} == {"board-a", "board-b"}
    jobs = cli("jobs", "--server", collector.url, "--token", collector.token, "--batch", report["batch_id"])
    assert jobs.code == 0 and jobs.out.count(" done") == 2
    health = collector.get("/healthz")
    assert health["ok"] and health["mqtt"] and health["influx"]
    assert collector.metric("edgebench_points_written_total") >= 2
    # telemetry flows too (sampled every 0.5 s in the tests, batches of 6)
    wait_for(lambda: fleet.influxd.query(fleet.db, "SELECT count(load1) FROM edgebench_telemetry"), 30, "telemetry")


def test_cli_errors_are_one_line(cli, tmp_path):
    missing = cli("push", tmp_path / "nope.tflite", "--server", "http://127.0.0.1:9")
    assert missing.code == 3 and missing.err.startswith("edgebench: error: model file") and "not found" in missing.err
    unreachable = cli("devices", "--server", "http://127.0.0.1:9")
    assert unreachable.code == 1 and "cannot reach the collector" in unreachable.err
    bad_labels = cli("agent", "--labels", "Class=x", "--data-dir", str(tmp_path))
    assert bad_labels.code == 2 and "invalid label" in bad_labels.err


def test_invalid_messages_go_to_dead_letters_and_the_collector_keeps_going(fleet, broker):
    collector = fleet.start_collector()
    events = p.topic("dev1", p.EVENTS)
    good = p.envelope("dev1", time.time(), event="result", job_id="ok-1", run_id="ok-1", finished_ts=time.time(),
                      summary={"stats": {"count": 5, "p50_ms": 1.0}, "model": {"name": "m"}, "runtime": {}})
    spoofed = dict(good, device="dev2", job_id="spoof-1", run_id="spoof-1")
    negative = json.loads(json.dumps(good))
    negative["summary"]["stats"]["p50_ms"] = -3.0
    negative["job_id"] = negative["run_id"] = "neg-1"
    bad = [
        (events, b"{not json"),
        (events, json.dumps(good).replace('"p50_ms": 1.0', '"p50_ms": NaN').encode()),
        (events, json.dumps(negative).encode()),
        (events, json.dumps(spoofed).encode()),  # dev1's topic, dev2 in the payload
        (events, b"{" + b" " * (p.MAX_PAYLOAD[p.EVENTS] + 10) + b"}"),  # oversized
        (p.topic("dev1", p.JOBS), json.dumps(good).encode()),  # not a device topic; no subscription either
        ("edgebench/v1/devices/dev1/events/extra", b"{}"),  # outside the tree: not subscribed, never arrives
    ]
    for topic_name, payload in bad:
        mqtt_publish(broker.port, topic_name, payload)
    mqtt_publish(broker.port, events, json.dumps(good).encode())
    rows = fleet.wait_results(1)
    assert [row["run_id"] for row in rows] == ["ok-1"]
    wait_for(lambda: collector.metric("edgebench_dead_letters_total") >= 5, 20, "5 dead letters")
    letters = collector.get("/api/v1/dead-letters")["dead_letters"]
    reasons = " | ".join(letter["reason"] for letter in letters)
    for expected in ("not JSON", "not a valid number", "below 0", "does not match topic device", "limit"):
        assert expected in reasons
    assert collector.alive() and collector.health()["ok"]


def test_duplicate_job_runs_once_and_bad_model_is_refused(fleet, broker, sine_model):
    collector = fleet.start_collector()
    agent = fleet.start_agent("dup-board")
    model = fleet.upload(sine_model)
    job = p.envelope("dup-board", time.time(), job_id="dup-1", model={
        "sha256": model["sha256"], "size_bytes": model["size_bytes"], "name": "sine.tflite",
        "url": f"{collector.url}/api/v1/models/{model['sha256']}/content"},
        settings={"min_runs": 20, "min_duration_s": 0.05, "warmup_runs": 1, "warmup_duration_s": 0.0}, sensors=False)
    for _ in range(3):  # the same job id three times: QoS 1 redelivery or an operator's retry
        mqtt_publish(broker.port, p.topic("dup-board", p.JOBS), json.dumps(job).encode(), client_id="test-server")
    wrong = dict(job, job_id="wrong-1", model=dict(job["model"], sha256="0" * 64))
    mqtt_publish(broker.port, p.topic("dup-board", p.JOBS), json.dumps(wrong).encode(), client_id="test-server")
    evil = dict(job, job_id="evil-1", runtime="os:system")
    mqtt_publish(broker.port, p.topic("dup-board", p.JOBS), json.dumps(evil).encode(), client_id="test-server")
    db = agent.log_path.parent / "data" / "agent.sqlite3"

    def states():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())

    final = wait_for(lambda: (lambda s: s if s.get("dup-1") == "done" and s.get("wrong-1") == "failed" else None)(
        states()), 60, "both jobs to finish")
    assert set(final) == {"dup-1", "wrong-1"}  # the evil job was refused before it reached the job table
    assert_exactly_once(fleet.wait_results(1), ["dup-1"])
    reports = list((agent.log_path.parent / "data" / "reports").glob("*.json"))
    assert [r.name for r in reports] == ["dup-1.json"]
    assert "plugins are not allowed" in agent.log_text()
    # the URL above is not signed by the collector: refused (401), and the board took the model over MQTT
    assert "401" in agent.log_text() and "over MQTT instead" in agent.log_text()


@pytest.mark.parametrize("reason", ["cancel", "timeout"])
def test_cancel_and_timeout(fleet, sine_model, reason):
    fleet.start_collector()
    fleet.start_agent("cancel-board")
    model = fleet.upload(sine_model)
    options = {"timeout_s": 3} if reason == "timeout" else {}
    batch = fleet.submit([model["sha256"]], {"ids": ["cancel-board"]}, settings={
        "min_runs": 1, "min_duration_s": 60, "max_duration_s": 60, "warmup_runs": 1, "warmup_duration_s": 0}, **options)
    job_id = batch["jobs"][0]["job_id"]
    if reason == "cancel":
        wait_for(lambda: fleet.jobs(batch["batch_id"])[0]["state"] == "running", 30, "the job to run")
        fleet.post(f"/api/v1/jobs/{job_id}/cancel", b"")
    jobs = fleet.wait_jobs(batch["batch_id"], timeout=60)
    if reason == "cancel":
        assert (jobs[0]["state"], jobs[0]["reason"]) == ("cancelled", "cancelled on request")
    else:  # the engine's own timeout: it names the phase
        assert jobs[0]["state"] == "failed" and "no result after 3s" in jobs[0]["reason"]
    assert fleet.results_in_influx() == []


def test_a_job_with_repeats_reports_its_interval(fleet, sine_model):
    """`repeats` travels in the job: the board runs fresh processes, the result carries the between-repeat
    interval, and InfluxDB gets one edgebench_repeat point per repeat. The board keeps its run history: the same
    configuration run again reports two runs, and the release gates read how much they differ."""
    from edgebench.server.gates import rules

    fleet.start_collector()
    fleet.start_agent("rep-board")
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["rep-board"]}, repeats=3)
    assert fleet.wait_jobs(batch["batch_id"])[0]["state"] == "done"
    (result,) = fleet.collector.get(f"/api/v1/results?batch={batch['batch_id']}")["results"]
    interval = result["summary"]["stats"]["interval"]
    assert interval["method"] == "between-repeats" and len(interval["p90_ms"]["per_unit"]) == 3
    assert interval["history"]["runs"] == 1
    fleet.wait_results(1)
    rows = fleet.influxd.rows(fleet.db, "SELECT p90_ms FROM edgebench_repeat WHERE device = 'rep-board'")
    assert sorted(row["p90_ms"] for row in rows) == sorted(interval["p90_ms"]["per_unit"])
    again = fleet.submit([model["sha256"]], {"ids": ["rep-board"]}, repeats=3)
    assert fleet.wait_jobs(again["batch_id"])[0]["state"] == "done"
    (second,) = fleet.collector.get(f"/api/v1/results?batch={again['batch_id']}")["results"]
    history = second["summary"]["stats"]["interval"]["history"]
    assert history["runs"] == 2 and set(history["between_run_sd"]) == {"p50_ms", "p90_ms", "p95_ms", "p99_ms"}
    assert Path(history["file"]).parent.parts[-2:] == ("data", "history")  # in the agent's --data-dir
    between = rules.result_from_fleet(second, "collector").between_runs
    assert between["p90_ms"] == (history["between_run_sd"]["p90_ms"], 2)


def test_configurations_of_one_model_run_interleaved_on_the_board(fleet, sine_model):
    """One push, one model, two thread counts, repeats: the board runs the two jobs in one process with their
    repeats alternating (drift hits both alike), and each result says so (one interleave group)."""
    fleet.start_collector()
    agent = fleet.start_agent("ilv-board")
    model = fleet.upload(sine_model)
    body = {"models": [model["sha256"]], "devices": {"ids": ["ilv-board"]}, "threads": [1, 2],
            "options": {"settings": {"min_runs": 50, "min_duration_s": 0.05, "warmup_runs": 1,
                                     "warmup_duration_s": 0.0}, "sensors": False, "repeats": 3}}
    batch = fleet.post("/api/v1/jobs", json.dumps(body).encode())
    assert [job["state"] for job in fleet.wait_jobs(batch["batch_id"])] == ["done", "done"]
    results = fleet.collector.get(f"/api/v1/results?batch={batch['batch_id']}")["results"]
    assert len(results) == 2
    assert all("interleave" in r["summary"] for r in results), agent.log_path.read_text()[-6000:]
    groups = {r["summary"]["interleave"]["group"] for r in results}
    assert len(groups) == 1
    report_dir = fleet.root / "agent-ilv-board" / "data" / "reports"
    starts = sorted((rep["origin_monotonic_ns"], rep["index"]) for path in report_dir.glob("*.json")
                    for rep in json.loads(path.read_text())["repeats"])
    assert [index for _, index in starts] == [0, 0, 1, 1, 2, 2]


def test_a_cancel_in_an_interleaved_group_ends_that_job_and_the_others_run_again(fleet, sine_model):
    """Cancelling one job of a running interleaved group stops the group's process: the cancelled job ends
    'cancelled'; the other is queued again (its first attempt spent) rather than failed or lost."""
    fleet.start_collector()
    agent = fleet.start_agent("grp-board")
    model = fleet.upload(sine_model)
    long = {"min_runs": 1, "min_duration_s": 60, "max_duration_s": 60, "warmup_runs": 1, "warmup_duration_s": 0}
    body = {"models": [model["sha256"]], "devices": {"ids": ["grp-board"]}, "threads": [1, 2],
            "options": {"settings": long, "sensors": False, "repeats": 2}}
    batch = fleet.post("/api/v1/jobs", json.dumps(body).encode())
    wait_for(lambda: all(j["state"] == "running" for j in fleet.jobs(batch["batch_id"])), 60, "both jobs to run")
    cancelled, other = (job["job_id"] for job in batch["jobs"])
    fleet.post(f"/api/v1/jobs/{cancelled}/cancel", b"")
    wait_for(lambda: next(j for j in fleet.jobs(batch["batch_id"]) if j["job_id"] == cancelled)["state"]
             == "cancelled", 60, "the cancel")
    with sqlite3.connect(f"file:{agent.log_path.parent / 'data' / 'agent.sqlite3'}?mode=ro", uri=True) as conn:
        state, attempts = conn.execute("SELECT state, attempts FROM jobs WHERE job_id = ?", (other,)).fetchone()
    assert state in ("queued", "running") and attempts >= 1
    fleet.post(f"/api/v1/jobs/{other}/cancel", b"")  # it would run for a minute: end it too
    jobs = {j["job_id"]: j for j in fleet.wait_jobs(batch["batch_id"], timeout=90)}
    assert (jobs[cancelled]["state"], jobs[cancelled]["reason"]) == ("cancelled", "cancelled on request")
    assert jobs[other]["state"] == "cancelled"
    assert fleet.results_in_influx() == []
