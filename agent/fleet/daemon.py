"""`edgebench agent`: the board's fleet daemon (docs/fleet.md).

One MQTT v5 persistent session (clean_start=False + SessionExpiryInterval, QoS 1): jobs queued while the board is
away wait in the broker. Status is retained with a last will that says offline. Everything the board reports goes
through the SQLite outbox (store.py) and leaves it only on the broker's PUBACK. Jobs run one at a time, each in a
child process (jobrunner.py) that can be cancelled or timed out; they are deduplicated by job id.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .. import __version__
from ..errors import EdgebenchError
from . import protocol as p
from .modelcache import ChunkSource, ModelCache
from .mqtt import MqttSettings
from .store import AgentStore

log = logging.getLogger(__name__)

OUTBOX_WINDOW = 20  # QoS 1 messages in flight at once; the rest wait on disk
JOB_GRACE_S = 30.0
MAX_ATTEMPTS = 3  # a job that took the agent down this many times is failed instead of run again


@dataclass
class AgentConfig:
    mqtt: MqttSettings
    device_id: str
    data_dir: Path
    labels: dict = field(default_factory=dict)
    model_url: Optional[str] = None  # base URL of the collector's model registry when a job names none
    heartbeat_s: float = 30.0
    telemetry_s: float = 10.0  # sampling period; a batch is published every 6 samples
    cache_quota_bytes: int = 2 * 1024**3
    max_telemetry_rows: int = 2000
    default_timeout_s: float = 3600.0
    model_transport: str = "auto"  # auto: HTTP, then MQTT chunks; http or mqtt: that one only
    model_chunk_timeout_s: float = 30.0  # a model-request window without a chunk this long is asked for again


def default_device_id() -> str:
    """A stable id from the machine: hostname plus a short hash of /etc/machine-id (survives reboots)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40].strip("-.") or "board"
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = host
    return f"{host}-{hashlib.sha256(machine.encode()).hexdigest()[:8]}"


def available_runtimes() -> list[str]:
    found = []
    if importlib.util.find_spec("ai_edge_litert") or importlib.util.find_spec("tflite_runtime"):
        found.append("litert")
    if importlib.util.find_spec("onnxruntime"):
        found.append("onnxruntime")
    return found


class Telemetry:
    """What the agent reports between jobs: load and free memory from /proc, and the board's temperature, CPU
    clock and power through the sensor plugins (the same readers `edgebench bench` samples; discovered once)."""

    def __init__(self, root: str = "/"):
        from ..sensors import discover

        self.sensors = discover(root)

    def read(self) -> dict:
        from ..sensors import pick_power, read_all

        readings = system_readings()
        values = read_all(self.sensors)
        temps = [r.value for r in values if r.kind == "temperature" and isinstance(r.value, float)]
        clocks = [r for r in values if r.kind == "frequency" and isinstance(r.value, float)
                  and r.sensor.startswith("cpufreq/")]
        current = [r.value for r in clocks if r.sensor.endswith("/cur")]
        allowed = [r.value for r in clocks if r.sensor.endswith("/max")]  # scaling_max: lowered by thermal caps
        power = pick_power(values)
        derived = {"temp_max_c": max(temps, default=None), "cpu_freq_hz": max(current, default=None),
                   "cpu_freq_max_hz": max(allowed, default=None),
                   "power_w": float(power.value) if power is not None else None}
        readings.update({k: v for k, v in derived.items() if v is not None})
        return readings


def system_readings() -> dict:
    readings: dict[str, float] = {}
    try:
        readings["load1"] = float(Path("/proc/loadavg").read_text().split()[0])
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                readings["mem_available_bytes"] = float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return readings


