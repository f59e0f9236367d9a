"""The embedded registry: one SQLite file (WAL) per collector, the default.

One connection behind a lock serves the collector's threads (MQTT, writer, the HTTP workers): SQLite serialises
writers anyway, and a statement takes microseconds. Every write transaction is ``BEGIN IMMEDIATE``: it takes the
file's write lock first, so a transaction never has to give up half-way because another connection wrote since it
read (two processes on one file wait for each other, up to ``BUSY_TIMEOUT_S``). Migrations take the same lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgebench.server.registry_backends import DEFAULT_FILE, RegistryError

BUSY_TIMEOUT_S = 30.0


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def rows(self, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    def run(self, sql: str, args: tuple = ()) -> int:
        return self._db.execute(sql, args).rowcount

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        self._db.executemany(sql, rows)


def _wal(db: sqlite3.Connection) -> None:
    """WAL mode. Switching a new file to it needs the file to itself, and SQLite answers "database is locked" at
    once, without its busy handler, while another collector opens the same file (seen on a loaded machine with
    four starting together): tried again until BUSY_TIMEOUT_S."""
    deadline, pause = time.monotonic() + BUSY_TIMEOUT_S, 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _open(path: Path) -> sqlite3.Connection:
    """The file's connection, in WAL mode. A directory, an unreadable file, a file that is not a SQLite
    database: RegistryError, one line."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        _wal(db)
        return db
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise RegistryError(f"registry {path}: {exc}") from None


class SqliteStore:
    name = "sqlite"
    TYPES = {"REAL": "REAL", "BLOB": "BLOB", "SERIAL": "INTEGER PRIMARY KEY AUTOINCREMENT"}
    COLUMNS_SQL = "SELECT name FROM pragma_table_info(?)"
    KEY_SQL = "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk"

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._db = _open(path)
        self._db.row_factory = sqlite3.Row
        self._tx = _Tx(self._db)

    def rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return self._tx.rows(sql, args)

    def run(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._tx.run(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    migration = transaction  # BEGIN IMMEDIATE: the write lock, held until COMMIT

    def after_copy(self, tx: _Tx, table: str) -> None:
        """Nothing: rows inserted with their own ids move an AUTOINCREMENT key's counter (sqlite_sequence) past
        them."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"sqlite {self.path}"


def registry_file(spec: str, data_dir: Path) -> Path:
    """``""``: DATA_DIR/registry.sqlite3; ``sqlite:///abs/path`` or a plain path: that file."""
    name = spec.partition("sqlite://")[2] if spec.startswith("sqlite://") else spec
    return Path(name).expanduser() if name else data_dir / DEFAULT_FILE


def location(spec: str, data_dir: Path) -> str:
    """The file's absolute path (links resolved): two values that name one file have one location."""
    return str(registry_file(spec, data_dir).resolve())


def connect(spec: str, data_dir: Path) -> SqliteStore:
    return SqliteStore(registry_file(spec, data_dir))
