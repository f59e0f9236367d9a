"""Fleet scale: N simulated boards against one collector, then two collectors in one share group, on this machine.

    .venv/bin/python bench/fleet_scale.py [--boards 250,500,1000,1500,2000] [--collectors 1,2] [--seconds 60]
                                          [--warmup 10] [--rate 1.0] [--json FILE] [--quick]

Every case (N boards x collectors) gets its own Mosquitto (the shipped deploy/mosquitto settings for queues,
inflight and packet size, with autosave every 10 s; plain TCP, anonymous: no TLS, no Dynamic Security), influxd and
collector(s), started on free loopback ports and stopped by PID; two collectors share one PostgreSQL registry (a
database made with a random name on 127.0.0.1:5432, dropped afterwards) and one --models-dir. Then:

- N boards, each a separate MQTT v5 client with its own client id (``edgebench-agent-{device}``) and persistent
  session (clean_start=False, SessionExpiryInterval), driven by a few worker processes (--boards-per-worker, 500),
  each running paho's external event loop (loop_read/loop_write/loop_misc on an epoll selector) for its boards in
  one thread. A board does what an agent does on the wire: on connect, ``status`` online (retained, with a last
  will) and ``inventory``, subscriptions to its ``jobs``, ``cancel``, ``model-chunk``, ``acks``; then heartbeats
  (QoS 0), telemetry batches of SAMPLES_PER_BATCH samples and results (QoS 1, each with a ``msg_id``) built with
  protocol.envelope/encode. Telemetry and results go through an in-memory outbox with the agent's rules
  (agent/fleet/outbox.py): 20 messages wait for their PUBACK at most, 100 for the collector's ack (newer ones
  wait), a message leaves only when the collector's ``acks`` names it (stored or refused), one not acknowledged
  is published again after --ack-wait (30 s) doubling, 2 s after a "no matching subscribers" PUBACK. The agent's
  own Outbox/AgentStore (bench/fleetload.py's SyntheticDevice) is not used: it costs two threads and an SQLite
  file per board and a flush poll every 50 ms each (40,000 SQLite queries a second at 2,000 boards), which on two
  cores would measure the simulator.
- Rates: the agent's defaults give a board a heartbeat every 30 s, a telemetry batch every 60 s (a sample every
  10 s, 6 per batch) and, here, a result every 180 s (a board running benchmark jobs back to back): 0.0556
  messages/s and 0.139 points/s per board. ``--rate R`` scales that mix to R messages/s per board (default 1.0, as
  the issue's outside probe: then a heartbeat every 1.67 s, a telemetry batch every 3.33 s, a result every 10 s;
  2.5 points/s). Results carry no raw latency samples unless --result-samples N (a real one carries up to 10,000,
  one edgebench_latency point each).
- Measured over --seconds after --warmup: offered (what the boards created) and achieved (the collectors'
  ``edgebench_messages_stored_total`` and ``edgebench_points_written_total``) messages/s and points/s;
  publish->queryable latency of the results of probe boards (a tenth of the boards, at least 50, labelled
  probe=1: from a result's first publish to the first poll of InfluxDB that returns its run id, polled every 50 ms
  for run ids since the oldest not yet seen: an upper bound, within the poll period plus the query's time);
  publish->ack (to the board receiving the collector's ``acks`` naming it:
  results and telemetry); the collectors' RSS and CPU (psutil on their PIDs, sampled every second: mean and max;
  CPU of the busiest thread, the pipeline's limit in one Python process); the CPU of Mosquitto, influxd,
  PostgreSQL, the simulator itself (it shares the cores with what it measures) and the machine.
- Counted afterwards in InfluxDB, by id: every result by run id, every telemetry batch by its samples' ``seq``
  reading (6 per batch), heartbeats by count per device (QoS 0: the protocol allows losing them). A message is
  stored exactly once, refused by the collector (counted), lost (acknowledged as stored and not there), or unstored
  (never acknowledged, still in its board's outbox when the bench stopped: a real agent would publish it again);
  duplicates the collector dropped by msg_id and publications again are counted too.
- Why: each part's CPU, whether the simulator kept its schedule, the collectors' InfluxDB writer busy time, the
  registry's commits/s (PostgreSQL), and with --profile (py-spy on PATH or $PY_SPY; not a dependency) where the
  collectors' prepare and write threads spend their time (registry calls, InfluxDB writes, waiting for messages).

Prints one table (and where the limit is, and why) and writes --json FILE. A full sweep takes about 15 minutes;
--quick (2 minutes) runs 100 and 300 boards for 15 s each. The load average at the start and end is recorded: on a
busy machine the figures say more about the machine than about the fleet.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import heapq
import http.client
import inspect
import json
import math
import multiprocessing as mp
import os
import queue
import random
import secrets
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # localfleet
sys.path.insert(0, str(REPO / "bench"))

from fleetload import SAMPLES_PER_BATCH  # noqa: E402

from edgebench.agent.fleet import mqtt  # noqa: E402
from edgebench.agent.fleet import outbox as agent_outbox  # noqa: E402
from edgebench.agent.fleet import protocol as p  # noqa: E402
from edgebench.agent.fleet.daemon import AgentConfig  # noqa: E402

# ---------------------------------------------------------------- the agent's defaults (what a board does)

_AGENT = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
_OUTBOX = inspect.signature(agent_outbox.Outbox.__init__).parameters
HEARTBEAT_S = float(_AGENT["heartbeat_s"])  # 30 s
TELEMETRY_S = float(_AGENT["telemetry_s"])  # 10 s a sample; a batch every SAMPLES_PER_BATCH samples
ACK_WAIT_S = float(_AGENT["ack_wait_s"])  # 30 s, doubling up to outbox.MAX_ACK_WAIT_S
MAX_UNACKED = int(_AGENT["max_unacked"])  # 100
WINDOW = int(_OUTBOX["window"].default)  # 20 messages waiting for their PUBACK
RESULT_S = 180.0  # a result every 3 minutes: a board running benchmark jobs back to back
BASE_RATE = 1 / HEARTBEAT_S + 1 / (TELEMETRY_S * SAMPLES_PER_BATCH) + 1 / RESULT_S  # messages/s per board
BASE_POINTS = 1 / HEARTBEAT_S + 1 / TELEMETRY_S + 1 / RESULT_S  # points/s per board (no raw latency samples)

# The shipped broker settings (deploy/mosquitto/mosquitto.conf) that bear on load; they override localfleet's.
SHIPPED_BROKER = ("allow_anonymous true\nautosave_interval 10\nmax_queued_messages 20000\n"
                  "max_queued_bytes 268435456\nmax_inflight_messages 20\nmax_packet_size 300000")
POSTGRES = os.environ.get("EDGEBENCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
POLL_S = 0.05  # the queryable poller's period
PROBES_MIN = 50  # boards whose results the poller looks for: a tenth of them, at least this many
GIVE_UP_S = 30.0  # a result not queryable this long after its commit is left to the count afterwards


def periods(rate: float) -> dict:
    """Seconds between a board's heartbeats, telemetry batches, telemetry samples and results at ``rate``
    messages/s per board (0: the agent's defaults)."""
    scale = rate / BASE_RATE if rate > 0 else 1.0
    return {"heartbeat_s": HEARTBEAT_S / scale, "telemetry_batch_s": TELEMETRY_S * SAMPLES_PER_BATCH / scale,
            "telemetry_sample_s": TELEMETRY_S / scale, "result_s": RESULT_S / scale,
            "messages_per_s": BASE_RATE * scale, "points_per_s": BASE_POINTS * scale}


# ---------------------------------------------------------------- one simulated board (in a worker process)

class Msg:
    """An outbox message: what the agent's outbox row holds, in memory."""

    __slots__ = ("msg_id", "topic", "payload", "kind", "key", "commit", "first_pub", "attempts", "next_try",
                 "inflight", "ack", "refused")

    def __init__(self, msg_id: str, topic: str, payload: bytes, kind: str, key: Any, commit: float):
        self.msg_id, self.topic, self.payload, self.kind, self.key, self.commit = \
            msg_id, topic, payload, kind, key, commit
        self.first_pub: Optional[float] = None
        self.attempts = 0  # publications the broker took (PUBACK)
        self.next_try = commit
        self.inflight = False
        self.ack: Optional[float] = None
        self.refused: Optional[str] = None


def wait_after(attempts: int, ack_wait: float) -> float:
    return min(ack_wait * 2 ** max(attempts - 1, 0), agent_outbox.MAX_ACK_WAIT_S)


class Board:
    def __init__(self, worker: Worker, device: str):
        self.w, self.device = worker, device
        self.topics = {kind: p.topic(device, kind) for kind in (p.STATUS, p.INVENTORY, p.HEARTBEAT, p.TELEMETRY,
                                                                 p.EVENTS)}
        self.subscriptions = [(p.topic(device, kind), 1) for kind in (p.JOBS, p.CANCEL, p.MODEL_CHUNK, p.ACKS)]
        self.client = mqtt.make_client(worker.settings, client_id=f"edgebench-agent-{device}")
        self.client.user_data_set(self)
        self.probe = device in worker.probes  # its results' queryable latency is measured (label probe=1)
        self.labels = {**worker.labels, "probe": "1"} if self.probe else worker.labels
        self.client.will_set(self.topics[p.STATUS], p.encode(p.STATUS, p.envelope(
            device, 0, state="offline", agent_version="fleet-scale", labels=self.labels)), qos=1, retain=True)
        for name in ("on_connect", "on_disconnect", "on_publish", "on_message", "on_socket_open",
                     "on_socket_close", "on_socket_register_write", "on_socket_unregister_write"):
            setattr(self.client, name, getattr(worker, "_" + name))
        self.connected = False
        self.ever_connected = False
        self.pending: dict[str, Msg] = {}  # msg_id -> message, in commit order
        self.inflight: dict[int, Msg] = {}  # paho mid -> message waiting for its PUBACK
        self.outstanding = 0  # published (PUBACKed) and not yet acknowledged by the collector
        self.done: list[Msg] = []
        self.results = self.seq = 0
        self.heartbeats: list[float] = []  # publish times of heartbeats handed to paho
        self.started = time.time()
        self.resent = self.refused_by_collector = self.refused_by_broker = self.no_subscriber = 0
        self.held_back = 0  # messages that waited for the windows (not published at once)
        self.disconnects = 0

    # ------------------------------------------------------------ the outbox, as agent/fleet/outbox.py

    def commit(self, kind: str, key: Any, topic: str, build) -> Msg:
        msg_id = p.new_msg_id()
        now = time.time()
        msg = Msg(msg_id, topic, build(msg_id, now), kind, key, now)
        self.pending[msg_id] = msg
        self.flush(now)
        if msg.first_pub is None:
            self.held_back += 1
        return msg

    def flush(self, now: float) -> None:
        if not self.connected:
            return
        room = WINDOW - len(self.inflight)
        for msg in self.pending.values():
            if room <= 0:
                return
            if msg.inflight or msg.next_try > now or (msg.attempts == 0 and self.outstanding >= MAX_UNACKED):
                continue
            info = self.client.publish(msg.topic, msg.payload, qos=1)
            if info.rc != 0:
                return
            msg.inflight = True
            self.inflight[info.mid] = msg
            if msg.first_pub is None:
                msg.first_pub = now
            else:
                self.resent += 1  # a publication again (counted here: its ack may come before its PUBACK)
            room -= 1

    def on_puback(self, mid: int, code: int) -> None:
        msg = self.inflight.pop(mid, None)
        if msg is None:
            return
        msg.inflight = False
        if msg.msg_id not in self.pending:  # acknowledged by the collector before the broker's PUBACK was read
            return
        now = time.time()
        if code >= 0x80:
            self.refused_by_broker += 1
            msg.next_try = math.inf
            return
        msg.attempts += 1
        if msg.attempts == 1:
            self.outstanding += 1
        if code == agent_outbox.NO_MATCHING_SUBSCRIBERS:
            self.no_subscriber += 1
            msg.next_try = now + min(2.0 * 2 ** (msg.attempts - 1), wait_after(msg.attempts, self.w.ack_wait))
        else:
            msg.next_try = now + wait_after(msg.attempts, self.w.ack_wait)

    def on_acks(self, payload: dict) -> None:
        now = time.time()
        entries = [(msg_id, None) for msg_id in payload.get("ids") or []] + \
            [(entry["id"], entry["reason"]) for entry in payload.get("refused") or []]
        for msg_id, reason in entries:
            msg = self.pending.pop(msg_id, None)
            if msg is None:
                continue  # acknowledged twice (a message published again): already gone
            msg.ack, msg.refused = now, reason
            if reason is not None:
                self.refused_by_collector += 1
            if msg.attempts > 0:
                self.outstanding -= 1
            self.done.append(msg)

    # ------------------------------------------------------------ what an agent publishes

    def heartbeat(self, now: float) -> None:
        if not self.connected:
            return
        payload = p.envelope(self.device, now, uptime_s=round(now - self.started, 3), outbox_depth=len(self.pending),
                             telemetry_dropped=0, job_id=None, unacked=self.outstanding, resent=self.resent,
                             refused=self.refused_by_collector)
        if self.client.publish(self.topics[p.HEARTBEAT], p.encode(p.HEARTBEAT, payload), qos=0).rc == 0:
            self.heartbeats.append(now)

    def telemetry(self, sample_s: float) -> None:
        first, rng = self.seq, self.w.rng
        self.seq += SAMPLES_PER_BATCH

        def build(msg_id: str, now: float) -> bytes:
            samples = [{"ts": round(now - (SAMPLES_PER_BATCH - 1 - i) * sample_s, 6),
                        "readings": {"seq": float(first + i), "load1": round(rng.uniform(0.1, 3.5), 2),
                                     "mem_available_bytes": float(rng.randrange(200_000_000, 4_000_000_000)),
                                     "temp_max_c": round(rng.uniform(38.0, 82.0), 1),
                                     "cpu_freq_hz": float(rng.choice((600, 1200, 1800, 2400)) * 1_000_000)}}
                       for i in range(SAMPLES_PER_BATCH)]
            return p.encode(p.TELEMETRY, p.envelope(self.device, now, msg_id=msg_id, samples=samples))

        self.commit("telemetry", first, self.topics[p.TELEMETRY], build)

    def result(self, samples: int) -> None:
        run_id = f"{self.device}-r{self.results:06d}"
        n, rng = self.results, self.w.rng
        self.results += 1

        def build(msg_id: str, now: float) -> bytes:
            extra = {}
            if samples:
                extra["samples"] = {"latency_ns": [rng.randrange(900_000, 2_000_000) for _ in range(samples)],
                                    "total": samples}
            return p.encode(p.EVENTS, p.envelope(self.device, now, msg_id=msg_id, event="result", job_id=run_id,
                                                 run_id=run_id, finished_ts=now, summary=summary(n, rng), **extra))

        msg = self.commit("result", run_id, self.topics[p.EVENTS], build)
        if self.probe:
            self.w.note_result(run_id, msg.commit)


def summary(n: int, rng: random.Random) -> dict:
    """A bench summary as an agent sends it (docs/protocol.md), without raw samples: one edgebench_result point."""
    p50 = 4.0 + rng.random()
    return {"model": {"name": f"model-{n % 5}.tflite", "sha256": f"{n % 5:064x}", "format": "tflite",
                      "size_bytes": 4_300_000},
            "runtime": {"runtime": "litert", "version": "1.2.0", "requested": ["xnnpack"], "used": ["xnnpack"],
                        "threads": 4},
            "stats": {"count": 1000, "min_ms": p50 * 0.9, "mean_ms": p50 * 1.02, "max_ms": p50 * 2.1, "p50_ms": p50,
                      "p90_ms": p50 * 1.1, "p95_ms": p50 * 1.15, "p99_ms": p50 * 1.3, "std_ms": p50 * 0.05,
                      "throughput_ips": 1000 / p50,
                      "interval": {"method": "batch-means", "units": 5, "confidence": 0.95,
                                   "p50_ms": {"estimate": p50, "pooled": p50, "per_unit": [p50] * 5,
                                              "ci": [p50 * 0.98, p50 * 1.02], "rerun": None},
                                   "drift_pct": 0.4, "unit_spread_pct": 1.2}},
            "timing": {"load_ms": 41.0, "first_inference_ms": 12.5},
            "memory": {"peak_steady_bytes": 61_000_000, "peak_load_bytes": 64_000_000},
            "validity": {"valid": True}, "repeats": 1}


# ---------------------------------------------------------------- a worker process: many boards, one thread

class Worker:
    def __init__(self, cfg: dict, notify: Any, start_at: Any):
        self.cfg, self.notify, self.start_at = cfg, notify, start_at
        self.settings = mqtt.parse_url(cfg["mqtt"])
        self.settings.session_expiry_s = cfg["session_expiry_s"]
        self.ack_wait = cfg["ack_wait_s"]
        self.labels = {"class": "sim", "site": f"w{cfg['worker']}"}
        self.probes = set(cfg["probes"])
        self.rng = random.Random(cfg["seed"])
        self.sel = selectors.DefaultSelector()
        self.boards = [Board(self, device) for device in cfg["devices"]]
        self.events: list[tuple[float, int, int, str]] = []  # (when, seq, board index, what)
        self._seq = 0
        self.new_results: list[tuple[str, float]] = []
        self.dirty: set[int] = set()
        self.index = {id(b.client): i for i, b in enumerate(self.boards)}
        self.stopping = False
        self.connect_failures = 0
        self.lag = {"events": 0, "over_100ms": 0, "over_1s": 0, "max_s": 0.0}  # production events made late

    # ------------------------------------------------------------ paho callbacks (all in this thread)

    def _on_socket_open(self, client, board, sock) -> None:
        self.sel.register(sock, selectors.EVENT_READ, board)

    def _on_socket_close(self, client, board, sock) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(sock)

    def _on_socket_register_write(self, client, board, sock) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, board)

    def _on_socket_unregister_write(self, client, board, sock) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(sock, selectors.EVENT_READ, board)

    def _on_connect(self, client, board, flags, reason, properties) -> None:
        if reason.is_failure:
            self.connect_failures += 1
            return
        client.publish(board.topics[p.STATUS], p.encode(p.STATUS, p.envelope(
            board.device, time.time(), state="online", agent_version="fleet-scale", labels=board.labels)),
            qos=1, retain=True)
        client.publish(board.topics[p.INVENTORY], p.encode(p.INVENTORY, p.envelope(
            board.device, time.time(), labels=board.labels, runtimes=["litert", "onnxruntime"],
            device_facts={"machine": "aarch64", "cpu_count": 4, "kernel": "6.1.0", "simulated": True},
            agent_version="fleet-scale")), qos=1, retain=True)
        client.subscribe(board.subscriptions)
        board.connected = board.ever_connected = True
        self.dirty.add(self.index[id(client)])

    def _on_disconnect(self, client, board, flags, reason, properties) -> None:
        board.connected = False
        if not self.stopping:
            board.disconnects += 1
            self.schedule(time.time() + 1.0, self.index[id(client)], "reconnect")

    def _on_publish(self, client, board, mid, reason, properties) -> None:
        board.on_puback(mid, int(getattr(reason, "value", 0) or 0))
        self.dirty.add(self.index[id(client)])

    def _on_message(self, client, board, message) -> None:
        try:
            msg = p.validate(message.topic, message.payload)
        except p.ProtocolError:
            return
        if msg.kind == p.ACKS:
            board.on_acks(msg.payload)
            self.dirty.add(self.index[id(client)])

    # ------------------------------------------------------------ the loop

    def schedule(self, when: float, index: int, what: str) -> None:
        self._seq += 1
        heapq.heappush(self.events, (when, self._seq, index, what))

    def note_result(self, run_id: str, commit: float) -> None:
        self.new_results.append((run_id, commit))

    def pump(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            client = key.data.client
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()

    def run(self) -> dict:
        cfg = self.cfg
        # connect, a few boards every 10 ms (as a fleet powering up: the broker and the collectors see a ramp)
        connect_started = time.time()
        next_misc = time.time() + 1.0
        for start in range(0, len(self.boards), cfg["connect_batch"]):
            for board in self.boards[start:start + cfg["connect_batch"]]:
                try:
                    board.client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
                                         clean_start=False, properties=mqtt.connect_properties(self.settings))
                except OSError:
                    self.connect_failures += 1
                    self.schedule(time.time() + 1.0, self.index[id(board.client)], "reconnect")
            self.pump(0.01)
        deadline = time.time() + 60
        while time.time() < deadline and not all(b.connected for b in self.boards):
            self.pump(0.05)
            self._due_events()
        connected = sum(b.connected for b in self.boards)
        self.notify.put(("ready", cfg["worker"], connected, round(time.time() - connect_started, 2)))
        while self.start_at.value == 0.0:  # the parent starts every worker at once, when the collectors are idle
            self.pump(0.05)
            self._due_events()
            if time.time() >= next_misc:
                self._misc()
                next_misc = time.time() + 1.0
        t_start = self.start_at.value
        t_stop = t_start + cfg["warmup_s"] + cfg["seconds"]
        per = cfg["periods"]
        for i in range(len(self.boards)):  # each board's phase at random: the load is smooth, as in a real fleet
            self.schedule(t_start + self.rng.uniform(0, per["heartbeat_s"]), i, "heartbeat")
            self.schedule(t_start + self.rng.uniform(0, per["telemetry_batch_s"]), i, "telemetry")
            self.schedule(t_start + self.rng.uniform(0, per["result_s"]), i, "result")
        next_notify = next_retry = time.time()
        drain_end = t_stop + cfg["drain_s"]
        while True:
            now = time.time()
            wait = min(self.events[0][0] - now if self.events else 0.05, 0.05)
            self.pump(max(0.0, wait))
            self._due_events(t_stop)
            now = time.time()
            if self.dirty:
                for index in self.dirty:
                    self.boards[index].flush(now)
                self.dirty.clear()
            if now >= next_retry:  # messages whose ack wait ran out are published again
                for board in self.boards:
                    if board.pending:
                        board.flush(now)
                next_retry = now + 0.5
            if now >= next_misc:
                self._misc()
                next_misc = now + 1.0
            if now >= next_notify and self.new_results:
                self.notify.put(("results", self.new_results))
                self.new_results = []
                next_notify = now + 0.1
            if now >= t_stop and (now >= drain_end or not any(b.pending for b in self.boards)):
                break
        if self.new_results:
            self.notify.put(("results", self.new_results))
        return self._finish(t_start, t_stop)

    def _due_events(self, t_stop: float = math.inf) -> None:
        per = self.cfg["periods"]
        now = time.time()
        while self.events and self.events[0][0] <= now:
            when, _, index, what = heapq.heappop(self.events)
            board = self.boards[index]
            if what == "reconnect":
                if not board.connected and not self.stopping:
                    try:
                        board.client.reconnect()
                    except OSError:
                        self.schedule(now + 2.0, index, "reconnect")
                continue
            if when >= t_stop:
                continue  # production is over: no new messages, the outboxes drain
            late = now - when  # the simulator keeping its schedule (it shares the cores with what it measures)
            self.lag["events"] += 1
            self.lag["over_100ms"] += late > 0.1
            self.lag["over_1s"] += late > 1.0
            self.lag["max_s"] = max(self.lag["max_s"], round(late, 3))
            if what == "heartbeat":
                board.heartbeat(now)
                self.schedule(when + per["heartbeat_s"], index, what)
            elif what == "telemetry":
                board.telemetry(per["telemetry_sample_s"])
                self.schedule(when + per["telemetry_batch_s"], index, what)
            elif what == "result":
                board.result(self.cfg["result_samples"])
                self.schedule(when + per["result_s"], index, what)

    def _misc(self) -> None:
        for board in self.boards:
            if board.client.socket() is not None:
                board.client.loop_misc()

    def _finish(self, t_start: float, t_stop: float) -> dict:
        """Stop as an agent does (status offline, then a clean disconnect) and report every message."""
        self.stopping = True
        for board in self.boards:
            if board.connected:
                board.client.publish(board.topics[p.STATUS], p.encode(p.STATUS, p.envelope(
                    board.device, time.time(), state="offline", agent_version="fleet-scale", labels=board.labels)),
                    qos=1, retain=True)
                board.client.disconnect()
        deadline = time.time() + 5
        while time.time() < deadline and any(b.client.socket() is not None for b in self.boards):
            self.pump(0.05)
        boards = {}
        for board in self.boards:
            messages = board.done + list(board.pending.values())
            boards[board.device] = {
                "heartbeats": board.heartbeats,
                "messages": [[m.kind, m.key, m.commit, m.first_pub, m.ack, m.refused is not None] for m in messages],
                "resent": board.resent, "refused_by_collector": board.refused_by_collector,
                "refused_by_broker": board.refused_by_broker, "no_subscriber": board.no_subscriber,
                "held_back": board.held_back, "disconnects": board.disconnects, "pending": len(board.pending),
                "connected_ever": board.ever_connected}
        return {"worker": self.cfg["worker"], "t_start": t_start, "t_stop": t_stop, "boards": boards,
                "connect_failures": self.connect_failures, "lag": self.lag}


