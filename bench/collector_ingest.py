"""Collector ingest: points/s into InfluxDB through MQTT + the collector, against raw line-protocol writes into the
same influxd in the same run; and the end-to-end delay from an agent's publish to the point being queryable.

    .venv/bin/python bench/collector_ingest.py [--agents 20] [--messages 40] [--samples 100] [--rounds 5]
                                               [--collectors 1] [--json FILE]

Starts its own Mosquitto, influxd (scripts/ensure_services.sh installs them) and collector process on free loopback
ports and stops them by PID. Simulated agents are MQTT v5 clients publishing telemetry batches at QoS 1 as fast as
the broker takes them. Each round writes 80,000 fresh points raw and then 80,000 more through MQTT; the ratio
reported is the median of the rounds' ratios (paired: both halves of a round see the same machine load).
Goal: ingest ratio >= 0.5 (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # localfleet

from localfleet import Collector, Influxd, Mosquitto, wait_for  # noqa: E402

from edgebench.agent.fleet import protocol as p  # noqa: E402
from edgebench.server.influx import InfluxV1, telemetry_points  # noqa: E402

READINGS = ("load1", "mem_available_bytes", "temp_max_c", "cpu_freq_hz")


def telemetry_message(device: str, start_ts: float, samples: int) -> dict:
    """As an agent's outbox sends it: with a msg_id, which the collector deduplicates and acknowledges."""
    return p.envelope(device, time.time(), msg_id=p.new_msg_id(), samples=[
        {"ts": start_ts + i * 1e-3, "readings": {name: float(i % 97) + k for k, name in enumerate(READINGS)}}
        for i in range(samples)])


def raw_baseline(influx: InfluxV1, messages: list[tuple[str, dict]], batch: int) -> float:
    """Points/s of writing the very same points directly, in batches, from one process."""
    lines = []
    for topic_name, payload in messages:
        lines.extend(telemetry_points(p.Message(topic_name.split("/")[3], p.TELEMETRY, payload), {}))
    started = time.perf_counter()
    for i in range(0, len(lines), batch):
        influx.write(lines[i:i + batch])
    return len(lines) / (time.perf_counter() - started)


def count_points(influxd: Influxd, db: str, measurement: str, field: str) -> int:
    series = influxd.query(db, f"SELECT count({field}) FROM {measurement}")
    return int(series[0]["values"][0][1]) if series else 0


