"""`edgebench agent`: the board's fleet daemon (docs/fleet.md).

One MQTT v5 persistent session (clean_start=False + SessionExpiryInterval, QoS 1): jobs queued while the board is
away wait in the broker. Status is retained with a last will that says offline. Everything the board reports goes
through the SQLite outbox (store.py) and leaves it only when the collector acknowledges it (outbox.py). Jobs run one
at a time, each in a child process (jobrunner.py) that can be cancelled or timed out; they are deduplicated by job
id.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from edgebench.agent import __version__
from edgebench.agent.errors import EdgebenchError
from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.modelcache import ChunkSource, ModelCache
from edgebench.agent.fleet.mqtt import MqttSettings
from edgebench.agent.fleet.outbox import Outbox
from edgebench.agent.fleet.store import AgentStore

log = logging.getLogger(__name__)

JOB_GRACE_S = 30.0
GROUP_WAIT_S = 30.0  # how long a job waits for the rest of its interleave group to arrive
MAX_ATTEMPTS = 3  # a job that took the agent down this many times is failed instead of run again
# The disk (docs/fleet.md): a finished job's files in work/ go once its final event is in the outbox; a failed job
# keeps the end of its log, and only the newest few of those are kept.
FAILED_LOG_TAIL = 64 * 1024
MAX_FAILED_LOGS = 20
MAX_REPORTS = 1000  # reports/ keeps at most this many full reports, whatever their size (--reports-quota)
FINISH_RETRY_MAX_S = 10.0  # a job's final event that cannot be written (full disk) is tried again this often
WORK_SUFFIXES = (".job.json", ".log", ".out.json", ".out.json.tmp")  # work/ files: JOB_ID + one of these (the
# last two: outcomes older agents wrote to disk)


@dataclass
class AgentConfig:
    mqtt: MqttSettings
    device_id: str
    data_dir: Path
    labels: dict = field(default_factory=dict)
    model_url: Optional[str] = None  # base URL of the collector's model registry when a job names none
    heartbeat_s: float = 30.0
    telemetry_s: float = 10.0  # sampling period; a batch is published every 6 samples
    sensors_root: str = "/"  # where the board's sensors are read (telemetry and jobs): a mounted /sys, a recorded tree
    cache_quota_bytes: int = 2 * 1024**3
    max_telemetry_rows: int = 2000
    default_timeout_s: float = p.DEFAULT_JOB_TIMEOUT_S
    model_transport: str = "auto"  # auto: HTTP, then MQTT chunks; http or mqtt: that one only
    model_chunk_timeout_s: float = 30.0  # a model-request window without a chunk this long is asked for again
    ack_wait_s: float = 30.0  # an outbox message the collector has not acknowledged is published again after this
    max_unacked: int = 100  # outbox messages waiting for the collector's ack at most; the rest wait on disk
    reports_quota_bytes: int = 256 * 1024**2  # full reports kept in reports/ (oldest deleted first; 0: none)
    min_free_bytes: int = 64 * 1024**2  # free space the data dir's file system needs before a job starts (0: any)


def default_device_id() -> str:
    """A stable id from the machine: hostname plus a short hash of /etc/machine-id (survives reboots)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40].strip("-.") or "board"
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = host
    return f"{host}-{hashlib.sha256(machine.encode()).hexdigest()[:8]}"


def available_runtimes() -> list[str]:
    from edgebench.agent.runtimes.names import installed

    return installed()


class Telemetry:
    """What the agent reports between jobs: load and free memory from /proc, and the board's temperature, CPU
    clock and power through the sensor plugins (the same readers `edgebench bench` samples; discovered once)."""

    def __init__(self, root: str = "/"):
        from edgebench.agent.sensors import discover

        self.sensors = discover(root)

    def read(self) -> dict:
        from edgebench.agent.sensors import pick_power, read_all

        readings = system_readings()
        values = read_all(self.sensors)
        temps = [r.value for r in values if r.kind == "temperature" and isinstance(r.value, float)]
        clocks = [r for r in values if r.plugin == "cpufreq" and r.kind == "frequency" and isinstance(r.value, float)]
        current = [r.value for r in clocks if r.role == "current"]
        allowed = [r.value for r in clocks if r.role == "limit_max"]  # scaling_max: lowered by thermal caps
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


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed for lack of space: ENOSPC/EDQUOT from a file, or SQLite's "database or disk is full"
    (SQLITE_FULL: what SQLite makes of ENOSPC while writing its database or WAL)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            return code & 0xFF == sqlite3.SQLITE_FULL
        return "disk is full" in str(exc).lower()
    return False


