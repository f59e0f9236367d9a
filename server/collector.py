"""`edgebench server`: MQTT -> validation -> registry + InfluxDB, acknowledging each message only once it is stored.

paho's network thread only queues messages; a preparing thread takes those waiting in chunks, validates them, updates
the registry with a few calls per chunk (not per message: each commit is a WAL sync on SQLite and a round trip on
PostgreSQL) and turns them into points; writing threads (``influx_writers``) write batches of points to InfluxDB at
once and then, in the order the batches were prepared, record and acknowledge each, twice: the MQTT PUBACKs (manual
ack, in the order the messages came), and to each device an ``acks`` message naming the outbox messages
(``msg_id``) now stored or refused, which is what lets the agent delete them (agent/fleet/outbox.py). Preparing and
writing overlap (the next batch is prepared while InfluxDB takes the previous ones). A message seen before (an agent
publishing again what it has no ack for yet, or the broker redelivering to a collector killed before its PUBACK) is
recognised by its ``msg_id`` and acknowledged without a second write; its points are idempotent as well, so nothing
is counted twice either way.

Every message that cannot be applied, for whatever reason, becomes a dead letter and is acknowledged: a poison
message never stays unacknowledged (which would hold one of the session's ReceiveMaximum slots forever and, with
enough of them, stop ingestion for the whole fleet). Dead letters are stored at a bounded rate per device.

While InfluxDB is down the writer keeps its batch and retries with backoff; the in-memory buffer is bounded by the
session's ReceiveMaximum (the broker sends no more unacknowledged messages than that), and the broker keeps the
rest in the collector's persistent session (on disk with ``persistence true``).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.mqtt import MqttSettings
from edgebench.server.influx import InfluxError, points_for, writer
from edgebench.server.metrics import Metrics
from edgebench.server.registry import Registry
from edgebench.server.registry_backends import RegistryUnavailable

log = logging.getLogger(__name__)

try:  # decoding is a third of the per-message work; orjson (edgebench[server]) does it ~4x faster
    from orjson import loads as FAST_LOADS
except ImportError:  # pragma: no cover - the standard library's json then
    FAST_LOADS = None


@dataclass
class CollectorConfig:
    mqtt: MqttSettings
    influx_url: str
    influx_db: str
    data_dir: Path
    influx_username: Optional[str] = None
    influx_password: Optional[str] = None
    client_id: str = "edgebench-collector"
    share_group: str = "edgebench-collectors"
    batch_size: int = 5000  # points per InfluxDB write (a message's points are never split across writes)
    influx_writers: int = 2  # batches written to InfluxDB at once (acknowledged in order all the same)
    linger_s: float = 0.05  # while the writer is busy, hand it what is ready after this long at most
    receive_maximum: int = 2000  # unacknowledged messages in memory at most
    public_url: str = ""  # base URL agents fetch models from (the HTTP API)
    influx_token: Optional[str] = None  # InfluxDB 2.x/3.x native write API (with org and bucket)
    influx_org: Optional[str] = None
    influx_bucket: Optional[str] = None
    stall_after_s: float = 60.0  # a message held unacknowledged this long: /healthz reports the pipeline stalled
    model_bytes_per_s: float = 2 * 1024 * 1024  # per device, after MODEL_BURST_BYTES (a board fetching over MQTT)
    models_dir: Optional[Path] = None  # uploaded models, content-addressed (None: DATA_DIR/models); --models-dir

    def __post_init__(self) -> None:
        self.models_dir = self.models_dir or self.data_dir / "models"


@dataclass
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float
    device: Optional[str] = None  # from the topic, once parsed
    msg_id: Optional[str] = None  # an outbox message's id: acknowledged to its device once stored
    refused: Optional[str] = None  # why it was dead-lettered (acknowledged to the device as refused)
    duplicate: bool = False  # seen before: acknowledged, not written again
    job_event: Optional[tuple] = None  # (device, payload, labels): applied to its job once the points are stored


class PerDeviceBudget:
    """A token bucket per device: ``burst`` units at once, then ``rate`` units a second. What one device may cost
    the collector, the registry or the broker, whatever it sends."""

    MAX_DEVICES = 100_000  # forged device ids must not grow the table without bound

    def __init__(self, burst: float, rate: float, clock=time.monotonic):
        self.burst, self.rate, self.clock = burst, rate, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, last refill)

    def take(self, device: str, units: float = 1.0) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(device, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= units
        self._buckets[device] = (tokens - units if allowed else tokens, now)
        if len(self._buckets) > self.MAX_DEVICES:
            self._buckets.clear()
        return allowed


# A registry that does not answer (PostgreSQL down or restarting) is waited for as InfluxDB is: 0.5 s doubling to 30 s,
# the message held unacknowledged meanwhile.
REGISTRY_RETRY_S, REGISTRY_RETRY_MAX_S = 0.5, 30.0


class _Stopping(Exception):
    """The collector stops while waiting for the registry: the message is left unacknowledged (the broker sends it
    again, to this collector after its restart or to another of the group)."""


PREPARE_CHUNK = 500  # messages validated and applied to the registry together, a few registry calls a chunk
# kept in the registry's devices (temp_max_c: the board's hottest reading, for the collector's page)
HEARTBEAT_KEPT = ("uptime_s", "outbox_depth", "telemetry_dropped", "job_id", "temp_max_c", *p.HEARTBEAT_COUNTERS)
EARLY_PUBACKS_KEPT = 10_000  # PUBACKs of messages not (yet) known as jobs: acks, chunks, and jobs not noted yet

# Dead letters stored per device: 20 at once, then one every 3 s (all are counted).
DEAD_LETTER_BURST, DEAD_LETTER_RATE = 20, 1 / 3
# Model bytes served over MQTT per device: 8 windows at once, then --model-rate (2 MiB/s). A board fetches window
# after window (a 100 MB model in about a minute); a board asking for more than it reads cannot make the collector
# fill the broker's memory with chunks.
MODEL_BURST_BYTES = 8 * p.MODEL_WINDOW_BYTES


class Collector:
    def __init__(self, config: CollectorConfig, registry: Registry, metrics: Metrics):
        self.config, self.registry, self.metrics = config, registry, metrics
        self.influx = writer(config.influx_url, config.influx_db, config.influx_username, config.influx_password,
                             config.influx_token, config.influx_org, config.influx_bucket)
        self.inbox: queue.Queue = queue.Queue()
        # (seq, batch, lines) waiting for an InfluxDB writer; recorded and acknowledged in seq order (_in_turn)
        self.prepared: queue.Queue = queue.Queue(maxsize=config.influx_writers)
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.influx_ok = False
        self.client: Any = None
        self._job_mids: dict[int, str] = {}
        self._writers_busy = 0  # writers busy with a batch
        self._busy_lock = threading.Lock()
        self._turn = threading.Condition()  # whose turn it is to record and acknowledge its batch
        self._next_turn = 0
        self._labels: dict[str, dict] = {}  # device -> labels, a cache of the registry's (prepare thread only)
        self._job_lock = threading.Lock()  # around _job_mids and _early_pubacks only
        self._early_pubacks: collections.OrderedDict[int, bool] = collections.OrderedDict()  # mid -> PUBACK ok
        self.model_requests: queue.Queue = queue.Queue()  # model-request messages, served by their own thread
        self.models_dir = config.models_dir  # where the HTTP API stores uploads (api.py)
        self.held: dict[int, float] = {}  # id(Incoming) -> received: messages not yet acknowledged
        self._pending_ids: set[str] = set()  # msg ids in the pipeline (prepared, not yet recorded as delivered)
        self._dead_letter_budget = PerDeviceBudget(DEAD_LETTER_BURST, DEAD_LETTER_RATE)
        self._model_budget = PerDeviceBudget(MODEL_BURST_BYTES, config.model_bytes_per_s)
        self.registry_ok = True  # False while the registry does not answer (logged once, then when it is back)

    # ------------------------------------------------------------ MQTT

    def subscriptions(self) -> list[tuple[str, int]]:
        """Data goes through a shared subscription (collectors split the load); retained device state through a
        plain one (a shared subscription never receives retained messages; the updates are idempotent)."""
        shared = [(f"$share/{self.config.share_group}/{p.wildcard(kind)}", 1)
                  for kind in (p.EVENTS, p.TELEMETRY, p.HEARTBEAT, p.MODEL_REQUEST)]
        return shared + [(p.wildcard(p.STATUS), 1), (p.wildcard(p.INVENTORY), 1)]

    def start(self) -> None:
        from edgebench.agent.fleet import mqtt

        self.client = mqtt.make_client(self.config.mqtt, self.config.client_id, manual_ack=True)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message, self.client.on_publish = self._on_message, self._on_publish
        try:
            self.influx.create_database()
            self.influx_ok = True
        except InfluxError as exc:
            log.warning("cannot create database %s yet: %s (will retry)", self.config.influx_db, exc)
        mqtt.connect(self.client, self.config.mqtt, receive_maximum=self.config.receive_maximum)
        threading.Thread(target=self._prepare_loop, name="prepare", daemon=True).start()
        for n in range(self.config.influx_writers):
            threading.Thread(target=self._write_loop, name=f"write-{n}", daemon=True).start()
        threading.Thread(target=self._model_loop, name="models", daemon=True).start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to the broker (session present: %s)", flags.session_present)
        client.subscribe(self.subscriptions())
        self.connected.set()
        self.metrics.set("edgebench_mqtt_connected", 1)
        try:  # jobs submitted while the broker was away, or not yet PUBACKed
            unsent = self.registry.unsent_jobs()
        except RegistryUnavailable as exc:  # never wait in paho's thread: they go out at the next connection
            log.warning("jobs not yet sent could not be read (%s); they go out at the next connection", exc)
            unsent = []
        for job in unsent:
            self.publish_job(job)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.metrics.set("edgebench_mqtt_connected", 0)
        if not self.stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        item = Incoming(message.topic, message.payload, message.mid, message.qos, time.time())
        self.held[id(item)] = item.received
        if message.topic.endswith("/" + p.MODEL_REQUEST):  # not data: served apart, never held up by InfluxDB
            self.model_requests.put(item)
            return
        self.inbox.put(item)
        self.metrics.set("edgebench_buffer_depth", self.inbox.qsize())

    def _ack(self, item: Incoming) -> None:
        if item.qos:
            self.client.ack(item.mid, item.qos)
        self.held.pop(id(item), None)

    def oldest_held_s(self) -> float:
        """Age of the oldest message received and not yet acknowledged (0 when none is held)."""
        oldest = min(list(self.held.values()), default=None)
        return time.time() - oldest if oldest is not None else 0.0

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # paho calls this holding its own message lock: take ours only around dict work, never around a paho call
        # (publish_job holding _job_lock while publishing deadlocked against this callback).
        with self._job_lock:
            job_id = self._job_mids.pop(mid, None)
            if job_id is None:  # not a job, or a job whose PUBACK came before publish_job noted its mid
                self._early_pubacks[mid] = not reason.is_failure
                while len(self._early_pubacks) > EARLY_PUBACKS_KEPT:
                    self._early_pubacks.popitem(last=False)
        if job_id and not reason.is_failure:
            try:
                self.registry.job_sent(job_id)
            except RegistryUnavailable as exc:  # published all the same; sent again at the next connection
                log.warning("job %s not marked sent: %s", job_id, exc)

    def publish_job(self, job: dict) -> None:
        info = self.client.publish(p.topic(job["device"], p.JOBS), p.encode(p.JOBS, job), qos=1)
        with self._job_lock:
            acked = self._early_pubacks.pop(info.mid, None)
            if acked is None:
                self._job_mids[info.mid] = job["job_id"]
        if acked:
            self.registry.job_sent(job["job_id"])

    def cancel_job(self, device: str, job_id: str) -> None:
        payload = p.envelope(device, time.time(), job_id=job_id)
        self.client.publish(p.topic(device, p.CANCEL), p.encode(p.CANCEL, payload), qos=1)

    # ------------------------------------------------------------ models over MQTT

    def _model_loop(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.model_requests.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.serve_model_request(item)
            except Exception:  # noqa: BLE001 - the device asks again after its timeout
                log.exception("model request on %s failed", item.topic[:200])
            self._ack(item)

    def serve_model_request(self, item: Incoming) -> None:
        """Answer a model-request on the requesting device's own model-chunk topic: the window's bytes in chunks of
        at most MODEL_CHUNK_BYTES, from a model in the registry only, or one chunk with an ``error``."""
        self.metrics.inc("edgebench_messages_received_total")
        try:
            msg = p.validate(item.topic, item.payload, FAST_LOADS)
        except p.ProtocolError as exc:
            self._dead_letter(item, str(exc))
            return
        device, sha, offset, length = msg.device, msg.payload["sha256"], msg.payload["offset"], msg.payload["length"]
        refusal = ("its session is not online" if self.registry.device_state(device) != "online" else
                   "over its rate of model bytes" if not self._model_budget.take(device, length) else None)
        if refusal:  # not answered: a board that is really fetching asks again after its chunk timeout
            log.warning("model request from %s for %s not served: %s", device, sha[:12], refusal)
            self.metrics.inc("edgebench_model_requests_refused_total")
            return
        self.metrics.inc("edgebench_model_requests_total")
        model, path = self.registry.model(sha), self.models_dir / sha
        error = ("no such model in the registry" if model is None or not path.is_file() else
                 f"offset {offset} is beyond the model's {model['size_bytes']} bytes"
                 if offset >= model["size_bytes"] else None)
        if error:
            log.warning("model request from %s for %s: %s", device, sha[:12], error)
            self._publish_chunk(device, {"sha256": sha, "offset": offset, "error": error})
            return
        total, end = model["size_bytes"], min(offset + length, model["size_bytes"])
        info = None
        with open(path, "rb") as handle:
            handle.seek(offset)
            while offset < end:
                data = handle.read(min(p.MODEL_CHUNK_BYTES, end - offset))
                if not data:
                    break
                info = self._publish_chunk(device, {"sha256": sha, "offset": offset, "total": total,
                                                    "data": base64.b64encode(data).decode()})
                self.metrics.inc("edgebench_model_chunk_bytes_total", len(data))
                offset += len(data)
        if info is not None:  # one window in paho's queue at a time per request: memory stays bounded
            with contextlib.suppress(Exception):
                info.wait_for_publish(timeout=10)

    def _publish_chunk(self, device: str, fields: dict) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 600  # a device away longer asks again; stale chunks do not pile up
        data = p.encode(p.MODEL_CHUNK, p.envelope(device, time.time(), **fields))
        return self.client.publish(p.topic(device, p.MODEL_CHUNK), data, qos=1, properties=props)

    # ------------------------------------------------------------ the writer

    def _prepare_loop(self) -> None:
        """Take the messages waiting, up to PREPARE_CHUNK, validate them and apply them to the registry together
        (``_apply``), accumulating their points; hand the writer a batch when it reaches ``batch_size`` points, or
        at once when the writer is idle and nothing more is waiting (no lingering on a quiet fleet), or after
        ``linger_s`` while the writer is busy. Batches grow by themselves under load (they fill while the writer
        works) and stay small when the load is light."""
        items: list[Incoming] = []
        lines: list[str] = []
        started, seq = 0.0, 0
        while not self.stop.is_set():
            chunk = self._take_chunk(timeout=0.005 if items else 0.5)
            if chunk:
                self.metrics.inc("edgebench_messages_received_total", len(chunk))
                try:
                    points = self._apply_safely(chunk)
                except _Stopping:
                    return
                if not items:
                    started = time.monotonic()
                for item, its_points in zip(chunk, points):  # a message's points are never split across writes
                    items.append(item)
                    lines.extend(its_points)
                    if len(lines) >= self.config.batch_size:
                        self.prepared.put((seq, items, lines))
                        items, lines, started, seq = [], [], time.monotonic(), seq + 1
            if not items:
                continue
            idle = self._writers_busy < self.config.influx_writers and self.prepared.empty()
            if (len(lines) >= self.config.batch_size or (idle and self.inbox.empty())
                    or time.monotonic() - started >= self.config.linger_s):
                self.prepared.put((seq, items, lines))
                items, lines, seq = [], [], seq + 1

    def _take_chunk(self, timeout: float) -> list[Incoming]:
        """The next message (waiting up to ``timeout``) and those already waiting behind it, PREPARE_CHUNK at most."""
        try:
            chunk = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(chunk) < PREPARE_CHUNK:
            try:
                chunk.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return chunk

    def _apply_safely(self, chunk: list[Incoming]) -> list[list[str]]:
        """``_apply``, with any failure turned into a dead letter: every message is acknowledged either way. A
        registry that does not answer is no fault of the messages: it is waited for (``_until_registry``). Any
        other failure has each message of the chunk applied alone, so that only the one at fault is refused."""
        try:
            return self._until_registry(lambda: self._apply(chunk))
        except _Stopping:
            raise
        except Exception as exc:  # noqa: BLE001 - a message the code cannot handle must not hold the session
            if len(chunk) > 1:
                log.warning("%d messages could not be applied together (%s); applying each alone", len(chunk), exc)
                return [self._apply_safely([item])[0] for item in chunk]
            log.exception("message on %s could not be applied", chunk[0].topic[:200])
            self._dead_letter(chunk[0], f"could not be applied: {type(exc).__name__}: {str(exc)[:200]}")
            return [[]]

    def _write_loop(self) -> None:
        """One of ``influx_writers`` threads: each writes its batch to InfluxDB while the others write theirs (so
        InfluxDB parses several at once, as it can), then takes its turn (``_in_turn``): batches are recorded and
        acknowledged in the order they were prepared, which is the order the messages came (MQTT wants PUBACKs in
        that order)."""
        while not self.stop.is_set():
            try:
                seq, batch, lines = self.prepared.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._busy_lock:
                self._writers_busy += 1
            try:
                self._store(batch, lines, seq)
            except _Stopping:
                return
            finally:
                with self._busy_lock:
                    self._writers_busy -= 1

    def _store(self, batch: list[Incoming], lines: list[str], seq: Optional[int] = None) -> None:
        """Write the batch's points, then, in its turn (``seq``; None: no turn to wait for), record and acknowledge
        it. A batch whose write failed otherwise than by stopping is not acknowledged, but its turn passes."""
        written = True
        if lines:
            try:
                self._write(lines)
            except _Stopping:
                raise
            except Exception:  # noqa: BLE001
                log.exception("batch of %d messages failed; not acknowledged", len(batch))
                written = False
        action = (lambda: self._acknowledge(batch)) if written else (lambda: None)
        if seq is None:
            action()
        else:
            self._in_turn(seq, action)

    def _in_turn(self, seq: int, action: Callable[[], None]) -> None:
        """``action`` once every batch prepared before ``seq`` has had its turn; then the next batch's turn."""
        with self._turn:
            while self._next_turn != seq:
                if self.stop.is_set():
                    raise _Stopping()
                self._turn.wait(0.5)
            try:
                if self.stop.is_set():  # a collector stopping acknowledges nothing more
                    raise _Stopping()
                action()
            except _Stopping:
                raise
            except Exception:  # noqa: BLE001 - the next batches must not wait for this one forever
                log.exception("acknowledging a batch failed; its messages stay unacknowledged")
            finally:
                self._next_turn += 1
                self._turn.notify_all()

    def _acknowledge(self, batch: list[Incoming]) -> None:
        # Only now, with the points stored, may the jobs move on, and the broker and the devices forget the messages.
        delivered = [(item.msg_id, item.device) for item in batch
                     if item.msg_id and not item.refused and not item.duplicate]
        self._record_stored([item.job_event for item in batch if item.job_event], delivered)
        self._pending_ids.difference_update(msg_id for msg_id, _ in delivered)
        for item in batch:
            self._ack(item)
        self._acknowledge_devices(batch)
        now = time.time()
        for item in batch:
            self.metrics.observe("edgebench_ingest_delay_seconds", now - item.received)
        self.metrics.inc("edgebench_messages_stored_total", len(batch))
        self.metrics.set("edgebench_buffer_depth", self.inbox.qsize())

    def _record_stored(self, events: list[tuple], delivered: list[tuple[str, Optional[str]]]) -> None:
        """The batch's job events and delivered msg ids, in one registry transaction, waited for while the registry
        does not answer. Should that fail otherwise, each job event alone (one that fails is logged: its points are
        stored, so they are acknowledged all the same), then the msg ids."""
        try:
            self._until_registry(lambda: self.registry.record_stored(events, delivered))
            return
        except _Stopping:
            raise
        except Exception:  # noqa: BLE001
            log.exception("the registry updates of a batch of %d job events failed; applying each alone", len(events))
        for event in events:
            try:
                self._until_registry(lambda event=event: self.registry.record_stored([event], []))
            except _Stopping:
                raise
            except Exception:  # noqa: BLE001
                log.exception("registry update for job %s failed", str(event[1].get("job_id"))[:100])
        self._until_registry(lambda: self.registry.record_delivered(delivered))

    def _acknowledge_devices(self, batch: list[Incoming]) -> None:
        """One ``acks`` message per device (split at MAX_ACK_IDS): the outbox messages stored or refused."""
        per_device: dict[str, list[tuple[str, Any]]] = {}
        for item in batch:
            if item.msg_id and item.device:
                entry = ("refused", {"id": item.msg_id, "reason": item.refused[:1000]}) if item.refused else \
                    ("ids", item.msg_id)
                per_device.setdefault(item.device, []).append(entry)
        for device, entries in per_device.items():
            for start in range(0, len(entries), p.MAX_ACK_IDS):
                part = entries[start:start + p.MAX_ACK_IDS]
                payload = p.envelope(device, time.time(), ids=[v for k, v in part if k == "ids"],
                                     refused=[v for k, v in part if k == "refused"])
                self.client.publish(p.topic(device, p.ACKS), p.encode(p.ACKS, payload), qos=1)
            self.metrics.inc("edgebench_acks_sent_total", len(entries))

    def _apply(self, chunk: list[Incoming]) -> list[list[str]]:
        """Validate a chunk of messages and apply them to the registry with a few calls whatever their number (the
        jobs of its events, which of its msg ids are stored already, its devices' changes and heartbeats, labels
        not cached); returns each message's points (none for dead letters and duplicates). Made again from the
        start when the registry did not answer: the registry's calls are idempotent, and nothing else is changed
        before they have all been made."""
        refused: dict[int, str] = {}
        valid: list[tuple[int, Incoming, p.Message]] = []
        for n, item in enumerate(chunk):
            try:
                msg = p.validate(item.topic, item.payload, FAST_LOADS)
            except p.ProtocolError as exc:
                refused[n] = str(exc)
                continue
            item.device, item.msg_id = msg.device, msg.payload.get("msg_id")
            if msg.kind in p.SERVER_TOPICS:
                refused[n] = f"{msg.kind} is published by the collector, not by devices"
            else:
                valid.append((n, item, msg))
        owners = self.registry.job_devices(msg.payload["job_id"] for _, _, msg in valid if msg.kind == p.EVENTS)
        for n, _, msg in valid:  # a board speaking for another board's job
            if msg.kind == p.EVENTS and owners.get(msg.payload["job_id"], msg.device) != msg.device:
                refused[n] = f"job {msg.payload['job_id']} was sent to another device"
        fresh, duplicates = self._fresh([entry for entry in valid if entry[0] not in refused])
        self._apply_devices([msg for _, _, msg in fresh])
        points: list[list[str]] = [[] for _ in chunk]
        events: dict[int, tuple] = {}
        for n, item, msg in fresh:
            labels = self._labels[msg.device]
            if msg.kind == p.EVENTS:
                if msg.payload.get("labels"):  # the job's labels (release=...); the device's own win a conflict
                    labels = {**msg.payload["labels"], **labels}
                # A job is "done" in the registry only once its result is in InfluxDB: whoever waits on the job
                # (`push --wait`, then a query) finds the point there.
                events[n] = (msg.device, msg.payload, labels)
            points[n] = points_for(msg, labels, item.received)
        # Every registry call is made: from here on nothing is made again.
        for n, reason in refused.items():
            self._dead_letter(chunk[n], reason)
        for n in duplicates:  # published again before our ack reached the agent: ack it again, write nothing
            chunk[n].duplicate = True
            self.metrics.inc("edgebench_duplicates_total")
        for n, item, _ in fresh:
            if item.msg_id:
                self._pending_ids.add(item.msg_id)
            item.job_event = events.get(n)
        return points

    def _fresh(self, valid: list[tuple]) -> tuple[list[tuple], list[int]]:
        """``valid`` split into the messages not seen before and the indices of those seen before: in the pipeline
        now (``_pending_ids``, looked at first: the writer records an id as delivered before it leaves the set),
        stored already (one query for the chunk), or earlier in the chunk."""
        stored = self.registry.delivered_among(item.msg_id for _, item, _ in valid
                                               if item.msg_id and item.msg_id not in self._pending_ids)
        fresh, duplicates, ids = [], [], set()
        for entry in valid:
            msg_id = entry[1].msg_id
            if msg_id and (msg_id in self._pending_ids or msg_id in stored or msg_id in ids):
                duplicates.append(entry[0])
                continue
            if msg_id:
                ids.add(msg_id)
            fresh.append(entry)
        return fresh, duplicates

    def _apply_devices(self, messages: list[p.Message]) -> None:
        """The chunk's device updates, two transactions at most (statuses and inventories, then the newest
        heartbeat of each device), and the labels of its devices, read once per device and cached (the prepare
        thread is the only writer of the cache; only status and inventory change a device's labels)."""
        statuses = [(m.device, m.payload["state"], m.payload.get("labels"), m.payload.get("agent_version"))
                    for m in messages if m.kind == p.STATUS]
        inventories = [(m.device, m.payload) for m in messages if m.kind == p.INVENTORY]
        self.registry.device_changes(statuses, inventories)
        self.registry.devices_seen({m.device: {k: m.payload.get(k) for k in HEARTBEAT_KEPT}
                                    for m in messages if m.kind == p.HEARTBEAT})
        for device, *_ in (*statuses, *inventories):
            self._labels.pop(device, None)
        missing = {m.device for m in messages if m.device not in self._labels}
        known = self.registry.labels_of(missing)
        self._labels.update({device: known.get(device, {}) for device in missing})

    def _dead_letter(self, item: Incoming, reason: str) -> None:
        """Refuse a message for good: counted, stored (at a bounded rate per device, so one device cannot fill
        the registry), acknowledged, and refused by id to its device so the agent stops publishing it."""
        item.refused = reason
        if item.device is None:
            with contextlib.suppress(p.ProtocolError):
                item.device = p.parse_topic(item.topic)[0]
        if item.msg_id is None and item.device is not None and len(item.payload) <= max(p.MAX_PAYLOAD.values()):
            item.msg_id = p.msg_id_of(item.payload, FAST_LOADS)
        self.metrics.inc("edgebench_dead_letters_total")
        if self._dead_letter_budget.take(item.device or "?"):
            log.warning("dead letter on %s: %s", item.topic[:200], reason)
            self._until_registry(lambda: self.registry.dead_letter(item.topic, reason, item.payload))
        else:
            self.metrics.inc("edgebench_dead_letters_suppressed_total")

    def _write(self, lines: list[str]) -> None:
        """Write until InfluxDB takes the points, backing off 0.5 s -> 30 s; a rejected batch is split so one bad
        point cannot block the others forever."""
        delay = 0.5
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.influx.write(lines)
            except InfluxError as exc:
                self.metrics.inc("edgebench_influx_write_errors_total")
                self.influx_ok = False
                if not exc.retryable:
                    self._write_rejected(lines, exc)
                    return
                log.warning("InfluxDB write failed (%s); retrying in %.1fs", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
                self._ensure_database()
                continue
            self.influx_ok = True
            self.metrics.observe("edgebench_influx_write_seconds", time.monotonic() - started)
            self.metrics.inc("edgebench_points_written_total", len(lines))
            return
        raise RuntimeError("stopping before the batch was written")

    def _until_registry(self, call: Callable[[], Any]) -> Any:
        """``call()``, made again while the registry does not answer (RegistryUnavailable: PostgreSQL down or
        restarting), backing off REGISTRY_RETRY_S -> REGISTRY_RETRY_MAX_S; the message it is for stays held
        unacknowledged meanwhile, so /healthz turns stalled after --stall-after. Raises _Stopping on close."""
        delay = REGISTRY_RETRY_S
        while True:
            try:
                result = call()
            except RegistryUnavailable as exc:
                if self.registry_ok:
                    log.warning("the registry does not answer (%s); waiting for it, nothing acknowledged", exc)
                self.registry_ok = False
                if self.stop.wait(delay):
                    raise _Stopping() from exc
                delay = min(delay * 2, REGISTRY_RETRY_MAX_S)
                continue
            if not self.registry_ok:
                log.warning("the registry answers again")
                self.registry_ok = True
            return result

    def _ensure_database(self) -> None:
        with contextlib.suppress(InfluxError):
            self.influx.create_database()

    def _write_rejected(self, lines: list[str], exc: InfluxError) -> None:
        if "database not found" in str(exc):
            self._ensure_database()
            self._write(lines)
            return
        if len(lines) == 1:
            log.error("InfluxDB rejected a point: %s: %s", exc, lines[0][:300])
            self.registry.dead_letter("influx", str(exc), lines[0].encode())
            self.metrics.inc("edgebench_dead_letters_total")
            return
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            self._write(part)

    def close(self) -> None:
        self.stop.set()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def describe(collector: Collector) -> dict:
    """The collector's health: ``ok`` needs the broker, InfluxDB, and no message held unacknowledged longer than
    ``stall_after_s`` (a stalled pipeline, whatever the cause)."""
    oldest = collector.oldest_held_s()
    stalled = oldest > collector.config.stall_after_s
    return {"ok": collector.connected.is_set() and collector.influx_ok and not stalled,
            "mqtt": collector.connected.is_set(), "influx": collector.influx_ok, "stalled": stalled,
            "oldest_unacked_s": round(oldest, 3), "held": len(collector.held),
            "buffer_depth": collector.inbox.qsize() + collector.prepared.qsize(),
            "subscriptions": [s for s, _ in collector.subscriptions()]}


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()
