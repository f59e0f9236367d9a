"""Fault tests: the broker, the collector, InfluxDB and the agent die or stop at the worst moments, and every
accepted result still lands in InfluxDB exactly once."""

from __future__ import annotations

import sqlite3

from .conftest import Fleet, assert_exactly_once
from .services import Influxd, Mosquitto, wait_for

# A few seconds of a model that takes milliseconds per run (sine_float would make millions of samples).
LONG = {"min_runs": 1, "min_duration_s": 3.0, "max_duration_s": 10.0, "warmup_runs": 1, "warmup_duration_s": 0.0}
SHORT = {"min_runs": 20, "min_duration_s": 0.5, "warmup_runs": 1, "warmup_duration_s": 0.0}


def agent_job_states(agent) -> dict:
    db = agent.log_path.parent / "data" / "agent.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())


def agent_job_pid(agent, job_id: str):
    db = agent.log_path.parent / "data" / "agent.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT pid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def alive(pid: int) -> bool:
    """A live process (a zombie, already dead, is not), whoever's child it is."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def agent_outbox_depth(agent) -> int:
    db = agent.log_path.parent / "data" / "agent.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE kind != 'telemetry'").fetchone()[0]


def restart_broker(broker: Mosquitto) -> None:
    broker.kill()  # SIGKILL: no clean shutdown, the broker keeps only what it had persisted
    broker.start()


def test_broker_killed_and_restarted_mid_job(fleet, broker, slow_model):
    fleet.start_collector()
    agent = fleet.start_agent("kb-board")
    model = fleet.upload(slow_model)
    batch = fleet.submit([model["sha256"]] * 2, {"ids": ["kb-board"]}, settings=LONG)
    first = batch["jobs"][0]["job_id"]
    wait_for(lambda: agent_job_states(agent).get(first) == "running", 30, "the first job to run")
    restart_broker(broker)
    jobs = fleet.wait_jobs(batch["batch_id"], timeout=120)
    assert [job["state"] for job in jobs] == ["done", "done"], jobs
    assert_exactly_once(fleet.wait_results(2), [job["job_id"] for job in jobs])
    assert "disconnected from the broker" in agent.log_text()


def test_collector_killed_then_restarted(fleet, sine_model):
    """Results produced while the collector is dead wait in its persistent session."""
    collector = fleet.start_collector()
    agent = fleet.start_agent("kc-board")
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]] * 3, {"ids": ["kc-board"]}, settings=SHORT)
    ids = [job["job_id"] for job in batch["jobs"]]
    wait_for(lambda: agent_job_states(agent).get(ids[0]) == "done", 60, "the first result")
    collector.kill()
    wait_for(lambda: all(agent_job_states(agent).get(i) == "done" for i in ids), 90, "every job on the board")
    # The broker took them (PUBACK), but only the collector's ack may delete them from the board.
    assert agent_outbox_depth(agent) >= 2
    collector.start()
    assert_exactly_once(fleet.wait_results(3), ids)
    jobs = fleet.wait_jobs(batch["batch_id"], timeout=30)
    assert all(job["state"] == "done" for job in jobs)
    wait_for(lambda: agent_outbox_depth(agent) == 0, 60, "the collector's acks to empty the outbox")


def test_influx_down_then_collector_killed_before_ack(tmp_path, broker, sine_model):
    """InfluxDB stops: the collector holds the result unacknowledged and retries; killed in that state, it gets
    the message again after a restart and writes it once InfluxDB is back."""
    influxd = Influxd(tmp_path / "own-influxd")
    influxd.start()
    fleet = Fleet(tmp_path, broker, influxd)
    try:
        collector = fleet.start_collector()
        agent = fleet.start_agent("ki-board")
        model = fleet.upload(sine_model)
        influxd.stop()
        batch = fleet.submit([model["sha256"]], {"ids": ["ki-board"]}, settings=SHORT)
        job_id = batch["jobs"][0]["job_id"]
        wait_for(lambda: collector.metric("edgebench_influx_write_errors_total") >= 2, 60, "failing writes")
        assert collector.health().get("influx") is False
        wait_for(lambda: agent_job_states(agent).get(job_id) == "done", 60, "the job on the board")
        assert agent_outbox_depth(agent) >= 1  # nothing is stored yet, so nothing is acknowledged to the board
        collector.kill()
        influxd.start()
        collector.start()
        assert_exactly_once(fleet.wait_results(1), [job_id])
        wait_for(lambda: collector.health().get("ok"), 30, "a healthy collector")
        wait_for(lambda: agent_outbox_depth(agent) == 0, 60, "the collector's acks to empty the outbox")
    finally:
        fleet.close()
        influxd.stop()


def test_agent_killed_mid_job_runs_it_again_once(fleet, slow_model):
    fleet.start_collector()
    agent = fleet.start_agent("ka-board")
    model = fleet.upload(slow_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["ka-board"]}, settings=LONG)
    job_id = batch["jobs"][0]["job_id"]
    wait_for(lambda: agent_job_states(agent).get(job_id) == "running" and agent_job_pid(agent, job_id), 30,
             "the job to run")
    orphan = agent_job_pid(agent, job_id)
    agent.kill()
    agent.start()
    jobs = fleet.wait_jobs(batch["batch_id"], timeout=90)
    assert jobs[0]["state"] == "done"
    assert_exactly_once(fleet.wait_results(1), [job_id])
    # The job process the killed agent left behind is gone (stopped by the new agent, or dead of its closed pipe);
    # only the rerun produced a result.
    assert not alive(orphan) and agent_job_pid(agent, job_id) != orphan

