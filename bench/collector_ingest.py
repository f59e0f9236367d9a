"""Collector ingest: points/s into InfluxDB through MQTT + the collector, against raw line-protocol writes into the
same influxd in the same run; and the end-to-end delay from an agent's publish to the point being queryable.

    .venv/bin/python bench/collector_ingest.py [--agents 20] [--messages 200] [--samples 100] [--rounds 5]
                                               [--collectors 1] [--workers 4] [--pin-influxd] [--json FILE]

Starts its own Mosquitto, influxd (scripts/ensure_services.sh installs them) and collector process(es) on free
loopback ports and stops them by PID. Simulated agents are MQTT v5 clients (in --workers processes) publishing
telemetry batches at QoS 1 as fast as
the broker takes them; they connect once, before the first round (a round times the steady ingest, not 20
connections being set up). Each round writes 400,000 fresh points raw and then 400,000 more through MQTT (a few
seconds each: the first rounds of this bench were 0.3-0.8 s, where the pipeline's start and end weighed as much as
its rate); the ratio reported is the median of the rounds' ratios (paired: both halves of a round see the same
machine load), with the collector's CPU per 1,000 points and the machine's busy CPU. Goal: ingest ratio >= 0.8
(issue 13; docs/fleet.md has the figures, and why one collector cannot reach it on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
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

GOAL_RATIO = 0.8  # issue 13: the collector ingests at least 0.8x what raw line-protocol writes reach
READINGS = ("load1", "mem_available_bytes", "temp_max_c", "cpu_freq_hz")


def telemetry_message(device: str, start_ts: float, samples: int) -> dict:
    """As an agent's outbox sends it: with a msg_id, which the collector deduplicates and acknowledges."""
    return p.envelope(device, time.time(), msg_id=p.new_msg_id(), samples=[
        {"ts": start_ts + i * 1e-3, "readings": {name: float(i % 97) + k for k, name in enumerate(READINGS)}}
        for i in range(samples)])


def raw_baseline(influx: InfluxV1, messages: list[tuple[str, dict]], batch: int) -> tuple[float, float]:
    """Points/s of writing the same number of points directly, in batches, from one process; and the machine's busy
    CPU (% of one core) meanwhile."""
    lines = []
    for topic_name, payload in messages:
        lines.extend(telemetry_points(p.Message(topic_name.split("/")[3], p.TELEMETRY, payload), {}))
    started, machine_before = time.perf_counter(), machine_busy()
    for i in range(0, len(lines), batch):
        influx.write(lines[i:i + batch])
    return len(lines) / (time.perf_counter() - started), busy_percent(machine_before)


def count_points(influxd: Influxd, db: str, measurement: str, field: str) -> int:
    series = influxd.query(db, f"SELECT count({field}) FROM {measurement}")
    return int(series[0]["values"][0][1]) if series else 0


def round_messages(devices: list[str], messages: int, samples: int, base_ts: float) -> list[tuple[str, dict]]:
    """A round's telemetry for ``devices`` (named sim-NNN), each agent with its own time range."""
    return [(p.topic(device, p.TELEMETRY),
             telemetry_message(device, base_ts + (int(device[4:]) * messages + m) * samples * 1e-3, samples))
            for device in devices for m in range(messages)]


