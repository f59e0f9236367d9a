"""Synthetic boards that publish results and telemetry through the agent's real delivery path, for fault tests and
the fleet's fault bench (bench/fleet_faults.py).

Each device has its own SQLite store and Outbox (agent/fleet/store.py, agent/fleet/outbox.py) and an MQTT v5
persistent session made by agent/fleet/mqtt.py, exactly as `edgebench agent` has; only the jobs are synthetic: a
result is committed the way the agent commits a job's result (``finish_job``: the job's state and its result event in
one transaction), at a steady rate, whatever state the broker, the collector or InfluxDB are in. Every result has a
unique run id (``{device}-r{n:06d}``) and every telemetry sample a unique ``seq`` reading, so what lands in InfluxDB
can be counted by id afterwards.

    python bench/fleetload.py --mqtt mqtt://127.0.0.1:1883 --device load-0 --data-dir DIR \\
        --results-per-s 20 --telemetry-per-s 10 --seconds 30

run as a process (it may be SIGKILLed and started again on the same --data-dir: it resumes after the last result
it committed) or used in-process (``SyntheticDevice``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgebench.agent.fleet import mqtt  # noqa: E402
from edgebench.agent.fleet import protocol as p  # noqa: E402
from edgebench.agent.fleet.outbox import Outbox  # noqa: E402
from edgebench.agent.fleet.store import AgentStore  # noqa: E402

log = logging.getLogger("fleetload")
SAMPLES_PER_BATCH = 6  # as the agent: a telemetry message every 6 samples


def result_summary(n: int) -> dict:
    """A small but valid bench summary (protocol._result): one point in edgebench_result."""
    return {"model": {"name": "synthetic", "sha256": "0" * 64, "format": "onnx"},
            "runtime": {"runtime": "onnxruntime", "used": ["CPUExecutionProvider"], "threads": 1},
            "stats": {"count": 100, "p50_ms": 1.0 + n % 7, "p90_ms": 2.0, "mean_ms": 1.5},
            "validity": {"valid": True}}


class SyntheticDevice:
    def __init__(self, mqtt_url: str, device: str, data_dir: Path, results_per_s: float = 10.0,
                 telemetry_per_s: float = 0.0, ack_wait_s: float = 5.0, username: Optional[str] = None,
                 password: Optional[str] = None, max_unacked: int = 100):
        self.device, self.results_per_s, self.telemetry_per_s = device, results_per_s, telemetry_per_s
        self.settings = mqtt.parse_url(mqtt_url)
        self.settings.username, self.settings.password = username, password
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = AgentStore(data_dir / "agent.sqlite3", max_telemetry=1_000_000)
        self.client: Any = mqtt.make_client(self.settings, client_id=f"edgebench-agent-{device}")
        self.outbox = Outbox(self.store, lambda t, data: self.client.publish(t, data, qos=1).mid,
                             ack_wait_s=ack_wait_s, max_outstanding=max_unacked)
        self.connected = threading.Event()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.results = len(self.store.job_ids("done"))  # resume after a kill: results already committed
        self.telemetry_seq = self.store.counter("synthetic_telemetry_seq")
        self._threads: list[threading.Thread] = []

    def result_ids(self) -> list[str]:
        """Run ids of every result committed so far (the jobs table keeps them after the outbox row is gone)."""
        return self.store.job_ids("done")

    # ------------------------------------------------------------ MQTT wiring, as in agent/fleet/daemon.py

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(p.topic(self.device, p.ACKS), 1)
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.outbox.on_puback(mid, reason)
        self.wake.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            msg = p.validate(message.topic, message.payload)
        except p.ProtocolError:
            return
        if msg.kind == p.ACKS:
            self.outbox.on_acks(msg.payload)
            self.wake.set()

    # ------------------------------------------------------------ load

    def start(self) -> None:
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_publish, self.client.on_message = self._on_publish, self._on_message
        mqtt.connect(self.client, self.settings)
        self._threads = [threading.Thread(target=self._flush_loop, daemon=True)]
        self._threads[0].start()

    def produce(self, seconds: float) -> None:
        """Commit results and telemetry at the configured rates for ``seconds`` (blocking)."""
        started = time.monotonic()
        next_result = next_sample = started
        batch: list[dict] = []
        while time.monotonic() - started < seconds and not self.stop_event.is_set():
            now = time.monotonic()
            if self.results_per_s and now >= next_result:
                self.commit_result()
                next_result += 1.0 / self.results_per_s
            if self.telemetry_per_s and now >= next_sample:
                batch.append({"ts": time.time(), "readings": {"seq": float(self.telemetry_seq), "load1": 0.5}})
                self.telemetry_seq += 1
                next_sample += 1.0 / self.telemetry_per_s
                if len(batch) >= SAMPLES_PER_BATCH:
                    self.commit_telemetry(batch)
                    batch = []
            time.sleep(max(0.0, min(next_result if self.results_per_s else now + 0.05,
                                    next_sample if self.telemetry_per_s else now + 0.05) - time.monotonic()))
        if batch:
            self.commit_telemetry(batch)

    def commit_result(self) -> str:
        run_id = f"{self.device}-r{self.results:06d}"
        self.results += 1
        self.store.add_job(run_id, "{}")
        msg_id = p.new_msg_id()
        payload = p.envelope(self.device, time.time(), msg_id=msg_id, event="result", job_id=run_id, run_id=run_id,
                             finished_ts=time.time(), summary=result_summary(self.results))
        self.store.finish_job(run_id, "done", p.topic(self.device, p.EVENTS), p.encode(p.EVENTS, payload),
                              "result", msg_id)
        self.wake.set()
        return run_id

    def commit_telemetry(self, samples: list[dict]) -> None:
        msg_id = p.new_msg_id()
        payload = p.envelope(self.device, time.time(), msg_id=msg_id, samples=samples)
        self.store.enqueue(p.topic(self.device, p.TELEMETRY), p.encode(p.TELEMETRY, payload), "telemetry", msg_id)
        self.store.bump("synthetic_telemetry_seq", len(samples))  # resume numbering after a kill
        self.wake.set()

    def _flush_loop(self) -> None:
        while not self.stop_event.is_set():
            self.outbox.flush(self.connected.is_set())
            self.wake.wait(0.05)
            self.wake.clear()

    def depth(self) -> int:
        return self.store.depth()

    def close(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()


class Load:
    """Synthetic devices producing for ``seconds`` in background threads, then drained."""

    def __init__(self, mqtt_url: str, root: Path, names: list[str], results_per_s: float = 10.0,
                 telemetry_per_s: float = 0.0, ack_wait_s: float = 3.0):
        self.devices = [SyntheticDevice(mqtt_url, name, root / name, results_per_s, telemetry_per_s,
                                        ack_wait_s=ack_wait_s) for name in names]
        self.threads: list[threading.Thread] = []

    def start(self, seconds: float) -> None:
        for device in self.devices:
            device.start()
            thread = threading.Thread(target=device.produce, args=(seconds,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def produced(self) -> None:
        for thread in self.threads:
            thread.join()

    def drained(self) -> bool:
        return all(device.depth() == 0 for device in self.devices)

    def close(self) -> None:
        for device in self.devices:
            device.close()

    def results(self) -> int:
        return sum(device.results for device in self.devices)

    def telemetry(self) -> int:
        return sum(device.telemetry_seq for device in self.devices)

    def counters(self) -> dict:
        totals: dict = {}
        for device in self.devices:
            for key, value in device.outbox.counters().items():
                totals[key] = totals.get(key, 0) + value
        return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mqtt", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--results-per-s", type=float, default=10.0)
    parser.add_argument("--telemetry-per-s", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ack-wait", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=120.0, help="then wait this long for every ack")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="fleetload %(levelname)s %(message)s")
    device = SyntheticDevice(args.mqtt, args.device, args.data_dir, args.results_per_s, args.telemetry_per_s,
                             args.ack_wait)
    device.start()
    device.produce(args.seconds)
    deadline = time.monotonic() + args.drain
    while device.depth() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = device.depth()
    print(json.dumps({"device": args.device, "results": device.results, "telemetry": device.telemetry_seq,
                      "left": left, **device.outbox.counters()}))
    device.close()
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
