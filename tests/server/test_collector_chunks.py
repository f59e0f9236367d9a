"""The collector applies the messages waiting for it as one chunk: a few registry calls per chunk, whatever its size
(one commit, one lookup of its msg ids), with the same outcome per message as one at a time: duplicates (in the
pipeline, stored, or twice in the chunk) write nothing, refusals are dead-lettered, and a message the code cannot
handle costs only itself."""

from __future__ import annotations

import threading
import time

import pytest

from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.mqtt import MqttSettings
from edgebench.server import collector as collector_module
from edgebench.server.collector import Collector, CollectorConfig, Incoming
from edgebench.server.metrics import Metrics
from edgebench.server.registry import Registry
from tests.server.test_collector_registry_down import Client
from tests.server.test_registry_backends import CountingStore, job


@pytest.fixture
def collector(tmp_path) -> Collector:
    registry = Registry(tmp_path / "registry.sqlite3")
    registry.add_jobs([job("job-a", device="dev1"), job("job-b", device="dev2")], "batch")
    registry.record_delivered([("msg-stored-before", "dev1")])
    collector = Collector(CollectorConfig(MqttSettings(), "http://127.0.0.1:9", "db", tmp_path), registry, Metrics())
    collector.client = Client()
    yield collector
    registry.close()


def message(device: str, kind: str, **fields) -> Incoming:
    payload = p.envelope(device, time.time(), **fields)
    return Incoming(p.topic(device, kind), p.encode(kind, payload), mid=0, qos=1, received=time.time())


def heartbeat(device: str, uptime: float) -> Incoming:
    return message(device, p.HEARTBEAT, uptime_s=uptime, outbox_depth=0, telemetry_dropped=0)


def telemetry(device: str, msg_id: str) -> Incoming:
    return message(device, p.TELEMETRY, msg_id=f"msg-{msg_id:0>8}",
                   samples=[{"ts": time.time(), "readings": {"load1": 0.5}}])


def result(device: str, job_id: str) -> Incoming:
    return message(device, p.EVENTS, msg_id=f"r-{job_id}-{device}", event="result", job_id=job_id, run_id=job_id,
                   finished_ts=time.time(), summary={"stats": {"count": 3, "p50_ms": 1.0}, "model": {"name": "m"},
                                                     "runtime": {"runtime": "litert"}})


def test_a_chunk_costs_a_few_registry_calls_and_each_message_gets_its_outcome(collector):
    chunk = [heartbeat(f"dev{n % 50}", n) for n in range(300)]
    chunk += [telemetry(f"dev{n % 50}", f"t{n}") for n in range(150)]
    chunk += [telemetry("dev3", "t7"), telemetry("dev4", "stored-before")]  # again in the chunk; stored before
    chunk += [message("dev9", p.STATUS, state="online", labels={"class": "rpi5"}, agent_version="1.0")]
    chunk += [result("dev1", "job-a"), result("dev1", "job-b")]  # job-b was sent to dev2
    chunk += [Incoming(p.topic("dev5", p.TELEMETRY), b"{not json", mid=0, qos=1, received=time.time())]
    collector._pending_ids.add("msg-000000t3")  # in the pipeline: a duplicate as well
    counted = collector.registry._store = CountingStore(collector.registry._store)

    points = collector._apply_safely(chunk)

    # lookups: jobs, msg ids, labels; updates: statuses, heartbeats; two dead letters
    assert counted.transactions == 7, counted.transactions
    outcome = [(item.msg_id, item.duplicate, bool(its)) for item, its in zip(chunk, points) if item.msg_id]
    assert [m for m, duplicate, _ in outcome if duplicate] == ["msg-000000t3", "msg-000000t7", "msg-stored-before"]
    assert all(written for m, duplicate, written in outcome if not duplicate and "-000000t" in m)
    assert len([written for _, _, written in outcome if written]) == 149 + 1  # telemetry but t3, the result of job-a
    assert chunk[-2].refused == "job job-b was sent to another device" and points[-2] == []
    assert "JSON" in chunk[-1].refused and points[-1] == []
    assert chunk[-3].job_event[0] == "dev1" and chunk[-3].job_event[1]["job_id"] == "job-a"
    assert {"msg-000000t0", "msg-0000t149", "r-job-a-dev1"} <= collector._pending_ids
    devices = {d["device_id"]: d for d in collector.registry.devices()}
    assert devices["dev7"]["heartbeat"]["uptime_s"] == 257  # the newest of the chunk's heartbeats of dev7
    assert devices["dev9"]["labels"] == {"class": "rpi5"}
    assert len(collector.registry.dead_letters()) == 2

    before = counted.transactions
    collector._store(chunk, [])  # no points to write: InfluxDB is not there
    assert counted.transactions == before + 1  # the job event, its device seen and the msg ids: one transaction
    assert collector.registry.jobs(job_id="job-a")[0]["state"] == "done"
    assert collector.registry.delivered("msg-0000t149") and not collector.registry.delivered("msg-000000t3")
    assert "msg-0000t149" not in collector._pending_ids