def publisher(conn, port: int, devices: list[str], messages: int, samples: int) -> None:
    """A worker process: one MQTT v5 client per agent, connected once; per round, its payloads made and encoded
    ("make", base_ts), then published on "go", every agent in its own thread, QoS 1, waiting for every PUBACK."""
    import paho.mqtt.client as mqtt

    clients = {}
    for device in devices:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{device}", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(50)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients[device] = client
    wait_for(lambda: all(c.is_connected() for c in clients.values()), 60, "the agents to connect")
    conn.send("connected")

    def agent(device: str, payloads: list[bytes]) -> None:
        infos = [clients[device].publish(p.topic(device, p.TELEMETRY), data, qos=1) for data in payloads]
        for info in infos:
            info.wait_for_publish(timeout=120)

    while (command := conn.recv()) != "stop":
        per_agent: dict[str, list[bytes]] = {}
        for topic_name, payload in round_messages(devices, messages, samples, command):
            per_agent.setdefault(topic_name.split("/")[3], []).append(p.encode(p.TELEMETRY, payload))
        conn.send("ready")
        conn.recv()  # "go"
        threads = [threading.Thread(target=agent, args=item) for item in per_agent.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        conn.send("done")
    for client in clients.values():
        client.disconnect()
        client.loop_stop()


class Agents:
    """The simulated agents, in ``workers`` processes (publishing from threads of one process measured the
    bench's own GIL: its 40 threads took turns), connected before the first round: a round times the steady
    ingest, not connections being set up."""

    def __init__(self, port: int, agents: int, workers: int, messages: int, samples: int):
        import multiprocessing

        devices = [f"sim-{a:03d}" for a in range(agents)]
        self.conns, self.procs = [], []
        for w in range(workers):
            mine = devices[w::workers]
            if not mine:
                continue
            ours, theirs = multiprocessing.Pipe()
            proc = multiprocessing.Process(target=publisher, daemon=True, args=(
                theirs, port, mine, messages, samples))
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)
        self._all("connected")

    def _all(self, expected: str) -> None:
        for conn in self.conns:
            if (answer := conn.recv()) != expected:
                raise RuntimeError(f"a publisher answered {answer!r}, not {expected!r}")

    def prepare(self, base_ts: float) -> None:
        for conn in self.conns:
            conn.send(base_ts)
        self._all("ready")

    def publish(self) -> None:
        for conn in self.conns:
            conn.send("go")
        self._all("done")

    def close(self) -> None:
        for conn in self.conns:
            conn.send("stop")
        for proc in self.procs:
            proc.join(timeout=30)