def publish_all(port: int, per_agent: dict[str, list[bytes]]) -> None:
    """One v5 client per simulated agent, publishing in parallel threads, QoS 1, waiting for every PUBACK."""
    import paho.mqtt.client as mqtt

    def agent(device: str, payloads: list[bytes]) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{device}", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(50)
        client.connect("127.0.0.1", port)
        client.loop_start()
        infos = [client.publish(p.topic(device, p.TELEMETRY), data, qos=1) for data in payloads]
        for info in infos:
            info.wait_for_publish(timeout=120)
        client.disconnect()
        client.loop_stop()

    threads = [threading.Thread(target=agent, args=item) for item in per_agent.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def ingest(broker: Mosquitto, influxd: Influxd, collectors: list[Collector], db: str,
           messages: list[tuple[str, dict]], points: int, written_before: float) -> float:
    per_agent: dict[str, list[bytes]] = {}
    for topic_name, payload in messages:
        per_agent.setdefault(topic_name.split("/")[3], []).append(p.encode(p.TELEMETRY, payload))
    target = written_before + points
    started = time.perf_counter()
    publish_all(broker.port, per_agent)
    # Timing: until the collectors' last write returned (as for the raw writes: a 1.x write is queryable once it
    # returns); polling their /metrics is cheap, a count() query over the growing data would load influxd.
    wait_for(lambda: written(collectors) >= target, 600, "every point written", interval=0.01)
    return points / (time.perf_counter() - started)


def written(collectors: list[Collector]) -> float:
    return sum(c.metric("edgebench_points_written_total") for c in collectors)


def end_to_end_delay(broker: Mosquitto, influxd: Influxd, db: str, count: int, rate_hz: float) -> list[float]:
    """Publish result events at a steady rate; poll InfluxDB and note when each run id becomes queryable."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-delay", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}

    def poll() -> None:
        while len(seen) < count:
            rows = influxd.query(db, "SELECT run_id, p50_ms FROM edgebench_result")
            now = time.perf_counter()
            for series in rows:
                for value in series["values"]:
                    seen.setdefault(value[1], now)
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for n in range(count):
        run_id = f"delay-{n:05d}"
        payload = p.envelope("delay-board", time.time(), event="result", job_id=run_id, run_id=run_id,
                             finished_ts=time.time(), summary={"stats": {"count": 100, "p50_ms": 1.0 + n % 7},
                                                               "model": {"name": "m.tflite"},
                                                               "runtime": {"runtime": "litert"}})
        sent[run_id] = time.perf_counter()
        client.publish(p.topic("delay-board", p.EVENTS), p.encode(p.EVENTS, payload), qos=1)
        time.sleep(1 / rate_hz)
    poller.join(timeout=60)
    client.disconnect()
    client.loop_stop()
    return [seen[run] - sent[run] for run in sent if run in seen]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="simulated agents (default 20)")
    parser.add_argument("--messages", type=int, default=40, help="telemetry messages per agent and round (default 40)")
    parser.add_argument("--samples", type=int, default=100, help="points per message (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds, raw then MQTT (default 5)")
    parser.add_argument("--collectors", type=int, default=1,
                        help="collectors sharing the load in one share group (default 1: the figure to quote)")
    parser.add_argument("--batch", type=int, default=5000, help="raw baseline batch size (default 5000)")
    parser.add_argument("--delay-count", type=int, default=300, help="results for the delay measurement")
    parser.add_argument("--delay-rate", type=float, default=50.0, help="results/s for the delay measurement")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgebench-ingest-"))
    broker, influxd = Mosquitto(work / "mosquitto"), Influxd(work / "influxd")
    broker.start()
    influxd.start()
    collectors = [Collector(work / f"collector{n}", broker.url, influxd.url, "ingest",
                            extra=("--client-id", f"bench-collector-{n}")) for n in range(args.collectors)]
    points = args.agents * args.messages * args.samples
    try:
        raw_db = InfluxV1(influxd.url, "raw")
        raw_db.create_database()
        for collector in collectors:
            collector.start()
        rounds = []
        for r in range(args.rounds):  # each round writes fresh points (its own time range) both ways
            def batch(offset: int, r=r) -> list[tuple[str, dict]]:
                base_ts = 1.7e9 + (2 * r + offset) * 1e6
                return [(p.topic(f"sim-{a:03d}", p.TELEMETRY),
                         telemetry_message(f"sim-{a:03d}", base_ts + (a * args.messages + m) * args.samples * 1e-3,
                                           args.samples))
                        for a in range(args.agents) for m in range(args.messages)]

            raw = raw_baseline(raw_db, batch(0), args.batch)
            via_mqtt = ingest(broker, influxd, collectors, "ingest", batch(1), points, written(collectors))
            rounds.append({"raw_points_per_s": round(raw), "mqtt_points_per_s": round(via_mqtt),
                           "ratio": round(via_mqtt / raw, 3)})
        stored = count_points(influxd, "ingest", "edgebench_telemetry", "load1")
        if stored != points * args.rounds:
            raise SystemExit(f"the collectors wrote {points * args.rounds} points but InfluxDB holds {stored}")
        delays = end_to_end_delay(broker, influxd, "ingest", args.delay_count, args.delay_rate)
        result = {
            "points_per_round": points, "rounds": rounds, "agents": args.agents, "points_per_message": args.samples,
            "collectors": args.collectors,
            "raw_points_per_s": round(statistics.median(r["raw_points_per_s"] for r in rounds)),
            "mqtt_points_per_s": round(statistics.median(r["mqtt_points_per_s"] for r in rounds)),
            "ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
            "goal_ratio": 0.5, "delay_results": len(delays),
            "delay_p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "delay_p99_ms": round(percentile(delays, 0.99) * 1000, 1) if delays else None,
            "delay_max_ms": round(max(delays) * 1000, 1) if delays else None,
            "dead_letters": sum(c.metric("edgebench_dead_letters_total") for c in collectors),
        }
    finally:
        for service in (*collectors, influxd, broker):
            service.stop()
    print(f"raw line protocol : {result['raw_points_per_s']:>9} points/s  (batches of {args.batch})")
    print(f"MQTT -> collector : {result['mqtt_points_per_s']:>9} points/s  ({args.agents} agents, "
          f"{args.samples} points/message, QoS 1, acked after the write, {args.collectors} collector(s))")
    print(f"ratio             : {result['ratio']:>9}  (goal >= 0.5; median of {args.rounds} paired rounds: "
          f"{', '.join(str(r['ratio']) for r in rounds)})")
    print(f"publish -> queryable: p50 {result['delay_p50_ms']} ms, p99 {result['delay_p99_ms']} ms, "
          f"max {result['delay_max_ms']} ms over {result['delay_results']} results at {args.delay_rate:g}/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
