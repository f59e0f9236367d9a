"""Collector deployment cases: two collectors in one share group, InfluxDB down for longer than ReceiveMaximum
messages, and the whole fleet over TLS (mqtts://) with a CA made in the test."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from edgebench.agent.fleet import protocol as p

from .conftest import Fleet, assert_exactly_once, tls_fleet
from .services import Influxd, wait_for

SAMPLES = 10  # telemetry samples per message


def publish_many(port: int, messages: list[tuple[str, bytes]], client_id: str = "test-load") -> None:
    """QoS 1, every PUBACK awaited (the broker has each message before this returns)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic_name, payload, qos=1) for topic_name, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def telemetry(devices: int, per_device: int, base_ts: float = 1.7e9) -> list[tuple[str, bytes]]:
    messages = []
    for d in range(devices):
        device = f"load-{d:02d}"
        for m in range(per_device):
            start = base_ts + d * 1000 + m * SAMPLES
            payload = p.envelope(device, time.time(), samples=[
                {"ts": start + i, "readings": {"load1": float(i), "temp_max_c": 40.0 + m}} for i in range(SAMPLES)])
            messages.append((p.topic(device, p.TELEMETRY), p.encode(p.TELEMETRY, payload)))
    return messages


def results(count: int, device: str = "res-board") -> list[tuple[str, bytes]]:
    out = []
    for n in range(count):
        payload = p.envelope(device, time.time(), event="result", job_id=f"r-{n:03d}", run_id=f"r-{n:03d}",
                             finished_ts=1.7e9 + n, summary={"stats": {"count": 40, "p50_ms": 1.0 + n},
                                                             "model": {"name": "m.tflite"},
                                                             "runtime": {"runtime": "litert"}})
        out.append((p.topic(device, p.EVENTS), p.encode(p.EVENTS, payload)))
    return out


def telemetry_count(fleet: Fleet) -> int:
    series = fleet.influxd.query(fleet.db, "SELECT count(load1) FROM edgebench_telemetry")
    return int(series[0]["values"][0][1]) if series else 0


def test_two_collectors_share_the_load_without_double_counting(fleet, broker):
    first = fleet.start_collector("collector-a", extra=("--client-id", "collector-a"))
    second = fleet.start_collector("collector-b", extra=("--client-id", "collector-b"))
    messages = telemetry(4, 30) + results(20)
    publish_many(broker.port, messages)
    points = 4 * 30 * SAMPLES + 20
    collectors = (first, second)
    wait_for(lambda: sum(c.metric("edgebench_points_written_total") for c in collectors) >= points, 60,
             "every point written")
    time.sleep(0.5)  # a message delivered to both would show up as an extra count now
    received = [c.metric("edgebench_messages_received_total") for c in collectors]
    written = [c.metric("edgebench_points_written_total") for c in collectors]
    assert sum(received) == len(messages) and min(received) > 0, received  # split, each message once
    assert sum(written) == points, written
    assert telemetry_count(fleet) == 4 * 30 * SAMPLES
    assert_exactly_once(fleet.results_in_influx(), [f"r-{n:03d}" for n in range(20)])


def test_influx_down_longer_than_receive_maximum(tmp_path, broker):
    """5 unacknowledged messages at most in the collector; the broker's persistent session keeps the other 55
    while InfluxDB is down; all of them land exactly once when it is back."""
    influxd = Influxd(tmp_path / "own-influxd")
    influxd.start()
    fleet = Fleet(tmp_path, broker, influxd)
    try:
        collector = fleet.start_collector(extra=("--receive-maximum", "5"))
        influxd.stop()
        messages = telemetry(3, 20)
        publish_many(broker.port, messages)
        wait_for(lambda: collector.metric("edgebench_influx_write_errors_total") >= 3, 60, "failing writes")
        for _ in range(10):  # while InfluxDB is down, the collector never holds more than ReceiveMaximum
            assert collector.metric("edgebench_messages_received_total") <= 5
            assert collector.health()["buffer_depth"] <= 5
            time.sleep(0.2)
        influxd.start()
        wait_for(lambda: collector.metric("edgebench_points_written_total") >= 60 * SAMPLES, 90, "the backlog")
        assert telemetry_count(fleet) == 60 * SAMPLES
        assert collector.metric("edgebench_messages_received_total") == 60
        wait_for(lambda: collector.health().get("ok"), 30, "a healthy collector")
    finally:
        fleet.close()
        influxd.stop()


def test_fleet_over_tls(tmp_path, influxd, sine_model, cli):
    broker, fleet, _ = tls_fleet(tmp_path, influxd)
    try:
        collector = fleet.start_collector()
        fleet.start_agent("tls-board")
        out = tmp_path / "push.json"
        result = cli("push", sine_model, "--server", collector.url, "--token", collector.token, "--devices",
                     "tls-board", "--no-sensors",
                     "--min-runs", "20", "--min-duration", "0.05", "--warmup-runs", "1", "--warmup-duration", "0",
                     "--wait", "--wait-timeout", "90", "--json", str(out), timeout=120)
        assert result.code == 0, result
        rows = json.loads(out.read_text())["rows"]
        assert_exactly_once(fleet.wait_results(1), [rows[0]["job_id"]])
        # a plain-TCP client gets nowhere on the TLS listener; a TLS client that does not trust the CA neither
        import ssl

        import paho.mqtt.client as mqtt

        for tls in (False, True):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"outsider-{tls}", protocol=mqtt.MQTTv5)
            if tls:
                client.tls_set()  # the system's CAs only
            try:
                client.connect("127.0.0.1", broker.port, keepalive=5)
                client.loop_start()
                time.sleep(1.0)
                assert not client.is_connected()
            except (OSError, ssl.SSLError):
                pass
            finally:
                client.loop_stop()
    finally:
        fleet.close()
        broker.stop()


def test_influxdb_v2_write_path_into_victoria_metrics(tmp_path, broker):
    """--influx-bucket/--influx-org/--influx-token write through influxdb-client to /api/v2/write of a real server
    (victoria-metrics; it has no InfluxQL, so the points are read back through its export API)."""
    from .services import Collector, VictoriaMetrics, binary

    if not binary("victoria-metrics"):
        subprocess.run(["sh", str(Path(__file__).resolve().parents[2] / "scripts" / "ensure_services.sh")],
                       check=False)
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    collector = Collector(tmp_path / "v2-collector", broker.url, vm.url, "unused", extra=(
        "--influx-bucket", "edgebench", "--influx-org", "lab", "--influx-token", "test-token"))
    try:
        collector.start()
        publish_many(broker.port, telemetry(2, 5, base_ts=time.time() - 3600) + results(3))
        wait_for(lambda: collector.metric("edgebench_points_written_total") >= 2 * 5 * SAMPLES + 3, 30,
                 "points written through /api/v2/write")
        assert collector.metric("edgebench_influx_write_errors_total") == 0
        load = wait_for(lambda: vm.export('{__name__="edgebench_telemetry_load1"}'), 30, "telemetry in VM")
        assert sum(len(series["values"]) for series in load) == 2 * 5 * SAMPLES
        assert {series["metric"]["device"] for series in load} == {"load-00", "load-01"}
        p50 = wait_for(lambda: vm.export('{__name__="edgebench_result_p50_ms"}'), 30, "results in VM")
        assert sorted(v for series in p50 for v in series["values"]) == [1.0, 2.0, 3.0]
        assert all(series["metric"]["device"] == "res-board" and series["metric"]["model"] == "m.tflite"
                   for series in p50)
        assert collector.health()["ok"]
    finally:
        collector.stop()
        vm.stop()