def ingest(agents: Agents, collectors: list[Collector], base_ts: float, points: int,
           written_before: float) -> tuple[float, float, float]:
    """Points/s through MQTT and the collectors; the collectors' CPU ms per 1,000 points and the machine's busy CPU
    (% of one core) meanwhile."""
    agents.prepare(base_ts)
    target = written_before + points
    cpu_before, machine_before = collectors_cpu(collectors), machine_busy()
    started = time.perf_counter()
    agents.publish()
    # Timing: until the collectors' last write returned (as for the raw writes: a 1.x write is queryable once it
    # returns); polling their /metrics is cheap, a count() query over the growing data would load influxd.
    wait_for(lambda: written(collectors) >= target, 600, "every point written", interval=0.01)
    elapsed = time.perf_counter() - started
    collector_ms = (collectors_cpu(collectors) - cpu_before) / points * 1e6  # s/point -> ms/1,000 points
    return points / elapsed, collector_ms, busy_percent(machine_before)


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` onto ``cores`` (threads it makes later inherit it from theirs)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds) now: two readings give its busy share between them."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0), time.monotonic()


def busy_percent(before: tuple[float, float]) -> float:
    """The machine's busy CPU since ``before``, in % of one core (200 = both cores of this machine busy)."""
    busy, when = machine_busy()
    return 100 * (busy - before[0]) / (when - before[1])


def collectors_cpu(collectors: list[Collector]) -> float:
    import psutil

    return sum(sum(psutil.Process(c.proc.pid).cpu_times()[:2]) for c in collectors)


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
    parser.add_argument("--messages", type=int, default=200,
                        help="telemetry messages per agent and round (default 200: 400,000 points a round)")
    parser.add_argument("--samples", type=int, default=100, help="points per message (default 100)")
    parser.add_argument("--workers", type=int, default=4, help="publisher processes the agents are spread over "
                        "(default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds, raw then MQTT (default 5)")
    parser.add_argument("--collectors", type=int, default=1,
                        help="collectors sharing the load in one share group (default 1: the figure to quote)")
    parser.add_argument("--batch", type=int, default=5000, help="raw baseline batch size (default 5000)")
    parser.add_argument("--delay-count", type=int, default=300, help="results for the delay measurement")
    parser.add_argument("--delay-rate", type=float, default=50.0, help="results/s for the delay measurement")
    parser.add_argument("--pin-influxd", action="store_true",
                        help="give InfluxDB half the cores to itself (as a host of its own) and run everything else, "
                        "the simulated agents included, on the other half (default: every process on every core)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgebench-ingest-"))
    broker, influxd = Mosquitto(work / "mosquitto"), Influxd(work / "influxd")
    cores = sorted(os.sched_getaffinity(0))
    database_cores = set(cores[-max(1, len(cores) // 2):]) if args.pin_influxd and len(cores) > 1 else None
    if database_cores:  # everything this bench starts runs on the other cores, InfluxDB on its own
        os.sched_setaffinity(0, set(cores) - database_cores)
    broker.start()
    influxd.start()
    if database_cores:
        pin(influxd.proc.pid, database_cores)
    collectors = [Collector(work / f"collector{n}", broker.url, influxd.url, "ingest",
                            extra=("--client-id", f"bench-collector-{n}")) for n in range(args.collectors)]
    points = args.agents * args.messages * args.samples
    agents = None
    try:
        raw_db = InfluxV1(influxd.url, "raw")
        raw_db.create_database()
        for collector in collectors:
            collector.start()
        agents = Agents(broker.port, args.agents, args.workers, args.messages, args.samples)
        devices = [f"sim-{a:03d}" for a in range(args.agents)]
        rounds = []
        for r in range(args.rounds):  # each round writes fresh points (its own time range) both ways
            raw_ts, mqtt_ts = 1.7e9 + 2 * r * 1e6, 1.7e9 + (2 * r + 1) * 1e6
            raw, raw_busy = raw_baseline(raw_db, round_messages(devices, args.messages, args.samples, raw_ts),
                                         args.batch)
            via_mqtt, cpu_ms, mqtt_busy = ingest(agents, collectors, mqtt_ts, points, written(collectors))
            rounds.append({"raw_points_per_s": round(raw), "mqtt_points_per_s": round(via_mqtt),
                           "ratio": round(via_mqtt / raw, 3), "collector_cpu_ms_per_1000_points": round(cpu_ms, 2),
                           "machine_busy_pct_raw": round(raw_busy), "machine_busy_pct_mqtt": round(mqtt_busy)})
        stored = count_points(influxd, "ingest", "edgebench_telemetry", "load1")
        if stored != points * args.rounds:
            raise SystemExit(f"the collectors wrote {points * args.rounds} points but InfluxDB holds {stored}")
        delays = end_to_end_delay(broker, influxd, "ingest", args.delay_count, args.delay_rate)
        result = {
            "points_per_round": points, "rounds": rounds, "agents": args.agents, "points_per_message": args.samples,
            "collectors": args.collectors,
            "influxd_cores": sorted(database_cores) if database_cores else "shared",
            "raw_points_per_s": round(statistics.median(r["raw_points_per_s"] for r in rounds)),
            "mqtt_points_per_s": round(statistics.median(r["mqtt_points_per_s"] for r in rounds)),
            "ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
            "collector_cpu_ms_per_1000_points": statistics.median(r["collector_cpu_ms_per_1000_points"]
                                                                  for r in rounds),
            "machine_busy_pct_raw": statistics.median(r["machine_busy_pct_raw"] for r in rounds),
            "machine_busy_pct_mqtt": statistics.median(r["machine_busy_pct_mqtt"] for r in rounds),
            "goal_ratio": GOAL_RATIO, "delay_results": len(delays),
            "delay_p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "delay_p99_ms": round(percentile(delays, 0.99) * 1000, 1) if delays else None,
            "delay_max_ms": round(max(delays) * 1000, 1) if delays else None,
            "dead_letters": sum(c.metric("edgebench_dead_letters_total") for c in collectors),
        }
    finally:
        if agents is not None:
            agents.close()
        for service in (*collectors, influxd, broker):
            service.stop()
    print(f"raw line protocol : {result['raw_points_per_s']:>9} points/s  (batches of {args.batch})")
    print(f"MQTT -> collector : {result['mqtt_points_per_s']:>9} points/s  ({args.agents} agents, "
          f"{args.samples} points/message, QoS 1, acked after the write, {args.collectors} collector(s))")
    print(f"ratio             : {result['ratio']:>9}  (goal >= {GOAL_RATIO}; median of {args.rounds} paired rounds: "
          f"{', '.join(str(r['ratio']) for r in rounds)})")
    print(f"collector CPU     : {result['collector_cpu_ms_per_1000_points']:>9} ms per 1,000 points (median of the "
          f"rounds; {args.collectors} collector(s) together)")
    print(f"machine busy      : {result['machine_busy_pct_raw']:>9} % of a core during raw writes, "
          f"{result['machine_busy_pct_mqtt']} % through MQTT ({len(cores)} cores; InfluxDB on "
          + (f"core(s) {sorted(database_cores)} alone)" if database_cores else "every core, shared)"))
    print(f"publish -> queryable: p50 {result['delay_p50_ms']} ms, p99 {result['delay_p99_ms']} ms, "
          f"max {result['delay_max_ms']} ms over {result['delay_results']} results at {args.delay_rate:g}/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