def worker_main(cfg: dict, notify: Any, start_at: Any) -> None:
    result = Worker(cfg, notify, start_at).run()
    Path(cfg["out"]).write_text(json.dumps(result))


# ---------------------------------------------------------------- the parent: services, probes, counts

def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class InfluxReader:
    """InfluxQL over one kept-alive HTTP connection (the poller's queries come every 50 ms)."""

    def __init__(self, url: str, db: str, timeout: float = 120.0):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.db, self.timeout = parts.hostname, parts.port, db, timeout
        self.conn: Optional[http.client.HTTPConnection] = None

    def query(self, text: str) -> list:
        params = urllib.parse.urlencode({"db": self.db, "q": text, "epoch": "ns"})
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request("GET", f"/query?{params}")
                response = self.conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"InfluxQL {text!r}: HTTP {response.status} {body[:200]!r}")
                result = json.loads(body)["results"][0]
                if "error" in result:
                    if "database not found" in result["error"]:
                        return []
                    raise RuntimeError(f"InfluxQL {text!r}: {result['error']}")
                return result.get("series", [])
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        return []


class QueryablePoller(threading.Thread):
    """Notes when each result of a probe board is first returned by InfluxDB. Probe boards (a tenth of the
    boards, at least PROBES_MIN) carry the label probe=1, so their points have the tag label_probe and a query for
    them reads only their series; they report each result's run id and commit time as they make it. The poller
    asks InfluxDB for their run ids whose point time (the result's finished_ts, to the millisecond) is at or after
    the oldest one not yet seen, every POLL_S (or three times the last query's duration, if longer), so each
    query returns little. A result not seen GIVE_UP_S after its commit
    is no longer polled for (its latency counts as above GIVE_UP_S; whether it landed at all is counted
    afterwards)."""

    def __init__(self, influx_url: str, db: str, notify: Any):
        super().__init__(daemon=True)
        self.reader = InfluxReader(influx_url, db, timeout=30)
        self.notify = notify
        self.unseen: dict[str, float] = {}
        self.heap: list[tuple[float, str]] = []
        self.seen: dict[str, float] = {}
        self.censored: set[str] = set()
        self.query_s: list[float] = []
        self.ready: list[tuple] = []
        self.stop = threading.Event()
        self.errors = 0

    def take_notifications(self) -> None:
        while True:
            try:
                item = self.notify.get_nowait()
            except queue.Empty:
                return
            if item[0] == "results":
                for run_id, commit in item[1]:
                    self.unseen[run_id] = commit
                    heapq.heappush(self.heap, (commit, run_id))
            else:
                self.ready.append(item)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.time()
            self.take_notifications()
            while self.heap and (self.heap[0][1] not in self.unseen or started - self.heap[0][0] > GIVE_UP_S):
                _, run_id = heapq.heappop(self.heap)
                if run_id in self.unseen:
                    del self.unseen[run_id]
                    self.censored.add(run_id)
            if self.heap:
                cursor_ns = int((self.heap[0][0] - 0.002) * 1e9)
                try:
                    series = self.reader.query("SELECT run_id FROM edgebench_result WHERE label_probe = '1' "
                                               f"AND time >= {cursor_ns}")
                except (OSError, RuntimeError, http.client.HTTPException):
                    self.errors += 1
                    series = []
                now = time.time()
                self.query_s.append(now - started)
                for s in series:
                    for _, run_id in s["values"]:
                        if run_id in self.unseen:
                            del self.unseen[run_id]
                            self.seen[run_id] = now
            # every POLL_S, or less often when the queries grow slow (a result long unseen pins the cursor back):
            # the poller never takes more than a third of influxd's time
            took = time.time() - started
            self.stop.wait(max(POLL_S, 3 * took) - took)