def kill_leftover(pid: Optional[int]) -> None:
    """A job process orphaned by a killed agent (it runs in its own session): stop it before the job runs again.
    The command line is checked so a recycled PID of some other process is left alone."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"edgebench.agent.fleet.jobrunner" in cmdline:
        log.warning("stopping job process %d left by a previous agent", pid)
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            os.killpg(pid, signal.SIGKILL)


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.device = p.check_device_id(config.device_id)
        self.store = AgentStore(config.data_dir / "agent.sqlite3", max_telemetry=config.max_telemetry_rows)
        self.cache = ModelCache(config.data_dir / "models", config.cache_quota_bytes)
        self.reports = config.data_dir / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.wake = threading.Event()  # the main loop: something to publish
        self.job_wake = threading.Event()  # the job thread: a job arrived
        self.connected = threading.Event()
        self.acks: queue.Queue = queue.Queue()  # (mid, failed) from paho's thread, matched by the main loop
        self.inflight: dict[int, int] = {}  # mid -> outbox row, touched by the main loop only
        self.refused: set[int] = set()  # rows the broker refused (ACL): retried after a restart only
        self.current_job: Optional[str] = None
        self.cancel_requested: Optional[str] = None
        self.telemetry: list[dict] = []
        self.telemetry_source = Telemetry()
        self.client: Any = None
        self.chunks = ChunkSource(self._request_model)

    # ------------------------------------------------------------ MQTT callbacks (paho's thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to %s:%s (session present: %s)", self.config.mqtt.host, self.config.mqtt.port,
                 flags.session_present)
        self._publish_now(p.STATUS, p.envelope(self.device, time.time(), state="online",
                                               agent_version=__version__, labels=self.config.labels), retain=True)
        self._publish_now(p.INVENTORY, self._inventory(), retain=True)
        client.subscribe([(p.topic(self.device, p.JOBS), 1), (p.topic(self.device, p.CANCEL), 1),
                          (p.topic(self.device, p.MODEL_CHUNK), 1)])
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if not self.stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting with backoff", reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.acks.put((mid, bool(getattr(reason, "is_failure", False)), str(reason)))
        self.wake.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # paho acknowledges a QoS 1 message after this returns: the job is on disk by then.
        try:
            msg = p.validate(message.topic, message.payload)
        except p.ProtocolError as exc:
            log.error("refused a message on %s: %s", message.topic, exc)
            if not message.topic.endswith("/" + p.MODEL_CHUNK):
                self._reject(message.payload, str(exc))
            return
        if msg.kind == p.MODEL_CHUNK:
            self.chunks.offer(msg.payload)
        elif msg.kind == p.JOBS:
            self._receive_job(msg.payload)
        elif msg.kind == p.CANCEL:
            self._cancel(msg.payload["job_id"])

    # ------------------------------------------------------------ jobs in

    def _reject(self, data: bytes, reason: str) -> None:
        try:
            job_id = json.loads(data).get("job_id")
        except (ValueError, AttributeError):
            return
        if isinstance(job_id, str) and p.JOB_ID.match(job_id):
            self.event("rejected", job_id, reason=reason[:2000])

    def _receive_job(self, job: dict) -> None:
        if not self.store.add_job(job["job_id"], json.dumps(job)):
            log.info("job %s seen before: ignored (redelivery)", job["job_id"])
            return
        self.event("accepted", job["job_id"])
        self.job_wake.set()

    def _cancel(self, job_id: str) -> None:
        if self.store.cancel_queued(job_id):
            self.event("cancelled", job_id, reason="cancelled before it started")
        elif self.current_job == job_id:
            self.cancel_requested = job_id

    # ------------------------------------------------------------ publishing

    def event(self, kind: str, job_id: str, **fields: Any) -> None:
        payload = p.envelope(self.device, time.time(), event=kind, job_id=job_id, **fields)
        self.store.enqueue(p.topic(self.device, p.EVENTS), p.encode(p.EVENTS, payload), "event")
        self.wake.set()

    def _publish_now(self, kind: str, payload: dict, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(p.topic(self.device, kind), p.encode(kind, payload), qos=qos, retain=retain)

    def _inventory(self) -> dict:
        from .. import provenance

        return p.envelope(self.device, time.time(), labels=self.config.labels, runtimes=available_runtimes(),
                          device_facts=provenance.collect(edgebench_version=__version__),
                          agent_version=__version__)

    def flush(self) -> None:
        """Match PUBACKs to outbox rows (delete them), then hand the next rows to paho."""
        while True:
            try:
                mid, failed, reason = self.acks.get_nowait()
            except queue.Empty:
                break
            row = self.inflight.pop(mid, None)
            if row is None:
                continue
            if failed:
                log.error("broker refused outbox message %d: %s (kept; retried after a restart)", row, reason)
                self.refused.add(row)
            else:
                self.store.acknowledged(row)
        if not self.connected.is_set():
            return
        room = OUTBOX_WINDOW - len(self.inflight)
        if room <= 0:
            return
        busy = set(self.inflight.values()) | self.refused
        for row, topic_name, payload in self.store.pending(busy, room):
            info = self.client.publish(topic_name, payload, qos=1)
            self.inflight[info.mid] = row  # paho resends it after a reconnect, with the same mid

    def _sample_telemetry(self) -> None:
        readings = self.telemetry_source.read()
        if readings:
            self.telemetry.append({"ts": time.time(), "readings": readings})
        if len(self.telemetry) >= 6:
            payload = p.envelope(self.device, time.time(), samples=self.telemetry)
            self.store.enqueue(p.topic(self.device, p.TELEMETRY), p.encode(p.TELEMETRY, payload), "telemetry")
            self.telemetry = []

    def _request_model(self, sha256: str, offset: int, length: int) -> None:
        """A model-request (QoS 1, straight out: paho resends it after a reconnect; the fetch retries on timeout)."""
        self._publish_now(p.MODEL_REQUEST, p.envelope(self.device, time.time(), sha256=sha256, offset=offset,
                                                      length=length))

    def _model(self, sha256: str, size: Optional[int], url: Optional[str]) -> Path:
        """A verified model through the cache, by the agent's --model-transport."""
        return self.cache.get(sha256, size, url, chunks=self.chunks, transport=self.config.model_transport,
                              chunk_timeout_s=self.config.model_chunk_timeout_s)

    def _heartbeat(self) -> None:
        if self.connected.is_set():
            self._publish_now(p.HEARTBEAT, p.envelope(
                self.device, time.time(), uptime_s=round(time.monotonic() - self.started, 3),
                outbox_depth=self.store.depth(), telemetry_dropped=self.store.counter("telemetry_dropped"),
                job_id=self.current_job), qos=0)

    # ------------------------------------------------------------ jobs

    def _job_loop(self) -> None:
        while not self.stop.is_set():
            nxt = self.store.next_job()
            if nxt is None:
                self.job_wake.wait(5.0)
                self.job_wake.clear()
                continue
            job_id, spec, attempts = nxt
            try:
                self._run_job(job_id, json.loads(spec), attempts)
            except Exception:  # noqa: BLE001 - one bad job must not stop the daemon
                log.exception("job %s failed unexpectedly", job_id)
                self._finish(job_id, "failed", "error", reason="internal error in the agent (see its log)")

    def _finish(self, job_id: str, state: str, kind: str, **fields: Any) -> None:
        payload = p.envelope(self.device, time.time(), event=kind, job_id=job_id, **fields)
        self.store.finish_job(job_id, state, p.topic(self.device, p.EVENTS), p.encode(p.EVENTS, payload),
                              "result" if kind == "result" else "event")
        self.wake.set()

    def _run_job(self, job_id: str, job: dict, attempts: int) -> None:
        if attempts >= MAX_ATTEMPTS:
            self._finish(job_id, "failed", "error", reason=f"the agent stopped during this job {attempts} times")
            return
        if attempts:
            kill_leftover(self.store.job_pid(job_id))
        self.store.start_job(job_id)
        self.current_job, self.cancel_requested = job_id, None
        try:
            model = job["model"]
            url = model.get("url") or (f"{self.config.model_url.rstrip('/')}/api/v1/models/{model['sha256']}/content"
                                       if self.config.model_url else None)
            try:
                path = self._model(model["sha256"], int(model["size_bytes"]), url)
            except EdgebenchError as exc:
                self._finish(job_id, "failed", "error", reason=str(exc), error_kind="ModelError")
                return
            reference = self._reference(job, url)
            self._execute(job_id, job, path, reference)
        finally:
            self.current_job = None

    def _reference(self, job: dict, model_url: Optional[str]) -> Union[Path, str, None]:
        """The job's reference model (drift is measured against it), through the same content-addressed cache:
        its path, or why it could not be had (the benchmark still runs; the result says why it has no drift)."""
        sha = job.get("reference")
        if not sha:
            return None
        suffix = f"/{job['model']['sha256']}/content"
        base: Optional[str] = None
        if model_url and model_url.endswith(suffix) and model_url.startswith(("http://", "https://")):
            base = model_url[:-len(suffix)]
        elif self.config.model_url:
            base = f"{self.config.model_url.rstrip('/')}/api/v1/models"
        elif self.config.model_transport == "http":
            return "reference model: no download URL (the model's URL is not the collector's, and no --model-url)"
        try:  # without an HTTP base, over MQTT (the collector serves its registry's models there too)
            return self._model(sha, None, f"{base}/{sha}/content" if base else None)
        except (EdgebenchError, ValueError) as exc:
            return f"reference model: {exc}"

    def _execute(self, job_id: str, job: dict, model_path: Path, reference: Union[Path, str, None] = None) -> None:
        work = self.config.data_dir / "work"
        work.mkdir(exist_ok=True)
        job_file, out_file = work / f"{job_id}.job.json", work / f"{job_id}.out.json"
        job_file.write_text(json.dumps(dict(job, timeout_s=job.get("timeout_s") or self.config.default_timeout_s)))
        out_file.unlink(missing_ok=True)
        # The engine kills its benchmark process at timeout_s and says in which phase; the agent's own deadline,
        # a little later, is the backstop for a job process that hangs outside the benchmark.
        timeout = float(job.get("timeout_s") or self.config.default_timeout_s) + JOB_GRACE_S
        with open(work / f"{job_id}.log", "wb") as log_file:  # the engine's own output, for post-mortems
            argv = [str(job_file), str(model_path), str(out_file)] + ([str(reference)] if isinstance(reference, Path)
                                                                       else [])
            proc = subprocess.Popen([sys.executable, "-m", "edgebench.agent.fleet.jobrunner", *argv],
                                    stdout=subprocess.PIPE, stderr=log_file,
                                    start_new_session=True)
            self.store.set_pid(job_id, proc.pid)
            reason = self._watch(proc, job_id, timeout)
        if reason == "stopping":
            return  # the daemon is shutting down: the job stays 'running' and runs again after a restart
        if reason:
            self._finish(job_id, "cancelled" if reason.startswith("cancelled") else "failed",
                         "cancelled" if reason.startswith("cancelled") else "error", reason=reason)
            return
        if isinstance(reference, str):
            self._report(job_id, job, out_file, {"error": reference[:2000], "reference_sha": job["reference"]})
        else:
            self._report(job_id, job, out_file)

    def _watch(self, proc: subprocess.Popen, job_id: str, timeout: float) -> Optional[str]:
        """Relay progress until the child exits; kill its process group on cancel, timeout or shutdown."""
        deadline, buffer, fd = time.monotonic() + timeout, b"", proc.stdout.fileno()
        while True:
            reason = ("stopping" if self.stop.is_set() else
                      "cancelled on request" if self.cancel_requested == job_id else
                      f"timed out after {timeout:g}s" if time.monotonic() > deadline else None)
            if reason:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return reason
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                proc.wait()
                return None
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                self._progress(job_id, line)

    def _progress(self, job_id: str, line: bytes) -> None:
        try:
            info = json.loads(line)
            if self.connected.is_set():  # progress is ephemeral: QoS 0, straight out, never queued
                self._publish_now(p.EVENTS, p.envelope(self.device, time.time(), event="progress", job_id=job_id,
                                                       phase=info["phase"], runs=info["runs"],
                                                       elapsed_s=info["elapsed_s"]), qos=0)
        except (ValueError, KeyError, p.ProtocolError):
            pass

    def _report(self, job_id: str, job: dict, out_file: Path, drift: Optional[dict] = None) -> None:
        try:
            outcome = json.loads(out_file.read_text())
        except (OSError, ValueError):
            self._finish(job_id, "failed", "error", reason="the job process died without a result")
            return
        if "error" in outcome:
            self._finish(job_id, "failed", "error", reason=outcome["error"][:2000], error_kind=outcome.get("kind"))
            return
        report = outcome["report"]
        labels = job.get("labels") or {}  # e.g. release=v1.5.0 from `edgebench push --label`
        report["labels"] = {**(report.get("labels") or {}), **labels}
        drift = drift or outcome.get("drift")
        if drift is not None:
            try:
                p.check_drift(drift)
            except p.ProtocolError as exc:
                drift = {"error": f"drift: {exc}", "reference_sha": job["reference"]}
            report["drift"] = drift
        (self.reports / f"{job_id}.json").write_text(json.dumps(report))
        summary = p.summarize_report(report)
        summary["model"]["name"] = job["model"].get("name") or summary["model"].get("name")  # not the cache name
        extra: dict[str, Any] = {"labels": labels} if labels else {}
        if drift is not None:
            extra["drift"] = drift
        limit = p.MAX_RESULT_SAMPLES
        while True:  # the raw samples (for regression gates), as many as fit in one event
            extra["samples"] = p.result_samples(report, limit)
            try:
                p.encode(p.EVENTS, p.envelope(self.device, time.time(), event="result", job_id=job_id,
                                              run_id=job_id, finished_ts=time.time(), summary=summary, **extra))
                break
            except p.ProtocolError:
                if limit <= 100:
                    extra.pop("samples")
                    break
                limit //= 2
        self._finish(job_id, "done", "result", run_id=job_id, finished_ts=time.time(), summary=summary, **extra)

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        from . import mqtt

        self.client = mqtt.make_client(self.config.mqtt, client_id=f"edgebench-agent-{self.device}")
        self.client.will_set(p.topic(self.device, p.STATUS), p.encode(p.STATUS, p.envelope(
            self.device, 0, state="offline", agent_version=__version__, labels=self.config.labels)),
            qos=1, retain=True)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_publish, self.client.on_message = self._on_publish, self._on_message
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        mqtt.connect(self.client, self.config.mqtt)
        worker = threading.Thread(target=self._job_loop, name="jobs", daemon=True)
        worker.start()
        self._main_loop()
        self.job_wake.set()
        worker.join(timeout=10)
        self._shutdown()
        return 0

    def _main_loop(self) -> None:
        next_heartbeat = next_sample = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self._sample_telemetry()
                next_sample = now + self.config.telemetry_s
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.config.heartbeat_s
            self.flush()
            self.wake.wait(max(0.05, min(next_sample, next_heartbeat) - time.monotonic()))
            self.wake.clear()

    def _shutdown(self) -> None:
        """A clean stop says offline itself (the last will is only for deaths) and drains what it can."""
        deadline = time.monotonic() + 3.0
        while self.connected.is_set() and self.store.depth() - len(self.refused) > 0 \
                and time.monotonic() < deadline:
            self.flush()
            time.sleep(0.05)
        if self.connected.is_set():
            info = self.client.publish(p.topic(self.device, p.STATUS), p.encode(p.STATUS, p.envelope(
                self.device, time.time(), state="offline", agent_version=__version__, labels=self.config.labels)),
                qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
