"""The collector's registry: devices, models, jobs, results, delivered msg ids, dead letters, API tokens, secrets.

Every rule is here, written once: the SQL (``?`` placeholders, the dialect SQLite and PostgreSQL share), the
migrations, how rows and their JSON columns are decoded, the job state rules. Where the tables live is a backend
(``server/registry_backends/``): a SQLite file per collector (the default), or one PostgreSQL database that several
collectors share (``edgebench server --registry postgresql://...``); a backend only runs this SQL in its dialect.

Every update is idempotent (upserts keyed by device id, sha256, job id, msg id), so a redelivered MQTT message
applied twice, by one collector or by two, leaves the same state; a job's final state is never left, whichever
collector applies which of its events in which order (one UPDATE, its condition checked by the database).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from edgebench.server.registry_backends import RegistryError, Store, Tx, open_store
from edgebench.server.registry_backends.sqlite import SqliteStore

FINAL_STATES = ("done", "failed", "cancelled", "rejected")
DELIVERED_KEEP_S = 14 * 86400  # msg ids remembered this long (an agent publishes again for at most its backoff)
IN_CHUNK = 500  # keys per ``IN (...)`` query (SQLite allows 32766 parameters, PostgreSQL 65535)
VERDICT_COLUMNS = ("rule", "model", "board_class", "config", "status", "value", "message")  # gate_verdicts
EVENT_STATE = {"accepted": "accepted", "progress": "running", "result": "done", "error": "failed",
               "cancelled": "cancelled", "rejected": "rejected"}


# ---------------------------------------------------------------- migrations

@dataclass(frozen=True)
class Migration:
    """One step of the schema. ``sql``: statements separated by ``;``, column types as ``{REAL}``, ``{BLOB}``,
    ``{SERIAL}`` (each backend's ``TYPES``); ``add_columns``: (table, ((column, type), ...)), each added unless the
    table has it already (registries made before versioning added these as they went)."""

    version: int
    name: str
    sql: str = ""
    add_columns: tuple = ()


# Applied in order, each once, at start, in one transaction under the backend's schema lock; ``schema_version``
# lists those applied. Never edit a released step: add one. Steps 1-3 are written to adopt a registry made before
# versioning (CREATE ... IF NOT EXISTS, columns added only where missing): that is what such a registry has.
MIGRATIONS = (
    Migration(1, "devices, models, jobs, results, delivered, dead letters", """
        CREATE TABLE IF NOT EXISTS devices (
            device_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seen {REAL} NOT NULL,
            labels TEXT NOT NULL DEFAULT '{{}}', inventory TEXT, agent_version TEXT, heartbeat TEXT);
        CREATE TABLE IF NOT EXISTS models (
            sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, size_bytes BIGINT NOT NULL, format TEXT NOT NULL,
            uploaded {REAL} NOT NULL);
        CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, device_id TEXT NOT NULL, model_sha256 TEXT NOT NULL,
            spec TEXT NOT NULL, state TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0, reason TEXT, progress TEXT,
            created {REAL} NOT NULL, updated {REAL} NOT NULL);
        CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id);
        CREATE TABLE IF NOT EXISTS results (
            job_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, summary TEXT NOT NULL, received {REAL} NOT NULL);
        CREATE TABLE IF NOT EXISTS delivered (msg_id TEXT PRIMARY KEY, device_id TEXT, stored {REAL} NOT NULL);
        CREATE TABLE IF NOT EXISTS dead_letters (
            id {SERIAL}, topic TEXT NOT NULL, reason TEXT NOT NULL, payload {BLOB} NOT NULL,
            size_bytes BIGINT NOT NULL, received {REAL} NOT NULL)"""),
    Migration(2, "results: labels, samples, finished, drift",
              add_columns=("results", (("labels", "TEXT"), ("samples", "TEXT"), ("finished", "{REAL}"),
                                       ("drift", "TEXT")))),
    Migration(3, "API tokens and shared secrets", """
        CREATE TABLE IF NOT EXISTS tokens (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created {REAL} NOT NULL,
            last_used {REAL}, revoked {REAL});
        CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)"""),
    Migration(4, "delivered: an index on stored (the hourly prune)",
              "CREATE INDEX IF NOT EXISTS delivered_stored ON delivered (stored)"),
    Migration(5, "gate verdicts (the collector page's gate history)", """
        CREATE TABLE IF NOT EXISTS gate_verdicts (
            id {SERIAL}, recorded {REAL} NOT NULL, rule TEXT NOT NULL, model TEXT NOT NULL,
            board_class TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL, value {REAL},
            message TEXT NOT NULL)"""),
)
SCHEMA_VERSION = max(m.version for m in MIGRATIONS)


def migrate(store: Store) -> list[int]:
    """Bring the store's schema up to SCHEMA_VERSION; returns the versions applied now (none: it was)."""
    with store.migration() as tx:
        tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied {REAL} NOT NULL)".format(**store.TYPES))
        done = {row["version"] for row in tx.rows("SELECT version FROM schema_version")}
        if max(done, default=0) > SCHEMA_VERSION:
            raise RegistryError(f"registry {store!r}: its schema is version {max(done)}, newer than this "
                                f"collector's ({SCHEMA_VERSION}): upgrade edgebench")
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            _apply(store, tx, migration)
            tx.run("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                   (migration.version, migration.name, time.time()))
            applied.append(migration.version)
        return applied


def _apply(store: Store, tx: Tx, migration: Migration) -> None:
    for statement in migration.sql.format(**store.TYPES).split(";"):
        if statement.strip():
            tx.run(statement)
    if migration.add_columns:
        table, columns = migration.add_columns
        present = {row["name"] for row in tx.rows(store.COLUMNS_SQL, (table,))}
        for column, kind in columns:
            if column not in present:
                tx.run(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**store.TYPES)}")