def busy_seconds(times: Any) -> float:
    """CPU seconds the machine ran something (user, nice, system, interrupts; not idle, I/O wait or steal)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


class ResourceMonitor(threading.Thread):
    """CPU (% of one core) and RSS of each group of processes, every second, from psutil; the machine's CPU."""

    def __init__(self, groups: dict[str, list[int]], thread_pids: dict[str, int]):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.groups = groups
        self.thread_pids = thread_pids  # collector name -> pid: its busiest thread is watched too
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self._procs: dict[int, Any] = {}
        self._last: dict[int, float] = {}
        self._threads_last: dict[str, dict[int, float]] = {}

    def _proc(self, pid: int) -> Optional[Any]:
        if pid not in self._procs:
            try:
                self._procs[pid] = self.psutil.Process(pid)
            except self.psutil.Error:
                return None
        return self._procs[pid]

    def postgres_pids(self) -> list[int]:
        pids = []
        for proc in self.psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres":
                pids.append(proc.pid)
        return pids

    def run(self) -> None:
        last_wall = time.time()
        last_machine = self.psutil.cpu_times()
        self._sample_cpu(first=True)
        while not self.stop.wait(1.0):
            now = time.time()
            machine = self.psutil.cpu_times()
            dt = now - last_wall
            busy = busy_seconds(machine) - busy_seconds(last_machine)
            sample = {"t": now, "machine_busy_cores": busy / dt, "groups": self._sample_cpu(dt=dt)}
            self.samples.append(sample)
            last_wall, last_machine = now, machine

    def _sample_cpu(self, first: bool = False, dt: float = 1.0) -> dict:
        out = {}
        groups = dict(self.groups)
        groups["postgres"] = self.postgres_pids()
        for name, pids in groups.items():
            cpu = rss = 0.0
            for pid in pids:
                proc = self._proc(pid)
                if proc is None:
                    continue
                try:
                    times = proc.cpu_times()
                    used = times.user + times.system
                    rss += proc.memory_info().rss
                except self.psutil.Error:
                    continue
                if pid in self._last:
                    cpu += used - self._last[pid]
                self._last[pid] = used
            out[name] = {"cpu_pct": 100 * cpu / dt, "rss_mib": rss / 2**20}
        for name, pid in self.thread_pids.items():
            proc = self._proc(pid)
            try:
                threads = {t.id: t.user_time + t.system_time for t in proc.threads()} if proc else {}
            except self.psutil.Error:
                threads = {}
            last = self._threads_last.get(name, {})
            busiest = max((used - last[tid] for tid, used in threads.items() if tid in last), default=0.0)
            self._threads_last[name] = threads
            out[name]["busiest_thread_pct"] = 100 * busiest / dt
        return {} if first else out

    def window(self, start: float, end: float) -> dict:
        """Mean and max per group over the samples taken within [start, end] (each covers the second before)."""
        inside = [s for s in self.samples if start + 0.5 <= s["t"] <= end + 0.5]
        if not inside:
            return {}
        out: dict[str, Any] = {"samples": len(inside),
                               "machine_busy_cores_mean": statistics.mean(s["machine_busy_cores"] for s in inside)}
        names = inside[0]["groups"].keys()
        for name in names:
            entry = {}
            for key in inside[0]["groups"][name]:
                values = [s["groups"][name][key] for s in inside if name in s["groups"]]
                entry[key + "_mean"], entry[key + "_max"] = statistics.mean(values), max(values)
            out[name] = entry
        return out


