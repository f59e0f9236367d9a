"""The agent's on-disk state (SQLite, WAL): the outbox and the job table.

Outbox: every result, job event and telemetry batch is written here before it is published, and deleted only when
the broker acknowledged it (PUBACK), so a broker outage or an agent restart loses no result. It is bounded:
telemetry is dropped oldest-first beyond ``max_telemetry`` rows (counted), results and events never.

Jobs: one row per job id, so a QoS 1 redelivery or a job sent twice runs once. A job's result event and its
``done`` state are written in the same transaction: a job either has its result queued or will run (again).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,          -- result | event | telemetry
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,         -- queued | running | done | failed | cancelled
    received REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,                 -- the job process, to clean up after an agent that was killed
    finished REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class AgentStore:
    def __init__(self, path: Path, max_telemetry: int = 2000):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_telemetry = max_telemetry
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a result acknowledged to the job must survive power loss
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ outbox

    def enqueue(self, topic: str, payload: bytes, kind: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO outbox (topic, payload, kind, created) VALUES (?, ?, ?, ?)",
                                   (topic, payload, kind, time.time()))
            if kind == "telemetry":
                self._trim_telemetry()
            return int(cur.lastrowid)

    def _trim_telemetry(self) -> None:
        count = self._db.execute("SELECT COUNT(*) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        excess = count - self.max_telemetry
        if excess > 0:  # under pressure telemetry goes first, oldest first; results and events never
            self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind='telemetry' "
                             "ORDER BY id LIMIT ?)", (excess,))
            self._bump("telemetry_dropped", excess)

    def pending(self, exclude: set, limit: int) -> list[tuple[int, str, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?",
                                    (limit + len(exclude),)).fetchall()
        return [(row[0], row[1], bytes(row[2])) for row in rows if row[0] not in exclude][:limit]

    def acknowledged(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    # ------------------------------------------------------------ counters

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    # ------------------------------------------------------------ jobs

    def add_job(self, job_id: str, spec: str) -> bool:
        """Record a received job; False if this job id was seen before (a redelivery or a duplicate)."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO jobs (job_id, spec, state, received) "
                                   "VALUES (?, ?, 'queued', ?)", (job_id, spec, time.time()))
            return cur.rowcount == 1

    def next_job(self) -> Optional[tuple[str, str, int]]:
        """The oldest job not finished (a job left 'running' by a killed agent runs again)."""
        with self._lock:
            row = self._db.execute("SELECT job_id, spec, attempts FROM jobs WHERE state IN ('queued', 'running') "
                                   "ORDER BY received, rowid LIMIT 1").fetchone()
        return (row[0], row[1], row[2]) if row else None

    def start_job(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='running', attempts = attempts + 1 WHERE job_id = ?", (job_id,))

    def set_pid(self, job_id: str, pid: Optional[int]) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (pid, job_id))

    def job_pid(self, job_id: str) -> Optional[int]:
        with self._lock:
            row = self._db.execute("SELECT pid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def job_state(self, job_id: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def finish_job(self, job_id: str, state: str, topic: str, payload: bytes, kind: str) -> None:
        """The job's final state and its final event (result or error) in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE jobs SET state = ?, finished = ? WHERE job_id = ?",
                                 (state, time.time(), job_id))
                self._db.execute("INSERT INTO outbox (topic, payload, kind, created) VALUES (?, ?, ?, ?)",
                                 (topic, payload, kind, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def cancel_queued(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE job_id=? AND state='queued'",
                                   (time.time(), job_id))
            return cur.rowcount == 1