def megabytes(size: float) -> str:
    return f"{size / 1024**2:.1f}"


def work_job_id(name: str) -> Optional[str]:
    """The job a work/ file belongs to (job ids may contain dots: the suffix decides)."""
    for suffix in WORK_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return None


def keep_tail(path: Path, size: int = FAILED_LOG_TAIL) -> None:
    """Cut a file down to its last ``size`` bytes, in place (works on a full disk: nothing grows)."""
    with open(path, "r+b") as handle:
        length = handle.seek(0, os.SEEK_END)
        if length <= size:
            return
        handle.seek(length - size)
        tail = handle.read(size)
        handle.seek(0)
        handle.write(tail)
        handle.truncate(len(tail))


class Stop(enum.Enum):
    """Why the agent stops a job's process (``isolation.run_child``'s ``stop_when``)."""

    CANCELLED = "cancelled on request"
    SHUTDOWN = "the agent is shutting down"


@dataclass
class Reference:
    """The job's reference model for drift: its path in the cache, or why it could not be had."""

    path: Optional[Path] = None
    error: Optional[str] = None


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
        # an https:// collector is verified with the broker's CA (--tls-ca): the same TLS options as MQTT
        self.cache = ModelCache(config.data_dir / "models", config.cache_quota_bytes, config.mqtt.ca_file)
        self.reports = config.data_dir / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.work = config.data_dir / "work"
        self.work.mkdir(exist_ok=True)
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.wake = threading.Event()  # the main loop: something to publish
        self.job_wake = threading.Event()  # the job thread: a job arrived
        self.connected = threading.Event()
        self.outbox = Outbox(self.store, self._publish_outbox, ack_wait_s=config.ack_wait_s,
                             max_outstanding=config.max_unacked)
        self.current_job: Optional[str] = None
        self.running_jobs: set = set()  # the running job, or the jobs of an interleaved group
        self.cancel_requested: Optional[str] = None
        self.telemetry: list[dict] = []
        self.telemetry_source = Telemetry(config.sensors_root)
        self.temp_max_c: Optional[float] = None  # the board's hottest reading at the last telemetry sample
        self.client: Any = None
        self.chunks = ChunkSource(self._request_model)
        self.telemetry_unrecorded = 0  # telemetry batches dropped while the disk was full, not yet counted on disk
        self._complained: dict[str, float] = {}  # what the main loop last logged a failure of, and when
        with contextlib.suppress(OSError, sqlite3.Error):  # left by an older agent or a crash: see cleanup()
            self.cleanup()

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
        client.subscribe([(p.topic(self.device, kind), 1) for kind in (p.JOBS, p.CANCEL, p.MODEL_CHUNK, p.ACKS)])
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if not self.stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting with backoff", reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.outbox.on_puback(mid, reason)
        self.wake.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # paho acknowledges a QoS 1 message after this returns: the job is on disk by then. Nothing may escape
        # from here: an exception would end paho's network thread and leave a board that looks online but
        # never takes a job again.
        try:
            self._handle(message.topic, message.payload)
        except Exception:  # noqa: BLE001 - see above; the message is logged and dropped
            log.exception("message on %s could not be handled", str(message.topic)[:200])

    def _handle(self, topic_name: str, data: bytes) -> None:
        try:
            msg = p.validate(topic_name, data)
        except p.ProtocolError as exc:
            log.error("refused a message on %s: %s", topic_name[:200], exc)
            if topic_name.endswith("/" + p.JOBS):
                self._reject(data, str(exc))
            return
        if msg.kind == p.MODEL_CHUNK:
            self.chunks.offer(msg.payload)
        elif msg.kind == p.JOBS:
            self._receive_job(msg.payload)
        elif msg.kind == p.CANCEL:
            self._cancel(msg.payload["job_id"])
        elif msg.kind == p.ACKS:
            try:
                self.outbox.on_acks(msg.payload)
            except (sqlite3.Error, OSError) as exc:  # a full disk: the rows stay, are published again, acked again
                self._complain("acks", f"the collector's acks could not be applied: {exc}")
            self.wake.set()

    # ------------------------------------------------------------ jobs in

    def _reject(self, data: bytes, reason: str) -> None:
        try:
            job_id = json.loads(data).get("job_id")
        except (ValueError, AttributeError, RecursionError):
            return
        if isinstance(job_id, str) and p.JOB_ID.match(job_id):
            self.event("rejected", job_id, reason=reason[:2000])

    def _receive_job(self, job: dict) -> None:
        try:
            new = self.store.add_job(job["job_id"], json.dumps(job))
        except (sqlite3.Error, OSError) as exc:  # paho acknowledges the job anyway: say that it was not taken
            why = self.space_reason() if is_disk_full(exc) else "the agent's database failed"
            log.error("job %s could not be stored: %s (%s)", job["job_id"], why, exc)
            self.event("rejected", job["job_id"], reason=f"the job could not be stored: {why}"[:2000])
            return
        if not new:
            log.info("job %s seen before: ignored (redelivery)", job["job_id"])
            return
        self.event("accepted", job["job_id"])
        self.job_wake.set()

    def _cancel(self, job_id: str) -> None:
        if self.store.cancel_queued(job_id):
            self.event("cancelled", job_id, reason="cancelled before it started")
        elif job_id in self.running_jobs:
            self.cancel_requested = job_id

    # ------------------------------------------------------------ publishing

    def event(self, kind: str, job_id: str, **fields: Any) -> None:
        msg_id = p.new_msg_id()
        payload = p.encode(p.EVENTS, p.envelope(self.device, time.time(), msg_id=msg_id, event=kind, job_id=job_id,
                                                **fields))
        try:
            self.store.enqueue(p.topic(self.device, p.EVENTS), payload, "event", msg_id)
        except (sqlite3.Error, OSError) as exc:  # a full disk: straight out instead (QoS 1, not kept if lost)
            log.warning("%s event of job %s could not be stored (%s): published without the outbox", kind, job_id,
                        exc)
            if self.connected.is_set():
                self.client.publish(p.topic(self.device, p.EVENTS), payload, qos=1)
            return
        self.wake.set()

    def _publish_outbox(self, topic_name: str, payload: bytes) -> int:
        return self.client.publish(topic_name, payload, qos=1).mid  # paho resends it after a reconnect

    def _publish_now(self, kind: str, payload: dict, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(p.topic(self.device, kind), p.encode(kind, payload), qos=qos, retain=retain)

    def _inventory(self) -> dict:
        from edgebench.agent.engine import provenance

        return p.envelope(self.device, time.time(), labels=self.config.labels, runtimes=available_runtimes(),
                          device_facts=provenance.collect(edgebench_version=__version__),
                          agent_version=__version__)

    def _sample_telemetry(self) -> None:
        readings = self.telemetry_source.read()
        self.temp_max_c = readings.get("temp_max_c")
        if readings:
            self.telemetry.append({"ts": time.time(), "readings": readings})
        if len(self.telemetry) >= 6:
            msg_id = p.new_msg_id()
            payload = p.envelope(self.device, time.time(), msg_id=msg_id, samples=self.telemetry)
            self.telemetry = []
            try:
                self.store.enqueue(p.topic(self.device, p.TELEMETRY), p.encode(p.TELEMETRY, payload), "telemetry",
                                   msg_id)
            except (sqlite3.Error, OSError) as exc:  # a full disk: this batch is dropped, and counted
                self.telemetry_unrecorded += 1
                self._complain("telemetry", f"a telemetry batch was dropped: {exc}")
                return
            if self.telemetry_unrecorded:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self.store.bump("telemetry_dropped", self.telemetry_unrecorded)
                    self.telemetry_unrecorded = 0

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
                outbox_depth=self.store.depth(),
                telemetry_dropped=self.store.counter("telemetry_dropped") + self.telemetry_unrecorded,
                job_id=self.current_job, **self.outbox.counters(),
                **({"temp_max_c": self.temp_max_c} if self.temp_max_c is not None else {})), qos=0)

    # ------------------------------------------------------------ jobs

    def _job_loop(self) -> None:
        while not self.stop.is_set():
            try:
                nxt = self.store.next_job()
            except sqlite3.Error as exc:
                self._complain("jobs", f"cannot read the job table: {exc}")
                self.stop.wait(5.0)
                continue
            if nxt is None:
                self.job_wake.wait(5.0)
                self.job_wake.clear()
                continue
            job_id, spec, attempts = nxt
            group = [job_id]
            try:
                job = p.Job.from_payload(json.loads(spec))
                siblings = self._interleaved_with(job_id, job, attempts)
                group += [member for member, _ in siblings]
                self._run_job(job_id, job, attempts, siblings)
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop the daemon
                self._fail_unfinished(group, exc)

    def _fail_unfinished(self, group: list[str], exc: Exception) -> None:
        """An unexpected error while running a job (``group[0]``) or its interleaved group: the job, and the members
        started with it, fail with it unless already finished. A member already reported keeps its result (it is
        not failed after the fact), and no started member is left 'running', to be run again alone."""
        if is_disk_full(exc):
            log.error("job %s: the disk is full: %s", group[0], exc)
            fields = {"reason": f"{self.space_reason()} (the disk filled up during the job: {exc})"[:2000],
                      "error_kind": "DiskFull"}
        else:
            log.error("job %s failed unexpectedly", group[0], exc_info=exc)
            fields = {"reason": "internal error in the agent (see its log)"}
        for job_id in group:
            try:
                if self.store.job_state(job_id) not in (("queued", "running") if job_id == group[0] else ("running",)):
                    continue
                self._finish(job_id, "failed", "error", **fields)
            except Exception:  # noqa: BLE001 - the job stays unfinished and is tried again
                log.exception("job %s: its end could not be recorded", job_id)
                self.stop.wait(5.0)

    def _finish(self, job_id: str, state: str, kind: str, **fields: Any) -> bool:
        """Record the job's final state and event (one transaction, store.finish_job), then clear its work files.
        A full disk (or any SQLite failure) does not lose it: the job stays unfinished and this is tried again,
        waiting longer each time (up to FINISH_RETRY_MAX_S) and freeing what can be freed, until it is written or
        the agent stops (the job then runs again after the restart). Returns whether it was recorded."""
        msg_id = p.new_msg_id()
        payload = p.encode(p.EVENTS, p.envelope(self.device, time.time(), msg_id=msg_id, event=kind, job_id=job_id,
                                                **fields))
        wait, failing = 0.5, False
        while True:
            try:
                self.store.finish_job(job_id, state, p.topic(self.device, p.EVENTS), payload,
                                      "result" if kind == "result" else "event", msg_id)
                break
            except (sqlite3.Error, OSError) as exc:
                if not failing:  # logged once, not at every try
                    failing = True
                    log.error("job %s: its end (%s) cannot be recorded: %s%s; trying again until it can", job_id,
                              state, exc, f" ({self.space_reason()})" if is_disk_full(exc) else "")
                self._clear_work(job_id, keep_log=True)  # the outcome is in memory now
                with contextlib.suppress(OSError, sqlite3.Error):
                    self.trim_reports()
                if self.stop.wait(wait):
                    log.warning("job %s stays unfinished: it runs again after the restart", job_id)
                    return False
                wait = min(wait * 2, FINISH_RETRY_MAX_S)
        if failing:
            log.info("job %s: its end (%s) is recorded after all", job_id, state)
        self.wake.set()
        self._clear_work(job_id, keep_log=state == "failed")
        return True

    # ------------------------------------------------------------ the disk

    def free_bytes(self) -> Optional[int]:
        """Free space on the data dir's file system, for an unprivileged process; None if it cannot be read."""
        try:
            stat = os.statvfs(self.config.data_dir)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def space_reason(self, free: Optional[int] = None) -> str:
        free = self.free_bytes() if free is None else free
        return (f"not enough free disk space in {self.config.data_dir}: "
                f"{megabytes(free) if free is not None else '?'} MB free, "
                f"{megabytes(self.config.min_free_bytes)} MB needed")

    def _short_of_space(self, job: p.Job) -> Optional[str]:
        """Before a job starts: why there is not enough free space (after a cleanup), or None."""
        need = self.config.min_free_bytes
        free = self.free_bytes()
        if need <= 0 or free is None or free >= need:
            return None
        log.warning("%s: cleaning up", self.space_reason(free))
        keep = {job.model.sha256, job.reference or ""}
        free = self.cleanup(need=need, keep_models=keep)
        if free is None or free >= need:
            return None
        return self.space_reason(free)

    def cleanup(self, need: int = 0, keep_models: Iterable[str] = ()) -> Optional[int]:
        """work/ files of jobs that are over, reports/ under its quota; with ``need``, while the file system has
        less free than that: older reports, then the least recently used cached models (not ``keep_models``).
        Returns the free space after. A step that fails is skipped (the next one may still free something)."""
        def enough() -> bool:
            return (self.free_bytes() or 0) >= need

        with contextlib.suppress(OSError, sqlite3.Error):
            self._sweep_work()
        with contextlib.suppress(OSError):
            self.trim_reports()
        if need and not enough():
            with contextlib.suppress(OSError):
                for path in self._reports_oldest_first():
                    if enough():
                        break
                    path.unlink(missing_ok=True)
                    log.info("deleted report %s: the disk is short of space", path.name)
        if need and not enough():
            with contextlib.suppress(OSError):
                self.cache.shed(enough, keep=set(keep_models))
        return self.free_bytes()

    def _reports(self) -> list[tuple[float, str, Path, int]]:
        """reports/ as (mtime, name, path, size), oldest first."""
        entries = []
        for path in self.reports.iterdir():
            with contextlib.suppress(OSError):  # gone meanwhile
                stat = path.stat()
                entries.append((stat.st_mtime, path.name, path, stat.st_size))
        return sorted(entries)

    def _reports_oldest_first(self) -> list[Path]:
        return [entry[2] for entry in self._reports()]

    def trim_reports(self) -> None:
        """reports/ under --reports-quota and MAX_REPORTS files: the oldest go first."""
        entries = self._reports()
        total, count = sum(e[3] for e in entries), len(entries)
        for _mtime, _name, path, size in entries:
            if total <= self.config.reports_quota_bytes and count <= MAX_REPORTS:
                break
            path.unlink(missing_ok=True)
            total, count = total - size, count - 1

    def _clear_work(self, job_id: str, keep_log: bool) -> None:
        """A finished job's work files go; a failed job keeps the end of its log (FAILED_LOG_TAIL)."""
        for suffix in WORK_SUFFIXES:
            path = self.work / f"{job_id}{suffix}"
            with contextlib.suppress(OSError):
                if suffix == ".log" and keep_log:
                    if path.exists():
                        keep_tail(path)
                else:
                    path.unlink(missing_ok=True)
        if not keep_log:
            return
        with contextlib.suppress(OSError):
            logs = sorted((p for p in self.work.iterdir() if p.name.endswith(".log")),
                          key=lambda p: (p.stat().st_mtime, p.name))
            for path in logs[:-MAX_FAILED_LOGS] if len(logs) > MAX_FAILED_LOGS else []:
                path.unlink(missing_ok=True)

    def _sweep_work(self) -> None:
        """work/ files of jobs that are over (finished by an older agent, or a crash before their cleanup)."""
        states: dict[str, Optional[str]] = {}
        for path in list(self.work.iterdir()):
            job_id = work_job_id(path.name)
            if job_id is None or job_id == self.current_job:
                continue
            if job_id not in states:
                states[job_id] = self.store.job_state(job_id)
            if states[job_id] not in ("queued", "running"):
                self._clear_work(job_id, keep_log=states[job_id] == "failed")

    # ------------------------------------------------------------ jobs

    def _interleaved_with(self, job_id: str, job: p.Job, attempts: int) -> list[tuple[str, p.Job]]:
        """The other jobs of this job's interleave group (``group``, set by the collector: one model's
        configurations on this board), to run in one process with their repeats interleaved. Waits for members
        not received yet (they were published with this one) up to GROUP_WAIT_S, woken by each arrival; members
        cancelled, finished or already tried, and any that do not match this job's model, are left out. A job
        run again after an interruption runs alone."""
        if attempts or len(job.group) < 2:
            return []
        deadline = time.monotonic() + GROUP_WAIT_S
        while True:
            queued = self.store.never_started(job.group)
            missing = [m for m in job.group if m != job_id and m not in queued and self.store.job_state(m) is None]
            if not missing or time.monotonic() >= deadline or self.stop.is_set():
                break
            self.job_wake.wait(max(0.0, deadline - time.monotonic()))
            self.job_wake.clear()
        siblings = []
        for member in job.group:
            if member != job_id and member in queued:
                other = p.Job.from_payload(json.loads(queued[member]))
                if (other.model.sha256, other.reference, other.repeats) == (job.model.sha256, job.reference,
                                                                             job.repeats):
                    siblings.append((member, other))
        siblings = siblings[:p.MAX_JOB_GROUP - 1]
        if len(siblings) < len(job.group) - 1:
            left = sorted(set(job.group) - {job_id} - {member for member, _ in siblings})
            log.warning("job %s: runs without %d of its interleave group (%s): not received in %.0f s, already "
                        "started or finished, or not for the same model", job_id, len(left), ", ".join(left),
                        GROUP_WAIT_S)
        return siblings

    def _run_job(self, job_id: str, job: p.Job, attempts: int,
                 siblings: Sequence[tuple[str, p.Job]] = ()) -> None:
        if attempts >= MAX_ATTEMPTS:
            self._finish(job_id, "failed", "error", reason=f"the agent stopped during this job {attempts} times")
            return
        if attempts:
            kill_leftover(self.store.job_pid(job_id))
        shortage = self._short_of_space(job)
        if shortage:
            log.error("job %s not started: %s", job_id, shortage)
            self._finish(job_id, "failed", "error", reason=shortage, error_kind="DiskFull")
            return
        group = [(job_id, job), *siblings]
        for member, _ in group:
            self.store.start_job(member)
        self.current_job, self.cancel_requested = job_id, None
        self.running_jobs = {member for member, _ in group}
        try:
            try:
                path = self._model(job.model.sha256, job.model.size_bytes, job.model.url or self._fallback_url(
                    job.model.sha256))
            except EdgebenchError as exc:
                for member, _ in group:
                    self._finish(member, "failed", "error", reason=str(exc), error_kind="ModelError")
                return
            self._execute(group, path, self._reference(job))
        finally:
            self.current_job, self.running_jobs = None, set()

    def _fallback_url(self, sha256: str) -> Optional[str]:
        """Where a model the job gives no URL for is fetched over HTTP: the agent's --model-url (else over MQTT)."""
        return f"{self.config.model_url.rstrip('/')}/api/v1/models/{sha256}/content" if self.config.model_url else None

    def _reference(self, job: p.Job) -> Optional[Reference]:
        """The job's reference model (drift is measured against it), through the same content-addressed cache, from
        the URL the collector gave (or the agent's --model-url, or over MQTT): its path, or why it could not be had
        (the benchmark still runs; the result says why it has no drift)."""
        if not job.reference:
            return None
        url = job.reference_url or self._fallback_url(job.reference)
        if url is None and self.config.model_transport == "http":
            return Reference(error="reference model: no download URL (the job names none, and no --model-url)")
        try:  # without a URL, over MQTT (the collector serves its registry's models there too)
            return Reference(path=self._model(job.reference, None, url))
        except (EdgebenchError, ValueError) as exc:
            return Reference(error=f"reference model: {exc}")

    def _execute(self, group: Sequence[tuple[str, p.Job]], model_path: Path,
                 reference: Optional[Reference] = None) -> None:
        """Run the job's process (one job, or an interleaved group of one model's jobs) through the engine's child
        supervisor: progress relayed, each result reported, its process group killed on a cancel, a shutdown or
        the timeout."""
        from edgebench.agent.engine.isolation import ChildLimits, ChildStopped, run_child

        first = group[0][0]
        job_file = self.work / f"{first}.job.json"
        for _, job in group:
            job.timeout_s = job.timeout_s or self.config.default_timeout_s
        job_file.write_text(json.dumps({"jobs": [job.to_payload(time.time()) for _, job in group],
                                        "history_dir": str(self.config.data_dir / "history"),
                                        "sensors_root": self.config.sensors_root}))
        # The engine kills its benchmark process at timeout_s and says in which phase; the agent's own deadline,
        # a little later, is the backstop for a job process that hangs outside the benchmark.
        timeout = sum(float(job.timeout_s) for _, job in group) + JOB_GRACE_S
        extra = [str(reference.path)] if reference and reference.path else []
        try:
            outcome = run_child(
                lambda fd: [sys.executable, "-m", "edgebench.agent.fleet.jobrunner", str(job_file), str(model_path),
                            str(fd), *extra],
                ChildLimits(timeout_s=timeout, rss_interval_s=None),
                progress=lambda phase, runs, elapsed: [self._progress(member, phase, runs, elapsed)
                                                       for member, _ in group],  # each job of the group is running
                log_path=self.work / f"{first}.log",  # the engine's own output, for post-mortems
                stop_when=self._stop_reason,
                on_start=lambda pid: [self._record_pid(member, pid) for member, _ in group],
                new_session=True)  # a cancel kills the job process and the benchmark it started
        except ChildStopped as stopped:
            if stopped.why is Stop.CANCELLED:
                for member, _ in group:  # the cancelled job ends; the others of its group run again
                    if member == self.cancel_requested:
                        self._finish(member, "cancelled", "cancelled", reason=Stop.CANCELLED.value)
                    else:
                        self.store.requeue(member)
            return  # shutting down: the jobs stay 'running' and run again after a restart
        except EdgebenchError as exc:
            for member, _ in group:
                self._fail(member, exc)
            return
        jobs = dict(group)
        drift = {"error": reference.error[:2000], "reference_sha": group[0][1].reference} \
            if reference and reference.error else None
        for entry in outcome.result["group"]:
            if "error" in entry:
                self._finish(entry["job_id"], "failed", "error", reason=entry["error"][:2000],
                             error_kind=entry.get("kind"))
            else:
                try:
                    self._report(entry["job_id"], jobs[entry["job_id"]], entry, drift)
                except Exception as exc:  # noqa: BLE001 - one member's result must not cost the others theirs
                    log.error("job %s: its result could not be reported", entry["job_id"], exc_info=exc)
                    self._finish(entry["job_id"], "failed", "error",
                                 reason=f"the result could not be reported: {type(exc).__name__}: {exc}"[:2000])

    def _stop_reason(self) -> Optional[Stop]:
        return Stop.SHUTDOWN if self.stop.is_set() else \
            Stop.CANCELLED if self.cancel_requested in self.running_jobs else None

    def _record_pid(self, job_id: str, pid: int) -> None:
        try:
            self.store.set_pid(job_id, pid)
        except (sqlite3.Error, OSError) as exc:  # only for killing an orphan after a crash: run on without it
            log.warning("job %s: its process id could not be recorded: %s", job_id, exc)

    def _fail(self, job_id: str, exc: EdgebenchError) -> None:
        """The job's process reported an error, died or timed out; a disk that is full says so instead."""
        free = self.free_bytes()
        if free is not None and free < self.config.min_free_bytes:
            reason = f"{self.space_reason(free)} (the job could not finish: {str(exc)[:500]})"
            log.error("job %s: %s", job_id, reason)
            self._finish(job_id, "failed", "error", error_kind="DiskFull", reason=reason)
            return
        self._finish(job_id, "failed", "error", reason=str(exc)[:2000], error_kind=type(exc).__name__)

    def _progress(self, job_id: str, phase: str, runs: int, elapsed_s: float) -> None:
        if not self.connected.is_set():
            return  # progress is ephemeral: QoS 0, straight out, never queued
        with contextlib.suppress(p.ProtocolError):
            self._publish_now(p.EVENTS, p.envelope(self.device, time.time(), event="progress", job_id=job_id,
                                                   phase=phase, runs=runs, elapsed_s=elapsed_s), qos=0)

    def _report(self, job_id: str, job: p.Job, outcome: dict, drift: Optional[dict] = None) -> None:
        report = outcome["report"]
        labels = job.labels  # e.g. release=v1.5.0 from `edgebench push --label`
        report["labels"] = {**(report.get("labels") or {}), **labels}
        drift = drift or outcome.get("drift")
        if drift is not None:
            try:
                p.check_drift(drift)
            except p.ProtocolError as exc:
                drift = {"error": f"drift: {exc}", "reference_sha": job.reference}
            report["drift"] = drift
        self._keep_report(job_id, report)
        summary = p.summarize_report(report)
        summary["model"]["name"] = job.model.name or summary["model"].get("name")  # not the cache name
        for section, check in (("placement", p.check_placement), ("ops", p.check_ops),
                               ("generation", p.check_generation)):
            try:  # a runtime's odd name (a control character in an op type) must not cost the whole result
                if section in summary:
                    check(summary[section], f"summary.{section}")
            except p.ProtocolError as exc:
                log.warning("job %s: its result goes without its %s (%s)", job_id, section, exc)
                del summary[section]
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

    def _keep_report(self, job_id: str, report: dict) -> None:
        """The full report in reports/, within --reports-quota. It is the board's own copy (the result event
        carries the summary and the samples): one that cannot be written (a full disk) is left out and the result
        still goes out."""
        data = json.dumps(report).encode()
        path = self.reports / f"{job_id}.json"
        if len(data) <= self.config.reports_quota_bytes:
            try:
                path.write_bytes(data)
            except OSError as exc:
                path.unlink(missing_ok=True)
                log.warning("job %s: its full report was not kept: %s", job_id, exc)
        with contextlib.suppress(OSError):
            self.trim_reports()

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        from edgebench.agent.fleet import mqtt

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
        """Telemetry, heartbeats, the outbox. Nothing here may end the loop: a step that fails (a full disk:
        SQLite's "database or disk is full") is logged and skipped; heartbeats (QoS 0, no disk) go on. The outbox
        waits after a failure, longer each time (1 s doubling to 30 s), so rows it could not mark as published are
        not published again at once."""
        next_heartbeat = next_sample = next_flush = time.monotonic()
        flush_wait = 1.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + self.config.telemetry_s
                self._guarded("telemetry", self._sample_telemetry)
            if now >= next_heartbeat:
                next_heartbeat = now + self.config.heartbeat_s
                self._guarded("heartbeat", self._heartbeat)
            deadline = min(next_sample, next_heartbeat)
            if now >= next_flush:
                if self._guarded("outbox", self.outbox.flush, self.connected.is_set()):
                    flush_wait = 1.0
                else:
                    next_flush, flush_wait = now + flush_wait, min(flush_wait * 2, 30.0)
            if next_flush > now:
                deadline = min(deadline, next_flush)
            self.wake.wait(max(0.05, deadline - time.monotonic()))
            self.wake.clear()

    def _guarded(self, what: str, step: Callable[..., Any], *args: Any) -> bool:
        try:
            step(*args)
            return True
        except Exception as exc:  # noqa: BLE001 - the main loop must outlive a full disk and anything else
            self._complain(what, f"{what} failed: {exc}" + (f" ({self.space_reason()})" if is_disk_full(exc) else ""),
                           exc_info=not isinstance(exc, (sqlite3.Error, OSError)))
            return False

    def _complain(self, what: str, message: str, exc_info: bool = False) -> None:
        """Log a recurring failure once a minute at most."""
        now = time.monotonic()
        if now - self._complained.get(what, -1e9) >= 60.0:
            self._complained[what] = now
            log.error("%s", message, exc_info=exc_info)

    def _shutdown(self) -> None:
        """A clean stop says offline itself (the last will is only for deaths) and drains what it can."""
        deadline = time.monotonic() + 3.0
        while self.connected.is_set() and self.store.depth() - len(self.outbox.refused) > 0 \
                and time.monotonic() < deadline:
            if not self._guarded("outbox", self.outbox.flush, True):
                break
            time.sleep(0.05)
        if self.connected.is_set():
            info = self.client.publish(p.topic(self.device, p.STATUS), p.encode(p.STATUS, p.envelope(
                self.device, time.time(), state="offline", agent_version=__version__, labels=self.config.labels)),
                qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