def metrics(collector: Any) -> dict[str, float]:
    values = {}
    for line in collector.get("/metrics").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def summed(snapshots: list[dict], name: str) -> float:
    return sum(s.get(name, 0.0) for s in snapshots)


class PgDatabase:
    """A PostgreSQL database with a random name for one case, dropped afterwards (connections to it ended)."""

    def __init__(self) -> None:
        import psycopg

        self.psycopg = psycopg
        base, _, _ = POSTGRES.rpartition("/")
        self.name = f"edgebench_scale_{secrets.token_hex(6)}"
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{base}/{self.name}"

    def commits(self) -> int:
        """Transactions committed in this database so far (pg_stat_database: the registry's commits)."""
        with self.psycopg.connect(POSTGRES, autocommit=True) as admin:
            row = admin.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        with self.psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def server_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "server", "--help"], capture_output=True,
                         text=True, cwd=REPO, timeout=60).stdout
    return flag in out


def py_spy() -> Optional[str]:
    """py-spy (not a dependency: ``pip install py-spy`` anywhere, or $PY_SPY), for --profile."""
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def stack_category(frames: list[str]) -> str:
    """What a collector thread was doing in one py-spy sample (frames outermost first, names without files)."""
    if any(f.startswith("Registry.") for f in frames):
        return "registry"
    if "Collector._write" in frames:
        return "influx_write"
    if "Collector._acknowledge_devices" in frames:
        return "acks_publish"
    if "Queue.get" in frames or frames[-1] in ("Client._loop", "Client.loop_forever"):  # a queue, paho's select
        return "idle"
    return "other_python"  # validation, points, bookkeeping, or waiting for the GIL there


