"""`edgebench server`: MQTT -> validation -> registry + InfluxDB, acknowledging each message only once it is stored.

paho's network thread only queues messages; a preparing thread validates them in batches, updates the registry and
turns them into points; a writing thread writes each batch's points to InfluxDB and only then acknowledges the
batch, twice: the MQTT PUBACKs (manual ack, in the order the messages came), and to each device an ``acks``
message naming the outbox messages (``msg_id``) now stored or refused, which is what lets the agent delete them
(agent/fleet/outbox.py). The two threads overlap (the next batch is prepared while InfluxDB takes the previous
one). A message seen before (an agent publishing again what it has no ack for yet, or the broker redelivering to a
collector killed before its PUBACK) is recognised by its ``msg_id`` and acknowledged without a second write; its
points are idempotent as well, so nothing is counted twice either way.

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
    after_write: Optional[Callable[[], None]] = None  # registry changes that must wait for the points (job results)
    marked: bool = False  # its msg_id is in the collector's _pending_ids because of it


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
        self.prepared: queue.Queue = queue.Queue(maxsize=2)  # (batch, lines) waiting for the InfluxDB writer
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.influx_ok = False
        self.client: Any = None
        self._job_mids: dict[int, str] = {}
        self._writing = False  # the writer is busy with a batch
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
        threading.Thread(target=self._write_loop, name="write", daemon=True).start()
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
        """Validate and apply messages one by one as they arrive, accumulating their points; hand the writer a
        batch when it reaches ``batch_size`` points, or at once when the writer is idle and nothing more is
        waiting (no lingering on a quiet fleet), or after ``linger_s`` while the writer is busy. Batches grow by
        themselves under load (they fill while the writer works) and stay small when the load is light."""
        items: list[Incoming] = []
        lines: list[str] = []
        started = 0.0
        while not self.stop.is_set():
            try:
                item = self.inbox.get(timeout=0.005 if items else 0.5)
            except queue.Empty:
                item = None
            if item is not None:
                try:
                    points = self._apply_safely(item)
                except _Stopping:
                    return
                if not items:
                    started = time.monotonic()
                items.append(item)
                lines.extend(points)
            if not items:
                continue
            idle = not self._writing and self.prepared.empty()
            if (len(lines) >= self.config.batch_size or (idle and self.inbox.empty())
                    or time.monotonic() - started >= self.config.linger_s):
                self.prepared.put((items, lines))
                items, lines = [], []

    def _apply_safely(self, item: Incoming) -> list[str]:
        """``_apply``, with any failure turned into a dead letter: the message is acknowledged either way. A
        registry that does not answer is no fault of the message: it is waited for (``_until_registry``)."""
        self.metrics.inc("edgebench_messages_received_total")

        def attempt() -> list[str]:
            try:
                return self._apply(item)
            except RegistryUnavailable:
                if item.marked:  # this message's own mark: the next attempt must not take it for a duplicate
                    self._pending_ids.discard(item.msg_id)
                    item.marked = False
                raise

        try:
            return self._until_registry(attempt)
        except _Stopping:
            raise
        except Exception as exc:  # noqa: BLE001 - a message the code cannot handle must not hold the session
            log.exception("message on %s could not be applied", item.topic[:200])
            if item.msg_id:
                self._pending_ids.discard(item.msg_id)
            self._dead_letter(item, f"could not be applied: {type(exc).__name__}: {str(exc)[:200]}")
            return []

    def _write_loop(self) -> None:
        while not self.stop.is_set():
            try:
                batch, lines = self.prepared.get(timeout=0.5)
            except queue.Empty:
                continue
            self._writing = True
            try:
                self._store(batch, lines)
            except _Stopping:
                return
            except Exception:  # noqa: BLE001
                log.exception("batch of %d messages failed; not acknowledged", len(batch))
            finally:
                self._writing = False

    def _store(self, batch: list[Incoming], lines: list[str]) -> None:
        if lines:
            self._write(lines)
        for item in batch:
            if item.after_write is not None:
                try:  # a registry that does not answer is waited for: the job's state is not dropped
                    self._until_registry(item.after_write)
                except _Stopping:
                    raise
                except Exception:  # noqa: BLE001 - the points are stored: acknowledge them all the same
                    log.exception("registry update for %s failed", item.topic[:200])
        # Only now, with the points stored, may the broker and the devices forget the messages.
        delivered = [(item.msg_id, item.device) for item in batch
                     if item.msg_id and not item.refused and not item.duplicate]
        self._until_registry(lambda: self.registry.record_delivered(delivered))
        self._pending_ids.difference_update(msg_id for msg_id, _ in delivered)
        for item in batch:
            self._ack(item)
        self._acknowledge_devices(batch)
        now = time.time()
        for item in batch:
            self.metrics.observe("edgebench_ingest_delay_seconds", now - item.received)
        self.metrics.inc("edgebench_messages_stored_total", len(batch))
        self.metrics.set("edgebench_buffer_depth", self.inbox.qsize())

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

    def _apply(self, item: Incoming) -> list[str]:
        """Validate one message and update the registry; returns its points (dead letters and duplicates return
        none). Made again from the start when the registry did not answer: every step is idempotent."""
        try:
            msg = p.validate(item.topic, item.payload, FAST_LOADS)
        except p.ProtocolError as exc:
            self._dead_letter(item, str(exc))
            return []
        item.device, item.msg_id = msg.device, msg.payload.get("msg_id")
        if msg.kind in p.SERVER_TOPICS:
            self._dead_letter(item, f"{msg.kind} is published by the collector, not by devices")
            return []
        if msg.kind == p.EVENTS:
            owner = self.registry.job_device(msg.payload["job_id"])
            if owner is not None and owner != msg.device:  # a board speaking for another board's job
                self._dead_letter(item, f"job {msg.payload['job_id']} was sent to another device")
                return []
        if item.msg_id and (item.msg_id in self._pending_ids or self.registry.delivered(item.msg_id)):
            item.duplicate = True  # published again before our ack reached the agent: ack it again, write nothing
            self.metrics.inc("edgebench_duplicates_total")
            return []
        if item.msg_id:
            self._pending_ids.add(item.msg_id)
            item.marked = True
        payload = msg.payload
        if msg.kind == p.STATUS:
            self.registry.device_status(msg.device, payload["state"], payload.get("labels"),
                                        payload.get("agent_version"))
        elif msg.kind == p.INVENTORY:
            self.registry.device_inventory(msg.device, payload)
        elif msg.kind == p.HEARTBEAT:
            self.registry.device_seen(msg.device, {k: payload.get(k) for k in
                                                   ("uptime_s", "outbox_depth", "telemetry_dropped", "job_id",
                                                    *p.HEARTBEAT_COUNTERS)})
        if msg.kind in (p.STATUS, p.INVENTORY):  # only these change a device's labels
            self._labels.pop(msg.device, None)
        labels = self._labels.get(msg.device)
        if labels is None:  # one SQLite query per device, not per message (the prepare thread is the only writer)
            labels = self._labels[msg.device] = self.registry.labels(msg.device)
        if msg.kind == p.EVENTS:
            if payload.get("labels"):  # the job's labels (release=...); the device's own labels win a conflict
                labels = {**payload["labels"], **labels}
            # A job is "done" in the registry only once its result is in InfluxDB: whoever waits on the job
            # (`push --wait`, then a query) finds the point there.
            item.after_write = lambda: (self.registry.job_event(msg.device, payload, labels),
                                        self.registry.device_seen(msg.device))
        return points_for(msg, labels, item.received)

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