def open_registry(spec: Optional[str], data_dir: Path) -> Registry:
    """The registry ``--registry`` names: ``None``/``""``: DATA_DIR/registry.sqlite3; a file: SQLite there;
    ``postgresql://...``: that database, shared by every collector given it."""
    return Registry(open_store(spec, data_dir))


class Registry:
    def __init__(self, store: Union[Store, Path, str]):
        """``store``: a backend's store, or the path of a SQLite file."""
        self._store: Any = SqliteStore(Path(store)) if isinstance(store, (str, Path)) else store
        try:
            self.migrated = migrate(self._store)
        except BaseException:
            self._store.close()
            raise

    @property
    def backend(self) -> str:
        return self._store.name

    def __repr__(self) -> str:
        return repr(self._store)  # the database, without a password

    def _exec(self, sql: str, args: tuple = ()) -> int:
        """One statement in a transaction of its own; the rows it changed."""
        return self._store.run(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[dict]:
        return self._store.rows(sql, args)

    def close(self) -> None:
        self._store.close()

    # ------------------------------------------------------------ devices

    _STATUS_SQL = ("INSERT INTO devices (device_id, state, last_seen, labels, agent_version) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(device_id) DO UPDATE SET state=excluded.state, last_seen=excluded.last_seen, "
                   "labels=COALESCE(?, devices.labels), "
                   "agent_version=COALESCE(excluded.agent_version, devices.agent_version)")
    _INVENTORY_SQL = ("INSERT INTO devices (device_id, state, last_seen, labels, inventory) "
                      "VALUES (?, 'unknown', ?, ?, ?) "
                      "ON CONFLICT(device_id) DO UPDATE SET labels=excluded.labels, inventory=excluded.inventory")
    _SEEN_SQL = ("INSERT INTO devices (device_id, state, last_seen, heartbeat) VALUES (?, 'online', ?, ?) "
                 "ON CONFLICT(device_id) DO UPDATE SET last_seen=excluded.last_seen, "
                 "heartbeat=COALESCE(excluded.heartbeat, devices.heartbeat)")

    def device_status(self, device: str, state: str, labels: Optional[dict], version: Optional[str]) -> None:
        self.device_changes(statuses=[(device, state, labels, version)])

    def device_inventory(self, device: str, inventory: dict) -> None:
        self.device_changes(inventories=[(device, inventory)])

    def device_seen(self, device: str, heartbeat: Optional[dict] = None) -> None:
        self.devices_seen({device: heartbeat})

    def device_changes(self, statuses: Sequence[tuple] = (), inventories: Sequence[tuple] = ()) -> None:
        """Devices' ``status`` (device, state, labels, agent version) and ``inventory`` (device, inventory) messages,
        in one transaction, a device's in the order given. Rows are updated in device id order: every transaction
        of the registry that updates several devices does (``devices_seen``, ``record_stored``), so two collectors
        never wait for each other in a cycle (collectors all receive every status and inventory)."""
        now = time.time()
        changes = [(device, 0, n, self._STATUS_SQL, (device, state, now, json.dumps(labels or {}), version,
                                                     json.dumps(labels) if labels is not None else None))
                   for n, (device, state, labels, version) in enumerate(statuses)]
        changes += [(device, 1, n, self._INVENTORY_SQL,
                     (device, now, json.dumps(inventory["labels"]), json.dumps(inventory)))
                    for n, (device, inventory) in enumerate(inventories)]
        if not changes:
            return
        with self._store.transaction() as tx:
            for _, _, _, sql, args in sorted(changes, key=lambda change: change[:3]):
                tx.run(sql, args)

    def devices_seen(self, seen: dict[str, Optional[dict]]) -> None:
        """Devices heard from now, each with its newest heartbeat (None: keep the last one): one transaction, a
        batch of heartbeats committed (and SQLite's WAL synced) once instead of once each."""
        if not seen:
            return
        with self._store.transaction() as tx:
            self._seen(tx, seen)

    def _seen(self, tx: Tx, seen: dict[str, Optional[dict]]) -> None:
        now = time.time()
        tx.run_many(self._SEEN_SQL, [(device, now, json.dumps(heartbeat) if heartbeat else None)
                                     for device, heartbeat in sorted(seen.items())])

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
        return self.labels_of([device]).get(device, {})

    def labels_of(self, devices: Iterable[str]) -> dict[str, dict]:
        """The labels of those of ``devices`` the registry knows."""
        return {row["device_id"]: json.loads(row["labels"])
                for row in self._where_in("SELECT device_id, labels FROM devices WHERE device_id IN ({})", devices)}

    def _where_in(self, sql: str, keys: Iterable[str]) -> list[dict]:
        """``sql`` (with ``IN ({})``) for the distinct ``keys``, IN_CHUNK of them a query."""
        keys = sorted(set(keys))
        rows: list[dict] = []
        for start in range(0, len(keys), IN_CHUNK):
            part = tuple(keys[start:start + IN_CHUNK])
            rows += self._all(sql.format(", ".join("?" * len(part))), part)
        return rows

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
        with self._store.transaction() as tx:
            tx.run_many("INSERT INTO jobs (job_id, batch_id, device_id, model_sha256, spec, state, created, updated) "
                        "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                        [(job["job_id"], batch_id, job["device"], job["model"]["sha256"], json.dumps(job), now, now)
                         for job in jobs])

    def unsent_jobs(self) -> list[dict]:
        return [json.loads(row["spec"]) for row in self._all("SELECT spec FROM jobs WHERE sent = 0 ORDER BY created")]

    def job_sent(self, job_id: str) -> None:
        self._exec("UPDATE jobs SET sent = 1 WHERE job_id = ?", (job_id,))

    def job_event(self, device: str, payload: dict, labels: Optional[dict] = None) -> None:
        """Move a job along from one of its device's events (``record_stored`` for one event)."""
        self.record_stored([(device, payload, labels)], [], seen=False)

    def record_stored(self, events: Sequence[tuple], delivered: Sequence[tuple[str, Optional[str]]],
                      seen: bool = True) -> None:
        """What a batch whose points are now in InfluxDB changes, in one transaction: jobs moved along by their
        devices' ``events`` (device, payload, labels), the devices heard from (``seen``), and the msg ids now
        ``delivered`` (``record_delivered``). Rows in key order (jobs, then devices, then msg ids), as every
        transaction of the registry takes them."""
        if not events and not delivered:
            return
        with self._store.transaction() as tx:
            for device, payload, labels in sorted(events, key=lambda event: event[1]["job_id"]):
                self._job_event(tx, device, payload, labels)
            if seen and events:
                self._seen(tx, {device: None for device, _, _ in events})
            self._delivered(tx, delivered)

    def _job_event(self, tx: Tx, device: str, payload: dict, labels: Optional[dict]) -> None:
        """A final state is never left (the condition is the UPDATE's own, so the database holds it when
        collectors apply a job's events at once). A result is kept, once, with its raw latency samples and
        ``labels`` (the device's plus the job's, e.g. release=v1.5.0), in the same transaction as the state it
        finishes."""
        kind, job_id = payload["event"], payload["job_id"]
        state = EVENT_STATE[kind]
        progress = json.dumps({k: payload[k] for k in ("phase", "runs", "elapsed_s")}) if kind == "progress" else None
        tx.run(f"UPDATE jobs SET state=?, reason=COALESCE(?, reason), progress=COALESCE(?, progress), updated=? "
               f"WHERE job_id=? AND device_id=? AND state NOT IN {FINAL_STATES}",
               (state, payload.get("reason"), progress, time.time(), job_id, device))
        if kind == "result":
            samples = (payload.get("samples") or {}).get("latency_ns")
            drift = payload.get("drift")
            tx.run("INSERT INTO results (job_id, device_id, summary, received, labels, samples, finished, drift) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                   (job_id, device, json.dumps(payload["summary"]), time.time(), json.dumps(labels or {}),
                    json.dumps(samples) if samples is not None else None,
                    payload.get("finished_ts") or payload["ts"], json.dumps(drift) if drift else None))

    def job_device(self, job_id: str) -> Optional[str]:
        """The device a job was sent to (None: not a job of this registry)."""
        return self.job_devices([job_id]).get(job_id)

    def job_devices(self, job_ids: Iterable[str]) -> dict[str, str]:
        """job id -> the device it was sent to, for those of ``job_ids`` in this registry."""
        return {row["job_id"]: row["device_id"]
                for row in self._where_in("SELECT job_id, device_id FROM jobs WHERE job_id IN ({})", job_ids)}

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
        runtime x the delegate chain asked for x what ran x threads x labels (x a language model's token counts).
        Every release gate filter and group is constant within such a configuration, so with N at least the runs a
        gate compares (gates.MAX_RUNS), gates see exactly what they would see in the full list."""
        latest = int(latest)  # True (the newest only) is 1
        if samples and latest:  # reduce first: the samples of the results kept only (a query per IN_CHUNK of them)
            rows = self.results(batch_id, samples=False, latest=latest)
            stored = {r["job_id"]: r["samples"] for r in self._where_in(
                "SELECT job_id, samples FROM results WHERE job_id IN ({})", (row["job_id"] for row in rows))}
            for row in rows:
                row["latency_ns"] = json.loads(stored.get(row["job_id"]) or "[]")
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
                runtime, generation = row["summary"].get("runtime") or {}, row["summary"].get("generation") or {}
                key = json.dumps([row["device_id"], row["summary"]["model"].get("name"), runtime.get("runtime"),
                                  runtime.get("requested"), runtime.get("used"), runtime.get("threads"),
                                  sorted(row["labels"].items()), generation.get("prompt_tokens"),
                                  generation.get("gen_tokens")], default=str)
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
        if entries:
            with self._store.transaction() as tx:
                self._delivered(tx, entries)

    def _delivered(self, tx: Tx, entries: Sequence[tuple[str, Optional[str]]]) -> None:
        """Insert-if-absent on the msg id (the key), in msg id order: two collectors recording the same ids at once
        take their row locks in the same order, so neither waits for the other."""
        if not entries:
            return
        now = time.time()
        tx.run_many("INSERT INTO delivered (msg_id, device_id, stored) VALUES (?, ?, ?) "
                    "ON CONFLICT (msg_id) DO NOTHING",
                    sorted({msg_id: (msg_id, device, now) for msg_id, device in entries}.values()))
        if now - getattr(self, "_pruned", 0.0) > 3600:
            tx.run("DELETE FROM delivered WHERE stored < ?", (now - DELIVERED_KEEP_S,))
            self._pruned = now

    def delivered(self, msg_id: str) -> bool:
        return bool(self.delivered_among([msg_id]))

    def delivered_among(self, msg_ids: Iterable[str]) -> set[str]:
        """Those of ``msg_ids`` already stored: a batch's duplicates in one query (per IN_CHUNK ids)."""
        return {row["msg_id"] for row in self._where_in("SELECT msg_id FROM delivered WHERE msg_id IN ({})", msg_ids)}

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

    # ------------------------------------------------------------ gate verdicts (edgebench gate --record)

    def add_verdicts(self, verdicts: Sequence[dict], recorded: float) -> None:
        """Recorded verdicts (gates.verdict_record's dicts), one evaluation in one transaction: kept here as well as
        in InfluxDB so the collector's page can show the history with the registry it already reads."""
        with self._store.transaction() as tx:
            tx.run_many("INSERT INTO gate_verdicts (recorded, rule, model, board_class, config, status, value, "
                        "message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(recorded, *(v[k] for k in VERDICT_COLUMNS)) for v in verdicts])

    def verdicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The ``limit`` newest recorded verdicts, newest first (ids grow with each insert)."""
        return self._all(f"SELECT id, recorded, {', '.join(VERDICT_COLUMNS)} FROM gate_verdicts "
                         "ORDER BY id DESC LIMIT ?", (limit,))

    # ------------------------------------------------------------ API tokens (server/auth.py: only their hashes)

    def add_token(self, name: str, role: str, token_hash: str) -> bool:
        """A new token under ``name``; False when an unrevoked token has that name (a revoked one is replaced)."""
        return self._exec(
            "INSERT INTO tokens (name, role, hash, created) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "role=excluded.role, hash=excluded.hash, created=excluded.created, last_used=NULL, revoked=NULL "
            "WHERE tokens.revoked IS NOT NULL", (name, role, token_hash, time.time())) == 1

    def token_by_hash(self, token_hash: str) -> Optional[dict]:
        """The unrevoked token with this hash: name, role."""
        rows = self._all("SELECT name, role FROM tokens WHERE hash = ? AND revoked IS NULL", (token_hash,))
        return rows[0] if rows else None

    def token_used(self, name: str) -> None:
        self._exec("UPDATE tokens SET last_used = ? WHERE name = ?", (time.time(), name))

    def tokens(self) -> list[dict]:
        """Every token, revoked ones included, without its hash."""
        return self._all("SELECT name, role, created, last_used, revoked FROM tokens ORDER BY created")

    def revoke_token(self, name: str) -> bool:
        return self._exec("UPDATE tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
                          (time.time(), name)) == 1

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret every collector of this registry shares: the first to ask makes it; one that asks at the same
        time loses the insert (insert-if-absent on the name) and reads the winner's value."""
        rows = self._all("SELECT value FROM secrets WHERE name = ?", (name,))
        if not rows:
            self._exec("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, make()))
            rows = self._all("SELECT value FROM secrets WHERE name = ?", (name,))
        return rows[0]["value"]