def profile_summary(path: Path) -> dict:
    """Per named collector thread (prepare, write, paho's): % of py-spy's samples in each category."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        raw = stack.split(";")
        thread = next((frame.split(": ", 1)[-1] for frame in raw if frame.startswith("thread (")), "?")
        frames = [frame.split(" (")[0] for frame in raw]
        if thread in ("prepare", "write") or thread.startswith("paho"):
            counts["paho" if thread.startswith("paho") else thread][stack_category(frames)] += int(n or 0)
    return {thread: {k: round(100 * v / sum(c.values()), 1) for k, v in c.most_common()}
            for thread, c in counts.items()}


def run_case(boards: int, n_collectors: int, args: argparse.Namespace, work: Path, registry: str) -> dict:
    from localfleet import Collector, Influxd, Mosquitto, wait_for

    root = work / f"c{n_collectors}-n{boards}"
    case: dict[str, Any] = {"boards": boards, "collectors": n_collectors, "registry": registry,
                            "load_before": [round(x, 2) for x in os.getloadavg()]}
    started_case = time.time()
    broker, influxd = Mosquitto(root / "mosquitto", extra=SHIPPED_BROKER), Influxd(root / "influxd")
    pg: Optional[PgDatabase] = None
    collectors: list[Any] = []
    procs: list[Any] = []
    poller: Optional[QueryablePoller] = None
    monitor: Optional[ResourceMonitor] = None
    ctx = mp.get_context("spawn")
    notify = ctx.Queue()
    start_at = ctx.Value("d", 0.0, lock=False)
    try:
        broker.start()
        influxd.start()
        extra_registry: tuple = ()
        if registry == "postgresql":
            pg = PgDatabase()
            extra_registry = ("--registry", pg.url,
                              *(("--models-dir", str(root / "models")) if args.has_models_dir else ()))
        token = None
        for k in range(n_collectors):
            collector = Collector(root / f"collector{k}", broker.url, influxd.url, "scale", token=token,
                                  extra=("--client-id", f"scale-collector-{k}", *extra_registry))
            collector.start()
            if pg is not None:  # the first collector made the shared registry's admin token; the others have none
                token = token or collector.token
            collectors.append(collector)
        # the boards: workers of --boards-per-worker each
        n_workers = max(1, math.ceil(boards / args.boards_per_worker))
        per = periods(args.rate)
        step = max(1, boards // max(PROBES_MIN, boards // 10))  # a tenth of the boards, at least PROBES_MIN
        case["probe_boards"] = len(range(0, boards, step))
        for w in range(n_workers):
            devices = [f"sim{w:02d}-{i:05d}" for i in range(w, boards, n_workers)]
            probes = [f"sim{w:02d}-{i:05d}" for i in range(w, boards, n_workers) if i % step == 0]
            cfg = {"worker": w, "devices": devices, "probes": probes, "mqtt": broker.url, "periods": per,
                   "warmup_s": args.warmup,
                   "seconds": args.seconds, "drain_s": args.drain, "ack_wait_s": args.ack_wait,
                   "session_expiry_s": 3600, "seed": w + 1000 * boards + 7 * n_collectors,
                   "result_samples": args.result_samples, "connect_batch": 20, "out": str(root / f"worker{w}.json")}
            proc = ctx.Process(target=worker_main, args=(cfg, notify, start_at), daemon=True)
            proc.start()
            procs.append(proc)
        poller = QueryablePoller(influxd.url, "scale", notify)
        poller.start()
        wait_for(lambda: len(poller.ready) == n_workers or not all(pr.is_alive() for pr in procs), 180,
                 "the boards to connect", interval=0.2)
        if len(poller.ready) < n_workers:
            raise RuntimeError("a worker process exited while connecting")
        case["connected"] = sum(r[2] for r in poller.ready)
        case["connect_s"] = max(r[3] for r in poller.ready)

        def idle() -> bool:
            return all((h := c.health()).get("held", 1) == 0 and h.get("buffer_depth", 1) == 0 for c in collectors)
        try:  # the boards' status and inventory (retained) are in the registry before the load starts
            wait_for(idle, 60, "the collectors to take the boards' status", interval=0.25)
        except Exception:  # noqa: BLE001 - measured all the same; noted
            case["note"] = "collectors still busy with the connections at the start"
        groups = {f"collector{k}": [c.proc.pid] for k, c in enumerate(collectors)}
        groups.update({"broker": [broker.proc.pid], "influxd": [influxd.proc.pid],
                       "simulator": [pr.pid for pr in procs], "bench": [os.getpid()], "profiler": []})
        monitor = ResourceMonitor(groups, {f"collector{k}": c.proc.pid for k, c in enumerate(collectors)})
        monitor.start()
        t_start = time.time() + 0.5
        start_at.value = t_start
        w_start, w_end = t_start + args.warmup, t_start + args.warmup + args.seconds
        time.sleep(max(0.0, w_start - time.time()))
        before = [metrics(c) for c in collectors]
        before_t = time.time()
        commits_before = pg.commits() if pg is not None else None
        spies = []
        if args.profile:  # sampling without stopping the collector (--nonblocking): its threads as they run
            for k, c in enumerate(collectors):
                out_path = root / f"profile-collector{k}.txt"
                spies.append((out_path, subprocess.Popen(
                    [args.profile, "record", "-p", str(c.proc.pid), "-d", str(max(1, int(args.seconds) - 1)),
                     "--threads", "--idle", "--nonblocking", "--format", "raw", "-r", "20", "-o", str(out_path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                monitor.groups["profiler"].append(spies[-1][1].pid)  # its CPU is the bench's, not "other"
        time.sleep(max(0.0, w_end - time.time()))
        after = [metrics(c) for c in collectors]
        after_t = time.time()
        if pg is not None:
            case["registry_commits_per_s"] = round((pg.commits() - commits_before) / (after_t - before_t), 1)
        health_end = [c.health() for c in collectors]
        for _, spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        if spies:
            case["profile"] = {f"collector{k}": profile_summary(out_path) for k, (out_path, _) in enumerate(spies)}
        for proc in procs:
            proc.join(timeout=args.drain + 90)
        if any(proc.exitcode != 0 for proc in procs):
            raise RuntimeError(f"worker exit codes {[proc.exitcode for proc in procs]}")
        try:
            wait_for(idle, args.drain, "the collectors to store what they hold", interval=0.25)
        except Exception:  # noqa: BLE001 - counted as they are: what is not stored yet is "unstored"
            case["note"] = (case.get("note", "") + "; the collectors still held messages at the count").lstrip("; ")
        time.sleep(3 * POLL_S)
        poller.stop.set()
        poller.join(timeout=10)
        monitor.stop.set()
        monitor.join(timeout=5)
        final = [metrics(c) for c in collectors]
        reports = [json.loads((root / f"worker{w}.json").read_text()) for w in range(n_workers)]
        case.update(analyse(case, args, per, reports, poller, monitor, influxd.url, before, after, final,
                            after_t - before_t, w_start, w_end, health_end))
    finally:
        if poller is not None:
            poller.stop.set()
        if monitor is not None:
            monitor.stop.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for service in (*collectors, influxd, broker):
            with contextlib.suppress(Exception):
                service.stop()
        if pg is not None:
            pg.drop()
    case["load_after"] = [round(x, 2) for x in os.getloadavg()]
    case["wall_s"] = round(time.time() - started_case, 1)
    return case


def analyse(case: dict, args: argparse.Namespace, per: dict, reports: list[dict], poller: QueryablePoller,
            monitor: ResourceMonitor, influx_url: str, before: list, after: list, final: list, window_s: float,
            w_start: float, w_end: float, health_end: list) -> dict:
    out: dict[str, Any] = {}
    boards = {device: data for report in reports for device, data in report["boards"].items()}
    result_points = 1 + args.result_samples
    # ---- offered: what the boards made within the window
    in_window = lambda t: t is not None and w_start <= t < w_end  # noqa: E731
    offered_msgs = offered_points = 0
    for data in boards.values():
        hb = sum(1 for t in data["heartbeats"] if in_window(t))
        tel = sum(1 for m in data["messages"] if m[0] == "telemetry" and in_window(m[2]))
        res = sum(1 for m in data["messages"] if m[0] == "result" and in_window(m[2]))
        offered_msgs += hb + tel + res
        offered_points += hb + tel * SAMPLES_PER_BATCH + res * result_points
    out["offered_msgs_per_s"] = round(offered_msgs / args.seconds, 1)
    out["offered_points_per_s"] = round(offered_points / args.seconds, 1)
    # ---- achieved: what the collectors stored and acknowledged within the window
    d = lambda name, a=after, b=before: summed(a, name) - summed(b, name)  # noqa: E731
    out["achieved_msgs_per_s"] = round(d("edgebench_messages_stored_total") / window_s, 1)
    out["achieved_points_per_s"] = round(d("edgebench_points_written_total") / window_s, 1)
    out["achieved_msgs_per_s_each"] = [round((a.get("edgebench_messages_stored_total", 0) -
                                              b.get("edgebench_messages_stored_total", 0)) / window_s, 1)
                                       for a, b in zip(after, before)]
    writes = d("edgebench_influx_write_seconds_count")
    out["influx_writes_per_s"] = round(writes / window_s, 1)
    out["points_per_write"] = round(d("edgebench_points_written_total") / writes, 1) if writes else None
    out["writer_busy_pct"] = [round(100 * (a.get("edgebench_influx_write_seconds_sum", 0) -
                                           b.get("edgebench_influx_write_seconds_sum", 0)) / window_s, 1)
                              for a, b in zip(after, before)]
    delays = d("edgebench_ingest_delay_seconds_count")
    out["collector_receipt_to_ack_ms_mean"] = round(1000 * d("edgebench_ingest_delay_seconds_sum") / delays, 1) \
        if delays else None
    out["held_at_window_end"] = sum(h.get("held", 0) for h in health_end)
    out["collector_duplicates_dropped"] = int(summed(final, "edgebench_duplicates_total"))
    out["dead_letters"] = int(summed(final, "edgebench_dead_letters_total"))
    out["influx_write_errors"] = int(summed(final, "edgebench_influx_write_errors_total"))
    # ---- latency: results published within the window, to their first sighting in InfluxDB / to their ack
    queryable, acked = [], []
    for data in boards.values():
        for kind, key, _commit, first_pub, ack, refused in data["messages"]:
            if not in_window(first_pub):
                continue
            if ack is not None and not refused:
                acked.append(ack - first_pub)
            if kind == "result":
                if key in poller.seen:
                    queryable.append(poller.seen[key] - first_pub)
                elif key in poller.censored or key in poller.unseen:
                    queryable.append(math.inf)  # not seen within GIVE_UP_S (or at all: see the counts)
    for name, values in (("queryable", queryable), ("acked", acked)):
        out[f"{name}_n"] = len(values)
        for q in (0.5, 0.99):
            v = percentile(values, q)
            out[f"{name}_p{int(q * 100)}_s"] = None if v is None else (round(v, 3) if math.isfinite(v) else "inf")
        finite = [v for v in values if math.isfinite(v)]
        out[f"{name}_max_s"] = round(max(finite), 3) if finite else None
    out["poll_query_ms_p50"] = round(1000 * (percentile(poller.query_s, 0.5) or 0), 1)
    out["poll_query_ms_p99"] = round(1000 * (percentile(poller.query_s, 0.99) or 0), 1)
    out["poll_errors"] = poller.errors
    # ---- counted in InfluxDB by id
    out.update(count_in_influx(boards, influx_url))
    for key in ("resent", "refused_by_broker", "no_subscriber", "held_back", "disconnects", "pending"):
        out[key] = sum(data[key] for data in boards.values())
    out["boards_never_connected"] = sum(not data["connected_ever"] for data in boards.values())
    lag = [report["lag"] for report in reports]
    events = sum(x["events"] for x in lag)
    out["simulator_late_pct"] = {"over_100ms": round(100 * sum(x["over_100ms"] for x in lag) / max(events, 1), 2),
                                 "over_1s": round(100 * sum(x["over_1s"] for x in lag) / max(events, 1), 2),
                                 "max_s": max((x["max_s"] for x in lag), default=0.0)}
    # ---- resources over the window
    res = monitor.window(w_start, w_end)
    out["resources"] = res
    out["bottleneck"] = diagnose(out, res, case)
    return out


def count_in_influx(boards: dict, influx_url: str) -> dict:
    """Every committed result (run id) and telemetry batch (its samples' seq) looked up in InfluxDB; heartbeats
    counted per device. A message is there once, refused by the collector (counted), duplicated, partial, lost
    (the collector acknowledged it as stored and it is not there: a real loss), or unstored: not there and never
    acknowledged, still in its board's outbox when the bench stopped (a real agent keeps it and publishes it
    again: late, not lost)."""
    reader = InfluxReader(influx_url, "scale")
    result_rows: collections.Counter = collections.Counter()
    for s in reader.query("SELECT run_id FROM edgebench_result"):
        result_rows.update(v[1] for v in s["values"])
    seq_rows: dict[str, collections.Counter] = {}
    prefixes = sorted({device.split("-")[0] for device in boards})
    for prefix in prefixes:  # one query per worker's boards: each answer stays a few MB
        for s in reader.query(f"SELECT seq FROM edgebench_telemetry WHERE device =~ /^{prefix}-/ GROUP BY device"):
            seq_rows[s["tags"]["device"]] = collections.Counter(int(v[1]) for v in s["values"])
    heartbeat_rows = {s["tags"]["device"]: int(s["values"][0][1])
                      for s in reader.query("SELECT count(uptime_s) FROM edgebench_device GROUP BY device")}
    out = collections.Counter()
    committed_runs = set()
    for device, data in boards.items():
        seqs = seq_rows.get(device, collections.Counter())
        for kind, key, _commit, _pub, ack, refused in data["messages"]:
            if kind == "result":
                committed_runs.add(key)
                rows = result_rows.get(key, 0)
                prefix = "results"
            else:
                counts = [seqs.get(key + i, 0) for i in range(SAMPLES_PER_BATCH)]
                rows = 0 if not any(counts) else 1 if all(c == 1 for c in counts) else \
                    2 if min(counts) >= 1 else -1
                prefix = "telemetry"
            out[f"{prefix}_committed"] += 1
            if refused:
                out[f"{prefix}_refused"] += 1
            elif rows == 1:
                out[f"{prefix}_once"] += 1
            elif rows == 0:
                out[f"{prefix}_lost" if ack is not None else f"{prefix}_unstored"] += 1
            elif rows == -1:
                out[f"{prefix}_partial"] += 1
            else:
                out[f"{prefix}_duplicated"] += 1
        out["heartbeats_sent"] += len(data["heartbeats"])
        out["heartbeats_landed"] += heartbeat_rows.get(device, 0)
    out["results_stray"] = sum(1 for run in result_rows if run not in committed_runs)
    keys = [f"{k}_{s}" for k in ("results", "telemetry") for s in ("committed", "once", "refused", "lost", "partial",
                                                                    "duplicated", "unstored")]
    return {**{k: out.get(k, 0) for k in keys}, "results_stray": out["results_stray"],
            "heartbeats_sent": out["heartbeats_sent"], "heartbeats_landed": out["heartbeats_landed"]}


def diagnose(out: dict, res: dict, case: dict) -> dict:
    """What limited this case: the machine's cores, one saturated single-threaded part, a pipeline that waits
    (for the registry or InfluxDB: the --profile samples say which), or nothing."""
    cores = os.cpu_count() or 1
    n_collectors = case["collectors"]

    def cpu(name: str, key: str = "cpu_pct_mean") -> float:
        return res.get(name, {}).get(key, 0.0)

    collectors = [f"collector{k}" for k in range(n_collectors)]
    shares = {"collectors": sum(cpu(c) for c in collectors), "broker": cpu("broker"), "influxd": cpu("influxd"),
              "postgres": cpu("postgres"), "simulator": cpu("simulator"),
              "bench": cpu("bench") + cpu("profiler")}
    busy = 100 * res.get("machine_busy_cores_mean", 0.0)
    shares["other"] = max(0.0, busy - sum(shares.values()))
    kept_up = out["achieved_msgs_per_s"] >= 0.97 * out["offered_msgs_per_s"] and out["held_at_window_end"] < 2000
    p99 = out.get("queryable_p99_s")
    lost = out["results_lost"] + out["telemetry_lost"] + out["telemetry_partial"]
    unstored = out["results_unstored"] + out["telemetry_unstored"]
    findings = []
    if busy >= 0.9 * 100 * cores:
        top = max(shares, key=shares.get)
        findings.append(f"machine CPU: {busy:.0f}% of {100 * cores}% busy, most of it {top} ({shares[top]:.0f}%)")
    for c in collectors:
        if cpu(c, "busiest_thread_pct_mean") >= 85:
            findings.append(f"{c}'s busiest thread at {cpu(c, 'busiest_thread_pct_mean'):.0f}% of a core "
                            f"(the Python pipeline)")
    late = out.get("simulator_late_pct") or {}
    if late.get("over_100ms", 0) >= 1:
        findings.append(f"the simulator itself: {late['over_100ms']:.1f}% of its messages made over 100 ms late "
                        f"(max {late['max_s']:.2f} s)")
    if cpu("broker") >= 85:
        findings.append(f"Mosquitto (one thread) at {cpu('broker'):.0f}% of a core")
    for k, pct in enumerate(out["writer_busy_pct"]):
        if pct >= 85:
            findings.append(f"collector{k}'s InfluxDB writer busy {pct:.0f}% of the time")
    ok = kept_up and not lost and not unstored and p99 is not None and p99 != "inf" and p99 <= 1.0
    for c, threads in (case.get("profile") or {}).items():
        prepare = threads.get("prepare") or {}
        idle = prepare.get("idle", 0.0)
        if prepare and (idle < 10 or not ok):
            waits = "never waits for messages" if idle < 10 else f"waits for messages {idle:.0f}% of the time"
            findings.append(f"{c}'s prepare thread {waits}: {prepare.get('registry', 0):.0f}% of its time in registry "
                            f"calls ({case['registry']}), {prepare.get('other_python', 0):.0f}% validating and "
                            f"building points")
    if not ok and not case.get("profile"):
        busiest = max(cpu(c, "busiest_thread_pct_mean") for c in collectors)
        if busiest < 85 and max(out["writer_busy_pct"]) < 50:
            findings.append(f"the collector pipeline waits, not for CPU (busiest thread "
                            f"{busiest:.0f}% of a core, InfluxDB "
                            f"writer busy {max(out['writer_busy_pct']):.0f}%): on the registry ({case['registry']}"
                            + (f", {case['registry_commits_per_s']:.0f} commits/s" if 'registry_commits_per_s' in case
                               else "") + "); --profile shows where")
    if not findings:
        findings.append("none saturated" if ok else "no single part saturated; see the CPU shares")
    return {"ok": ok, "kept_up": kept_up, "machine_busy_pct": round(busy, 1),
            "cpu_shares_pct": {k: round(v, 1) for k, v in shares.items()}, "findings": findings}


# ---------------------------------------------------------------- output

def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(cases: list[dict]) -> str:
    head = ("coll", "boards", "offered msg/s", "achieved msg/s", "offered pt/s", "achieved pt/s",
            "queryable p50/p99 s", "acked p50/p99 s", "results once/made", "telemetry once/made", "lost",
            "unstored", "dup", "resent", "hb landed/sent")
    rows = []
    for c in cases:
        if "error" in c:
            rows.append((str(c["collectors"]), str(c["boards"]), "error: " + c["error"][:80]) + ("",) * 12)
            continue
        rows.append((str(c["collectors"]), str(c["boards"]), fmt(c["offered_msgs_per_s"], 0),
                     fmt(c["achieved_msgs_per_s"], 0), fmt(c["offered_points_per_s"], 0),
                     fmt(c["achieved_points_per_s"], 0),
                     f"{fmt(c['queryable_p50_s'])}/{fmt(c['queryable_p99_s'])}",
                     f"{fmt(c['acked_p50_s'])}/{fmt(c['acked_p99_s'])}",
                     f"{c['results_once']}/{c['results_committed']}",
                     f"{c['telemetry_once']}/{c['telemetry_committed']}",
                     str(c["results_lost"] + c["telemetry_lost"] + c["telemetry_partial"]),
                     str(c["results_unstored"] + c["telemetry_unstored"]),
                     str(c["results_duplicated"] + c["telemetry_duplicated"]), str(c["resent"]),
                     f"{c['heartbeats_landed']}/{c['heartbeats_sent']}"))
    head2 = ("coll", "boards", "collector RSS MiB mean/max", "collector CPU % mean/max", "busiest thread %",
             "broker %", "influxd %", "postgres %", "simulator+bench %", "machine %", "limit")
    rows2 = []
    for c in cases:
        if "error" in c:
            continue
        r = c["resources"]
        cols = [k for k in r if k.startswith("collector")]
        rss = "; ".join(f"{r[k]['rss_mib_mean']:.0f}/{r[k]['rss_mib_max']:.0f}" for k in cols)
        cpu = "; ".join(f"{r[k]['cpu_pct_mean']:.0f}/{r[k]['cpu_pct_max']:.0f}" for k in cols)
        busiest = "; ".join(f"{r[k].get('busiest_thread_pct_mean', 0):.0f}" for k in cols)
        sim = sum(r.get(k, {}).get("cpu_pct_mean", 0) for k in ("simulator", "bench", "profiler"))
        rows2.append((str(c["collectors"]), str(c["boards"]), rss, cpu, busiest,
                      f"{r.get('broker', {}).get('cpu_pct_mean', 0):.0f}",
                      f"{r.get('influxd', {}).get('cpu_pct_mean', 0):.0f}",
                      f"{r.get('postgres', {}).get('cpu_pct_mean', 0):.0f}", f"{sim:.0f}",
                      f"{c['bottleneck']['machine_busy_pct']:.0f}",
                      ("ok: " if c["bottleneck"]["ok"] else "NOT ok: ") + "; ".join(c["bottleneck"]["findings"])))
    return render(head, rows) + "\n\n" + render(head2, rows2)


def render(head: tuple, rows: list) -> str:
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    widths[-1] = len(head[-1])  # the last column runs on
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def limits(cases: list[dict]) -> list[str]:
    """Per collector count: the largest N that met the goals (nothing lost, p99 queryable <= 1 s, kept up), the
    first that did not, and why."""
    text = []
    for n_coll in sorted({c["collectors"] for c in cases}):
        mine = sorted((c for c in cases if c["collectors"] == n_coll and "error" not in c), key=lambda c: c["boards"])
        good = [c["boards"] for c in mine if c["bottleneck"]["ok"]]
        bad = [c for c in mine if not c["bottleneck"]["ok"]]
        line = f"{n_coll} collector(s): goals met up to {max(good) if good else 'none of the'} boards"
        if bad:
            first = bad[0]
            why = []
            if not first["bottleneck"]["kept_up"]:
                why.append(f"achieved {first['achieved_msgs_per_s']:.0f} of {first['offered_msgs_per_s']:.0f} msg/s")
            if first["queryable_p99_s"] in (None, "inf") or first["queryable_p99_s"] > 1.0:
                why.append(f"p99 queryable {fmt(first['queryable_p99_s'])} s")
            lost = first["results_lost"] + first["telemetry_lost"] + first["telemetry_partial"]
            if lost:
                why.append(f"{lost} lost")
            unstored = first["results_unstored"] + first["telemetry_unstored"]
            if unstored:
                why.append(f"{unstored} not stored by the count (still in the boards' outboxes)")
            line += (f"; at {first['boards']}: {', '.join(why)}; limit: {'; '.join(first['bottleneck']['findings'])}"
                     f" (CPU % of one core: {first['bottleneck']['cpu_shares_pct']})")
        else:
            line += " (the largest run)"
        text.append(line)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boards", default="250,500,1000,1500,2000", help="simulated boards per case (list)")
    parser.add_argument("--collectors", default="1,2", help="collector counts (list; 2 = one share group)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per case (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="load before the window (default 10)")
    parser.add_argument("--drain", type=float, default=15.0, help="after the window, the boards wait this long at "
                        "most for every message's ack, then the collectors get as long again to store what they "
                        "hold before the count (default 15)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per board, the agent's mix scaled "
                        f"(default 1.0; 0: the agent's defaults, {BASE_RATE:.4f})")
    parser.add_argument("--result-samples", type=int, default=0, help="raw latency samples per result (default 0)")
    parser.add_argument("--ack-wait", type=float, default=ACK_WAIT_S, help="the boards' --ack-wait (default 30)")
    parser.add_argument("--boards-per-worker", type=int, default=500, help="boards per simulator process (500)")
    parser.add_argument("--single-registry", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the registry of the one-collector cases (default sqlite, the embedded default; two "
                        "collectors always share PostgreSQL)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute smoke run: 100 and 300 boards, 15 s each")
    parser.add_argument("--profile", action="store_true", help="sample the collectors' threads with py-spy "
                        "(on PATH or $PY_SPY; not a dependency) during the window: where their time goes")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args()
    if args.quick:
        args.boards, args.seconds, args.warmup, args.drain = "100,300", 15.0, 5.0, 15.0
    if args.profile:
        args.profile = py_spy()
        if not args.profile:
            print("--profile needs py-spy (pip install py-spy, or $PY_SPY): not profiling", flush=True)
    sizes = [int(x) for x in args.boards.split(",") if x.strip()]
    counts = [int(x) for x in args.collectors.split(",") if x.strip()]
    per = periods(args.rate)
    has_registry = server_supports("--registry")
    args.has_models_dir = server_supports("--models-dir")
    load = os.getloadavg()
    points = per['points_per_s'] + args.result_samples / per['result_s']
    print(f"fleet scale: {sizes} boards x {counts} collector(s), {args.seconds:g} s after {args.warmup:g} s warm-up; "
          f"per board {per['messages_per_s']:.3f} msg/s, {points:.3f} points/s (heartbeat every "
          f"{per['heartbeat_s']:.2f} s, telemetry batch of {SAMPLES_PER_BATCH} every "
          f"{per['telemetry_batch_s']:.2f} s, result every {per['result_s']:.1f} s"
          f"{f', {args.result_samples} samples each' if args.result_samples else ''})", flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + ("  (busy: these figures measure a shared machine)" if load[0] > 1.5 else ""), flush=True)
    if not has_registry and 2 in counts:
        print("edgebench server has no --registry yet: two collectors run with a SQLite registry each", flush=True)
    work = Path(tempfile.mkdtemp(prefix="edgebench-scale-"))
    cases = []
    try:
        for n_coll in counts:
            for n in sizes:
                registry = "postgresql" if has_registry and (n_coll > 1 or args.single_registry == "postgresql") \
                    else "sqlite"
                print(f"  {n_coll} collector(s), {n} boards ({registry})...", end="", flush=True)
                try:
                    case = run_case(n, n_coll, args, work, registry)
                except Exception as exc:  # noqa: BLE001 - the sweep goes on; the case says why
                    case = {"boards": n, "collectors": n_coll, "registry": registry, "error": f"{exc}"[:2000]}
                cases.append(case)
                if "error" in case:
                    print(f" error: {case['error'][:300]}", flush=True)
                else:
                    print(f" {case['achieved_msgs_per_s']:.0f}/{case['offered_msgs_per_s']:.0f} msg/s, queryable "
                          f"p99 {fmt(case['queryable_p99_s'])} s, lost "
                          f"{case['results_lost'] + case['telemetry_lost'] + case['telemetry_partial']}, unstored "
                          f"{case['results_unstored'] + case['telemetry_unstored']} "
                          f"({case['wall_s']:.0f} s, load {case['load_after'][0]:.2f})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    print()
    print(table(cases))
    print()
    lines = limits(cases)
    for line in lines:
        print(line)
    by = {(c["collectors"], c["boards"]): c for c in cases if "error" not in c}
    scaling = []
    if 1 in counts and 2 in counts:
        for n in sizes:
            if (1, n) in by and (2, n) in by:
                one, two = by[(1, n)], by[(2, n)]
                scaling.append({"boards": n, "achieved_1": one["achieved_msgs_per_s"],
                                "achieved_2": two["achieved_msgs_per_s"],
                                "p99_1": one["queryable_p99_s"], "p99_2": two["queryable_p99_s"]})
                factor = two["achieved_msgs_per_s"] / max(one["achieved_msgs_per_s"], 1e-9)
                both = " (both carried what was offered)" if one["bottleneck"]["kept_up"] and \
                    two["bottleneck"]["kept_up"] else ""
                print(f"two collectors vs one at {n} boards: achieved {two['achieved_msgs_per_s']:.0f} vs "
                      f"{one['achieved_msgs_per_s']:.0f} msg/s (x{factor:.2f}{both}), "
                      f"p99 queryable {fmt(two['queryable_p99_s'])} vs {fmt(one['queryable_p99_s'])} s")
    end_load = os.getloadavg()
    print(f"load average at the end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(),
            "load_start": [round(x, 2) for x in load], "load_end": [round(x, 2) for x in end_load],
            "params": {"boards": sizes, "collectors": counts, "seconds": args.seconds, "warmup": args.warmup,
                       "drain": args.drain, "rate": args.rate, "periods": per, "result_samples": args.result_samples,
                       "ack_wait": args.ack_wait, "boards_per_worker": args.boards_per_worker,
                       "latency_end_point": "queryable: first InfluxDB poll (every 50 ms) returning a probe board's "
                                            "result's run id; acked: the board receiving the collector's acks"},
            "cases": cases, "limits": lines, "scaling": scaling}, indent=2, default=str) + "\n")
    return 0 if all("error" not in c for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
