"""Where the collector's registry keeps its tables: one module per database, each speaking only its dialect.

``server/registry.py`` holds every rule of the registry (its SQL, the migrations, decoding the JSON columns, the
state rules); a backend only runs that SQL. The SQL is written once, with ``?`` placeholders, in the dialect
SQLite (>= 3.24) and PostgreSQL (>= 9.5) share (``INSERT ... ON CONFLICT``, ``excluded.``); what differs lives
here, in each backend:

- placeholders (SQLite ``?``, psycopg ``%s``), translated by the backend;
- the column types in migrations, as ``{REAL}``, ``{BLOB}`` and ``{SERIAL}`` (an auto-increment integer key);
- how a table's columns and its primary key are listed (``COLUMNS_SQL``, ``KEY_SQL``: ``pragma_table_info`` /
  ``information_schema``), and what rows copied with their ids need afterwards (``after_copy``: PostgreSQL moves
  an identity column's sequence past them), for ``server/registry_copy.py``;
- transactions and concurrency: SQLite has one connection behind a lock (every write transaction ``BEGIN
  IMMEDIATE``); PostgreSQL has a pool of connections, one per transaction;
- the migration lock: SQLite's write lock (``BEGIN IMMEDIATE``), PostgreSQL's transaction-level advisory lock, so
  two collectors starting together do not both migrate.

A backend is a module with ``connect(spec, data_dir) -> Store`` and ``location(spec, data_dir) -> str`` (where
the value points: a file's resolved path, a database's host, port and name); register it in ``BACKENDS`` and its
URL schemes in ``SCHEMES``. Its test is ``tests/server/test_registry_NAME.py``, and the registry's own tests
(``tests/server/test_registry_backends.py``) run against every backend.
"""

from __future__ import annotations

import importlib
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Optional, Protocol

from edgebench.agent.errors import EdgebenchError, UsageError

# name -> module; a module is imported only when its scheme is asked for (psycopg only with PostgreSQL)
BACKENDS = {
    "sqlite": "edgebench.server.registry_backends.sqlite",
    "postgresql": "edgebench.server.registry_backends.postgresql",
}
SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
DEFAULT_FILE = "registry.sqlite3"


class RegistryError(EdgebenchError):
    """The registry's database cannot be opened or migrated (unreachable, newer than this collector)."""


class RegistryUnavailable(RegistryError):
    """The database did not answer a call (down, restarting, unreachable, a deadlock it broke): the call changed
    nothing and may be made again. The collector then waits and tries again, holding the message unacknowledged,
    as it does while InfluxDB is down; SQLite, in the collector's own process, never raises it."""


class Tx(Protocol):
    """One transaction: SQL with ``?`` placeholders."""

    def rows(self, sql: str, args: tuple = ()) -> list[dict]: ...

    def run(self, sql: str, args: tuple = ()) -> int: ...  # rows changed

    def run_many(self, sql: str, rows: list[tuple]) -> None: ...


class Store(Protocol):
    name: str  # "sqlite" or "postgresql", for messages and tests
    TYPES: dict[str, str]  # REAL, BLOB, SERIAL: column types in migrations
    COLUMNS_SQL: str  # one argument, the table; rows with ``name``
    KEY_SQL: str  # one argument, the table; its primary key's columns, in order, as rows with ``name``

    def rows(self, sql: str, args: tuple = ()) -> list[dict]: ...  # a statement in a transaction of its own

    def run(self, sql: str, args: tuple = ()) -> int: ...

    def transaction(self) -> AbstractContextManager[Tx]: ...  # committed at the end, rolled back on an error

    def migration(self) -> AbstractContextManager[Tx]: ...  # a transaction that holds the schema lock

    def after_copy(self, tx: Tx, table: str) -> None: ...  # rows were inserted with their keys: keep counters past

    def close(self) -> None: ...


def scheme(spec: Optional[str]) -> str:
    """The backend a ``--registry`` value names: a ``postgresql://`` URL, or a SQLite file (none: the default)."""
    head, sep, _ = (spec or "").partition("://")
    if not sep:
        return "sqlite"
    if head.lower() not in SCHEMES:
        raise UsageError(f"--registry {redact(spec or '')}: expected a SQLite file or postgresql://... "
                         f"(schemes: {', '.join(sorted(SCHEMES))})")
    return SCHEMES[head.lower()]


def _backend(spec: Optional[str]) -> Any:
    name = scheme(spec)
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as exc:  # psycopg not installed
        raise UsageError(f"--registry {redact(spec or '')}: the {name} backend needs {exc.name} "
                         f"(pip install 'edgebench[server]')") from None


def open_store(spec: Optional[str], data_dir: Path) -> Any:
    """The store a ``--registry`` value names; ``None`` or ``""``: ``DATA_DIR/registry.sqlite3``."""
    return _backend(spec).connect(spec or "", data_dir)


def location(spec: Optional[str], data_dir: Path) -> str:
    """Where a ``--registry`` value points, to tell whether two values name one registry: a SQLite file's
    resolved path, or ``postgresql://host:port/database``. Opens nothing."""
    return _backend(spec).location(spec or "", data_dir)


def redact(spec: str) -> str:
    """A URL without its password, for messages and logs."""
    head, sep, rest = spec.partition("://")
    if not sep:
        return spec
    netloc, slash, path = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    path = re.sub(r"(?i)(password=)[^&]*", r"\1***", path)
    return f"{head}://{user}{at}{host}{slash}{path}"
