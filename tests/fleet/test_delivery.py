"""Nothing lost, nothing counted twice: synthetic boards publish results and telemetry through the agent's real
outbox (bench/fleetload.py) WHILE the broker, the collector, InfluxDB or a board fails, and afterwards every item
is counted by id in InfluxDB: each result's run id exactly once, each telemetry sample's seq exactly once.

The faults are driven by what has happened (results already stored by the collector), not by timers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Fleet
from .services import REPO, Influxd, Mosquitto, wait_for

sys.path.insert(0, str(REPO / "bench"))

import fleetload  # noqa: E402


class Load(fleetload.Load):
    def __init__(self, fleet: Fleet, root: Path, names: list[str], **kwargs):
        super().__init__(fleet.mqtt_url, root, names, **kwargs)

    def finish(self, drain_s: float = 180) -> None:
        """Production over, and every outbox emptied by the collector's acks."""
        self.produced()
        wait_for(self.drained, drain_s, "every outbox to be acknowledged by the collector")


def stored(fleet: Fleet, at_least: int):
    """Wait until the collector has stored (and acknowledged) this many messages."""
    wait_for(lambda: fleet.collector.metric("edgebench_messages_stored_total") >= at_least, 60,
             f"{at_least} messages stored")


def assert_each_once(fleet: Fleet, load: Load) -> None:
    """Count by id: every committed result and every telemetry sample is in InfluxDB exactly once."""
    for device in load.devices:
        rows = fleet.influxd.rows(fleet.db, f"SELECT run_id FROM edgebench_result WHERE device = '{device.device}'")
        assert sorted(row["run_id"] for row in rows) == device.result_ids(), device.device
        if device.telemetry_seq:
            rows = fleet.influxd.rows(fleet.db, f"SELECT seq FROM edgebench_telemetry WHERE device = "
                                                f"'{device.device}'")
            assert sorted(int(row["seq"]) for row in rows) == list(range(device.telemetry_seq)), device.device


def assert_written_once(fleet: Fleet, load: Load) -> None:
    """No point was written twice (dedup by msg_id, not only idempotent timestamps hiding the second write)."""
    expected = load.results() + load.telemetry()
    assert fleet.collector.metric("edgebench_points_written_total") == expected


@pytest.fixture
def load_fleet(fleet, tmp_path):
    loads: list[Load] = []

    def make(names: list[str], **kwargs) -> Load:
        load = Load(fleet, tmp_path / "devices", names, **kwargs)
        loads.append(load)
        return load

    yield make
    for load in loads:
        load.close()


def test_broker_sigkill_while_publishing(fleet, broker, load_fleet):
    """Results PUBACKed just before a SIGKILL (not yet in Mosquitto's autosave), and those published after the
    restart before the collector subscribed again (PUBACK "no matching subscribers": Mosquitto does not restore
    shared subscriptions) are published again until the collector acknowledges them."""
    fleet.start_collector()
    load = load_fleet(["bk-a", "bk-b"], results_per_s=20, telemetry_per_s=30)
    load.start(seconds=6)
    stored(fleet, 20)
    broker.kill()
    broker.start()
    load.finish()
    assert load.results() >= 200
    assert_each_once(fleet, load)
    assert_written_once(fleet, load)


def test_collector_sigkill_while_publishing(fleet, load_fleet):
    collector = fleet.start_collector()
    load = load_fleet(["ck-a", "ck-b"], results_per_s=20, telemetry_per_s=30)
    load.start(seconds=6)
    stored(fleet, 20)
    collector.kill()
    wait_for(lambda: load.results() >= 60 + sum(1 for _ in load.devices), 60, "results while the collector is away")
    collector.start()
    load.finish()
    assert_each_once(fleet, load)


def test_influxdb_stopped_while_publishing(tmp_path, broker):
    influxd = Influxd(tmp_path / "own-influxd")
    influxd.start()
    fleet = Fleet(tmp_path, broker, influxd)
    load = None
    try:
        collector = fleet.start_collector()
        load = Load(fleet, tmp_path / "devices", ["ik-a", "ik-b"], results_per_s=20, telemetry_per_s=30)
        load.start(seconds=6)
        stored(fleet, 20)
        influxd.stop()
        wait_for(lambda: collector.metric("edgebench_influx_write_errors_total") >= 2, 60, "failing writes")
        assert collector.health().get("ok") is False
        influxd.start()
        load.finish()
        assert_each_once(fleet, load)
        assert_written_once(fleet, load)
    finally:
        if load:
            load.close()
        fleet.close()
        influxd.stop()


def test_board_sigkill_while_publishing(fleet, tmp_path):
    """A board's process dies mid-stream and starts again on the same data dir: every result it had committed
    lands once (those it had not committed were never accepted)."""
    fleet.start_collector()
    data = tmp_path / "board"
    argv = [sys.executable, str(REPO / "bench" / "fleetload.py"), "--mqtt", fleet.mqtt_url, "--device", "gk-a",
            "--data-dir", str(data), "--results-per-s", "30", "--seconds", "4", "--ack-wait", "3"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO)
    try:
        stored(fleet, 15)
        first.kill()
    finally:
        first.wait(10)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert second.returncode == 0, second.stderr
    db = data / "agent.sqlite3"
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        committed = [row[0] for row in conn.execute("SELECT job_id FROM jobs WHERE state='done' ORDER BY job_id")]
    assert len(committed) >= 15
    rows = fleet.influxd.rows(fleet.db, "SELECT run_id FROM edgebench_result WHERE device = 'gk-a'")
    assert sorted(row["run_id"] for row in rows) == committed


def test_overload_beyond_the_brokers_queue_is_resent_not_lost(tmp_path, influxd):
    """Mosquitto drops what exceeds a session's max_queued_messages after PUBACKing it ("Outgoing messages are
    being dropped"). With a tiny queue and a collector that is away, most messages are dropped: the boards keep
    them, publish them again, and every one lands once; the drops are visible as resends."""
    broker = Mosquitto(tmp_path / "mosquitto", extra="allow_anonymous true\nmax_queued_messages 10\nlog_type notice")
    broker.start()
    fleet = Fleet(tmp_path, broker, influxd)
    load = None
    try:
        collector = fleet.start_collector()
        collector.kill()  # its persistent session stays on the broker, with a queue of 10
        load = Load(fleet, tmp_path / "devices", [f"ov-{i}" for i in range(4)], results_per_s=25,
                    telemetry_per_s=60, ack_wait_s=2.0)
        load.start(seconds=3)
        load.produced()
        collector.start()
        load.finish()
        assert_each_once(fleet, load)
        assert load.counters()["resent"] > 0
        broker.stop()  # flushes its log
        assert "Outgoing messages are being dropped" in (tmp_path / "mosquitto" / "mosquitto.log").read_text()
    finally:
        if load:
            load.close()
        fleet.close()
        broker.stop()