def test_a_message_the_code_cannot_handle_costs_only_itself(collector, monkeypatch):
    real = collector_module.points_for

    def points_for(msg, labels, received):
        if msg.device == "dev2":
            raise KeyError("a field the code did not expect")
        return real(msg, labels, received)

    monkeypatch.setattr(collector_module, "points_for", points_for)
    chunk = [telemetry("dev1", "a"), telemetry("dev2", "b"), heartbeat("dev3", 1.0), telemetry("dev1", "a")]
    points = collector._apply_safely(chunk)
    assert [bool(its) for its in points] == [True, False, True, False]
    assert chunk[1].refused.startswith("could not be applied: KeyError") and not chunk[0].refused
    assert chunk[3].duplicate and collector._pending_ids == {"msg-0000000a"}  # "b" was refused: not in the pipeline
    assert [d["topic"] for d in collector.registry.dead_letters()] == [p.topic("dev2", p.TELEMETRY)]


class HeldInflux:
    """InfluxDB whose writes of points naming ``held`` wait until ``release`` is set; it records what it took."""

    def __init__(self, held: str):
        self.held, self.release, self.taken, self.lock = held, threading.Event(), [], threading.Lock()
        self.waiting = threading.Event()

    def write(self, lines):
        if any(self.held in line for line in lines):
            self.waiting.set()
            assert self.release.wait(30), "never released"
        with self.lock:
            self.taken.extend(lines)

    def create_database(self):
        pass


def test_batches_written_at_once_are_acknowledged_in_the_order_they_came(collector):
    """Two writers: the second batch is in InfluxDB while the first still waits for it, and not one of its
    messages is acknowledged (MQTT PUBACK, the devices' acks, the registry's delivered ids) before the first's."""
    influx = collector.influx = HeldInflux("device=slow")
    first = [telemetry("slow", f"s{n}") for n in range(3)]
    second = [telemetry("fast", f"f{n}") for n in range(3)]
    for mid, item in enumerate(first + second, start=1):
        item.mid = mid
    batches = [(seq, chunk, [line for its in collector._apply_safely(chunk) for line in its])
               for seq, chunk in enumerate((first, second))]
    writers = [threading.Thread(target=collector._store, args=(chunk, lines, seq)) for seq, chunk, lines in batches]
    writers[0].start()
    assert influx.waiting.wait(30)  # the first batch's write is under way, held
    writers[1].start()
    deadline = time.monotonic() + 30
    while not any("device=fast" in line for line in influx.taken) and time.monotonic() < deadline:
        time.sleep(0.01)  # the second batch's points reach InfluxDB while the first's wait
    assert any("device=fast" in line for line in influx.taken)
    writers[1].join(0.2)
    assert writers[1].is_alive() and collector.client.acked == []  # written, waiting for its turn
    assert not collector.registry.delivered("msg-000000f0")
    influx.release.set()
    for writer in writers:
        writer.join(30)
    assert collector.client.acked == [1, 2, 3, 4, 5, 6]  # PUBACKs in the order the messages came
    assert collector.client.published == [p.topic("slow", p.ACKS), p.topic("fast", p.ACKS)]
    assert collector.registry.delivered("msg-000000f0") and collector.registry.delivered("msg-000000s2")
