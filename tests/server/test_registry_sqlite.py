"""The SQLite backend (server/registry_backends/sqlite.py): where its file is, WAL, transactions that roll back and
release the lock, two registries on one file. The registry's behaviour: test_registry_backends.py."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from edgebench.server.registry import open_registry
from edgebench.server.registry_backends import scheme
from edgebench.server.registry_backends.sqlite import SqliteStore


@pytest.mark.parametrize("spec", [None, ""])
def test_the_default_is_a_file_in_the_data_dir(tmp_path, spec):
    registry = open_registry(spec, tmp_path / "data")
    try:
        assert registry.backend == "sqlite" and (tmp_path / "data" / "registry.sqlite3").is_file()
        assert repr(registry) == f"sqlite {tmp_path / 'data' / 'registry.sqlite3'}"
    finally:
        registry.close()


@pytest.mark.parametrize("form", ["{path}", "sqlite://{path}"])
def test_a_file_named_by_registry(tmp_path, form):
    path = tmp_path / "elsewhere" / "reg.db"
    assert scheme(form.format(path=path)) == "sqlite"
    registry = open_registry(form.format(path=path), tmp_path / "data")
    registry.add_model("a" * 64, "m.tflite", 1, "tflite")
    registry.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT name FROM models").fetchall() == [("m.tflite",)]
    assert not (tmp_path / "data" / "registry.sqlite3").exists()


def test_a_failed_transaction_rolls_back_and_releases_the_lock(tmp_path):
    store = SqliteStore(tmp_path / "r.db")
    store.run("CREATE TABLE t (k TEXT PRIMARY KEY)")
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        tx.run("INSERT INTO t VALUES (?)", ("a",))
        tx.run("INSERT INTO t VALUES (?)", ("a",))
    done = threading.Event()
    threading.Thread(target=lambda: (store.rows("SELECT 1"), done.set()), daemon=True).start()
    assert done.wait(5), "the lock was not released"
    assert store.rows("SELECT k FROM t") == []
    assert {r["name"] for r in store.rows(store.COLUMNS_SQL, ("t",))} == {"k"}
    store.close()


def test_two_registries_on_one_file_wait_for_each_other(tmp_path):
    """Two processes' connections on one file (here: two stores): write transactions are BEGIN IMMEDIATE, so the
    second waits for the first instead of failing with 'database is locked'."""
    path = tmp_path / "r.db"
    first, second = open_registry(str(path), tmp_path), open_registry(str(path), tmp_path)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first._store.transaction() as tx:
            tx.run("INSERT INTO secrets (name, value) VALUES ('held', 'x')")
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    threading.Timer(0.3, release.set).start()
    second.record_delivered([("m1", "dev1")])  # waits ~0.3 s for the first's transaction
    holder.join(5)
    assert second.delivered("m1") and first.secret("held", lambda: "y") == "x"
    first.close()
    second.close()
