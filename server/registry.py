"""The collector's embedded store (SQLite, WAL): devices, models, jobs, results and dead letters.

Every update is idempotent (upserts keyed by device id, sha256, job id), so a redelivered MQTT message applied
twice leaves the same state.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seen REAL NOT NULL, labels TEXT NOT NULL DEFAULT '{}',
    inventory TEXT, agent_version TEXT, heartbeat TEXT
);
CREATE TABLE IF NOT EXISTS models (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, size_bytes INTEGER NOT NULL, format TEXT NOT NULL,
    uploaded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, device_id TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    spec TEXT NOT NULL, state TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0, reason TEXT,
    progress TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, summary TEXT NOT NULL, received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    msg_id TEXT PRIMARY KEY, device_id TEXT, stored REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    size_bytes INTEGER NOT NULL, received REAL NOT NULL
);
"""
FINAL_STATES = ("done", "failed", "cancelled", "rejected")
DELIVERED_KEEP_S = 14 * 86400  # msg ids remembered this long (an agent publishes again for at most its backoff)
EVENT_STATE = {"accepted": "accepted", "progress": "running", "result": "done", "error": "failed",
               "cancelled": "cancelled", "rejected": "rejected"}


class Registry:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(results)")}
        for column, kind in (("labels", "TEXT"), ("samples", "TEXT"), ("finished", "REAL"), ("drift", "TEXT")):
            if column not in columns:  # a registry made by an older collector
                self._db.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ devices

    def device_status(self, device: str, state: str, labels: Optional[dict], version: Optional[str]) -> None:
        self._exec("INSERT INTO devices (device_id, state, last_seen, labels, agent_version) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(device_id) DO UPDATE SET state=excluded.state, last_seen=excluded.last_seen, "
                   "labels=COALESCE(?, labels), agent_version=COALESCE(excluded.agent_version, agent_version)",
                   (device, state, time.time(), json.dumps(labels or {}), version,
                    json.dumps(labels) if labels is not None else None))

    def device_inventory(self, device: str, inventory: dict) -> None:
        self._exec("INSERT INTO devices (device_id, state, last_seen, labels, inventory) "
                   "VALUES (?, 'unknown', ?, ?, ?) "
                   "ON CONFLICT(device_id) DO UPDATE SET labels=excluded.labels, inventory=excluded.inventory",
                   (device, time.time(), json.dumps(inventory["labels"]), json.dumps(inventory)))

    def device_seen(self, device: str, heartbeat: Optional[dict] = None) -> None:
        self._exec("INSERT INTO devices (device_id, state, last_seen, heartbeat) VALUES (?, 'online', ?, ?) "
                   "ON CONFLICT(device_id) DO UPDATE SET last_seen=excluded.last_seen, "
                   "heartbeat=COALESCE(excluded.heartbeat, heartbeat)",
                   (device, time.time(), json.dumps(heartbeat) if heartbeat else None))

    def devices(self) -> list[dict]:
        rows = self._all("SELECT * FROM devices ORDER BY device_id")
        for row in rows:
            row["labels"] = json.loads(row["labels"] or "{}")
            row["inventory"] = json.loads(row["inventory"]) if row["inventory"] else None
            row["heartbeat"] = json.loads(row["heartbeat"]) if row["heartbeat"] else None
        return rows

    def device_state(self, device: str) -> Optional[str]:
        rows = self._all("SELECT state FROM devices WHERE device_id = ?", (device,))
        return rows[0]["state"] if rows else None

    def labels(self, device: str) -> dict:
        rows = self._all("SELECT labels FROM devices WHERE device_id = ?", (device,))
        return json.loads(rows[0]["labels"]) if rows else {}

    # ------------------------------------------------------------ models

    def add_model(self, sha256: str, name: str, size: int, fmt: str) -> dict:
        self._exec("INSERT INTO models (sha256, name, size_bytes, format, uploaded) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(sha256) DO UPDATE SET name=excluded.name", (sha256, name, size, fmt, time.time()))
        return self.model(sha256)

    def model(self, sha256: str) -> Optional[dict]:
        rows = self._all("SELECT * FROM models WHERE sha256 = ?", (sha256,))
        return rows[0] if rows else None

    def models(self) -> list[dict]:
        return self._all("SELECT * FROM models ORDER BY uploaded")

    # ------------------------------------------------------------ jobs

    def add_jobs(self, jobs: list[dict], batch_id: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            for job in jobs:
                self._db.execute("INSERT INTO jobs (job_id, batch_id, device_id, model_sha256, spec, state, created, "
                                 "updated) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                                 (job["job_id"], batch_id, job["device"], job["model"]["sha256"], json.dumps(job),
                                  now, now))
            self._db.execute("COMMIT")

    def unsent_jobs(self) -> list[dict]:
        return [json.loads(row["spec"]) for row in self._all("SELECT spec FROM jobs WHERE sent = 0 ORDER BY created")]

    def job_sent(self, job_id: str) -> None:
        self._exec("UPDATE jobs SET sent = 1 WHERE job_id = ?", (job_id,))

    def job_event(self, device: str, payload: dict, labels: Optional[dict] = None) -> None:
        """Move a job along from one of its device's events; a final state is never left. A result is kept with
        its raw latency samples and ``labels`` (the device's plus the job's, e.g. release=v1.5.0)."""
        kind, job_id = payload["event"], payload["job_id"]
        state = EVENT_STATE[kind]
        progress = json.dumps({k: payload[k] for k in ("phase", "runs", "elapsed_s")}) if kind == "progress" else None
        self._exec(f"UPDATE jobs SET state=?, reason=COALESCE(?, reason), progress=COALESCE(?, progress), updated=? "
                   f"WHERE job_id=? AND device_id=? AND state NOT IN {FINAL_STATES}",
                   (state, payload.get("reason"), progress, time.time(), job_id, device))
        if kind == "result":
            samples = (payload.get("samples") or {}).get("latency_ns")
            drift = payload.get("drift")
            self._exec("INSERT OR IGNORE INTO results (job_id, device_id, summary, received, labels, samples, "
                       "finished, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, device, json.dumps(payload["summary"]), time.time(), json.dumps(labels or {}),
                        json.dumps(samples) if samples is not None else None,
                        payload.get("finished_ts") or payload["ts"], json.dumps(drift) if drift else None))

    def job_device(self, job_id: str) -> Optional[str]:
        """The device a job was sent to (None: not a job of this registry)."""
        rows = self._all("SELECT device_id FROM jobs WHERE job_id = ?", (job_id,))
        return rows[0]["device_id"] if rows else None

    def jobs(self, batch_id: Optional[str] = None, job_id: Optional[str] = None, limit: int = 1000) -> list[dict]:
        where, args = [], []
        if batch_id:
            where.append("batch_id = ?")
            args.append(batch_id)
        if job_id:
            where.append("job_id = ?")
            args.append(job_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(f"SELECT * FROM jobs {clause} ORDER BY created DESC, job_id LIMIT ?", (*args, limit))
        for row in rows:
            row["spec"] = json.loads(row["spec"])
            row["progress"] = json.loads(row["progress"]) if row["progress"] else None
        return rows

    def results(self, batch_id: Optional[str] = None, samples: bool = False, latest: int = 0) -> list[dict]:
        """Result summaries with their labels (oldest first); ``samples`` adds the raw latency samples
        (``latency_ns``); ``latest`` (N > 0) keeps only the N newest results of each configuration: device x model x
        runtime x the delegate chain asked for x what ran x threads x labels. Every release gate filter and group is
        constant within such a configuration, so with N at least the runs a gate compares (gates.MAX_RUNS), gates
        see exactly what they would see in the full list."""
        latest = int(latest)  # True (the newest only) is 1
        if samples and latest:  # reduce first: the samples of the results kept only
            rows = self.results(batch_id, samples=False, latest=latest)
            for row in rows:
                stored = self._all("SELECT samples FROM results WHERE job_id = ?", (row["job_id"],))
                row["latency_ns"] = json.loads(stored[0]["samples"] or "[]") if stored else []
            return rows
        sql = ("SELECT r.job_id, r.device_id, r.summary, r.received, r.labels, r.finished, r.drift, j.batch_id"
               + (", r.samples" if samples else "") + " FROM results r LEFT JOIN jobs j ON j.job_id = r.job_id")
        rows = self._all(sql + (" WHERE j.batch_id = ?" if batch_id else "") + " ORDER BY r.received",
                         (batch_id,) if batch_id else ())
        for row in rows:
            row["summary"] = json.loads(row["summary"])
            row["labels"] = json.loads(row["labels"] or "{}")
            row["finished"] = row["finished"] or row["received"]
            row["drift"] = json.loads(row["drift"]) if row["drift"] else None
            if samples:
                row["latency_ns"] = json.loads(row.pop("samples") or "[]")
        if latest:
            groups: dict[str, list[dict]] = {}
            for row in rows:
                runtime = row["summary"].get("runtime") or {}
                key = json.dumps([row["device_id"], row["summary"]["model"].get("name"), runtime.get("runtime"),
                                  runtime.get("requested"), runtime.get("used"), runtime.get("threads"),
                                  sorted(row["labels"].items())], default=str)
                groups.setdefault(key, []).append(row)
            # newest first within a configuration (a later receipt wins a tie, as one sent again would)
            kept = [row for group in groups.values()
                    for row in sorted(group, key=lambda row: (row["finished"], row["received"]), reverse=True)[:latest]]
            rows = sorted(kept, key=lambda row: (row["finished"], row["received"]))
        return rows

    # ------------------------------------------------------------ delivered outbox messages (dedup by msg_id)

    def record_delivered(self, entries: list[tuple[str, Optional[str]]]) -> None:
        """Remember the msg ids of messages now stored (``(msg_id, device)``); forget those older than
        DELIVERED_KEEP_S now and then."""
        if not entries:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO delivered (msg_id, device_id, stored) VALUES (?, ?, ?)",
                                 [(msg_id, device, now) for msg_id, device in entries])
            if now - getattr(self, "_pruned", 0.0) > 3600:
                self._db.execute("DELETE FROM delivered WHERE stored < ?", (now - DELIVERED_KEEP_S,))
                self._pruned = now
            self._db.execute("COMMIT")

    def delivered(self, msg_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM delivered WHERE msg_id = ?", (msg_id,)).fetchone() is not None

    # ------------------------------------------------------------ dead letters

    def dead_letter(self, topic: str, reason: str, payload: bytes) -> None:
        self._exec("INSERT INTO dead_letters (topic, reason, payload, size_bytes, received) VALUES (?, ?, ?, ?, ?)",
                   (topic[:512], reason[:1000], payload[:4096], len(payload), time.time()))

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all("SELECT id, topic, reason, size_bytes, received, payload FROM dead_letters "
                         "ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row["payload"] = bytes(row["payload"]).decode("utf-8", "replace")
        return rows
