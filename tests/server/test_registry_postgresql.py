"""The PostgreSQL backend (server/registry_backends/postgresql.py): URLs and their errors, placeholders, column
types, the pool under more threads than connections, connections lost and replaced, and the migration lock. The
registry's behaviour: test_registry_backends.py (both backends)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import psycopg
import pytest

from edgebench.agent.errors import UsageError
from edgebench.server.registry import SCHEMA_VERSION, Registry, open_registry
from edgebench.server.registry_backends import RegistryError, redact, scheme
from edgebench.server.registry_backends.postgresql import MIGRATION_LOCK, POOL_MAX


def test_urls():
    assert scheme("postgresql://u@h/db") == scheme("postgres://h/db") == scheme("POSTGRESQL://h/db") == "postgresql"
    with pytest.raises(UsageError, match=r"mysql://u:\*\*\*@h/db: expected a SQLite file or postgresql://"):
        scheme("mysql://u:secret@h/db")
    assert redact("postgresql://u:secret@h:5432/db?sslmode=require&password=also") == \
        "postgresql://u:***@h:5432/db?sslmode=require&password=***"
    assert redact("postgresql://h/db") == "postgresql://h/db"


def test_an_unreachable_database_is_one_line_with_its_reason(tmp_path, pg_url):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RegistryError, match=r"registry postgresql://u:\*\*\*@127.0.0.1:\d+/x: .*refused"):
        open_registry(f"postgresql://u:secret@127.0.0.1:{port}/x", tmp_path)
    with pytest.raises(RegistryError, match='database "no_such_db_here" does not exist'):
        open_registry(pg_url.rpartition("/")[0] + "/no_such_db_here", tmp_path)


def test_placeholders_types_and_repr(tmp_path, pg_url):
    registry = open_registry(pg_url, tmp_path)
    try:
        assert registry.backend == "postgresql" and repr(registry) == f"postgresql {pg_url}"
        store = registry._store
        assert store.rows("SELECT '100%' AS percent, ? AS value", ("x",)) == [{"percent": "100%", "value": "x"}]
        types = {(r["table_name"], r["column_name"]): r["data_type"] for r in store.rows(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()")}
        assert types["devices", "last_seen"] == types["results", "finished"] == "double precision"
        assert types["dead_letters", "payload"] == "bytea" and types["models", "size_bytes"] == "bigint"
    finally:
        registry.close()


def test_more_threads_than_pooled_connections(tmp_path, pg_url):
    registry = open_registry(pg_url, tmp_path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                registry.device_seen(f"dev{n}", {"i": i})
                registry.record_delivered([(f"m{n}-{i}", f"dev{n}")])
                registry.devices()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(POOL_MAX * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors, errors[:3]
        assert len(registry.devices()) == POOL_MAX * 2
        assert all(d["heartbeat"] == {"i": 19} for d in registry.devices())
    finally:
        registry.close()


def test_connections_lost_are_replaced(tmp_path, pg_url):
    """The database restarting (here: every connection of the registry terminated) costs no call after it."""
    registry = open_registry(pg_url, tmp_path)
    try:
        registry.device_seen("dev1")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert killed >= 1
        assert [d["device_id"] for d in registry.devices()] == ["dev1"]
    finally:
        registry.close()


def test_migrations_wait_for_the_lock(tmp_path, pg_url):
    """A collector starting while another migrates waits for it (the advisory lock), then finds nothing to do."""
    opened: list[Registry] = []
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        starter = threading.Thread(target=lambda: opened.append(open_registry(pg_url, tmp_path)))
        starter.start()
        time.sleep(0.5)
        assert not opened, "migrated without the lock"
        holder.commit()  # the lock goes with the transaction
    starter.join(30)
    assert len(opened) == 1 and opened[0].migrated == list(range(1, SCHEMA_VERSION + 1))
    opened[0].close()


class Proxy:
    """A TCP forwarder to the database that can be cut and restored on the same port: a database going away
    (every connection dropped, new ones refused) and coming back."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port, self.sockets, self.listener = target, 0, [], None

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets = []


def test_a_database_away_is_registry_unavailable_and_back_it_answers(tmp_path, pg_url, monkeypatch):
    from urllib.parse import urlsplit

    from edgebench.server.registry_backends import RegistryUnavailable, postgresql

    monkeypatch.setattr(postgresql, "WAIT_S", 1.0)
    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname, parts.port or 5432))
    proxy.start()
    registry = open_registry(pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}"), tmp_path)
    try:
        registry.device_seen("dev1")
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=r"registry postgresql://postgres@127.0.0.1:\d+/edgebench_test"):
            registry.device_seen("dev1", {"away": True})
        assert time.monotonic() - started < 10
        proxy.start()  # the same port again
        deadline = time.monotonic() + 30
        while True:
            try:
                registry.device_seen("dev1", {"back": True})
                break
            except RegistryUnavailable:
                assert time.monotonic() < deadline, "the registry did not reconnect"
                time.sleep(0.2)
        assert registry.devices()[0]["heartbeat"] == {"back": True}
    finally:
        proxy.cut()
        registry.close()
