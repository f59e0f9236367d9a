"""`edgebench server copy-registry`: a SQLite registry filled through the Registry API (devices, models, jobs with
their events and results, delivered msg ids, dead letters, tokens, the signing key) copied into a fresh PostgreSQL
database, every row equal; tokens and signed model URLs made before the copy work on the copy; a second run copies
nothing; a destination that differs is refused in one line with nothing written; usage errors are one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edgebench.agent.cli.main import main
from edgebench.agent.errors import UsageError
from edgebench.server import auth, registry_copy
from edgebench.server.registry import Registry, open_registry
from edgebench.server.registry_backends import open_store

from ..pgdb import temporary_database

SHA = "b" * 64
TABLES = ("devices", "models", "jobs", "results", "delivered", "dead_letters", "tokens", "secrets", "gate_verdicts")


def job(job_id: str, device: str) -> dict:
    return {"job_id": job_id, "device": device, "model": {"sha256": SHA, "name": "m.onnx"}, "runtime": "onnxruntime"}


def result_event(job_id: str, finished: float) -> dict:
    summary = {"model": {"name": "m.onnx"}, "stats": {"count": 3, "p50_ms": 1.25},
               "runtime": {"runtime": "onnxruntime", "requested": [], "used": ["cpu"], "threads": 2}}
    return {"event": "result", "job_id": job_id, "run_id": job_id, "ts": finished + 1, "finished_ts": finished,
            "summary": summary, "samples": {"latency_ns": [1250000, 1260000, 1240000]},
            "drift": {"max_abs_err": 0.001}}


def fill(registry: Registry) -> dict:
    """One of everything the registry keeps; what the test needs afterwards: a token, a signed model URL."""
    registry.device_status("rpi5-01", "online", {"class": "rpi5"}, "1.2.0")
    registry.device_inventory("rpi5-01", {"labels": {"class": "rpi5"}, "cpu": "cortex-a76"})
    registry.device_seen("rpi5-01", {"uptime_s": 30, "unacked": 0})
    registry.device_status("jetson-01", "offline", {"class": "jetson"}, None)
    registry.add_model(SHA, "m.onnx", 1234, "onnx")
    registry.add_jobs([job(f"job{n}", "rpi5-01") for n in range(5)], "batch1")
    for n in range(3):
        registry.job_event("rpi5-01", {"event": "accepted", "job_id": f"job{n}"})
        registry.job_event("rpi5-01", {"event": "progress", "job_id": f"job{n}", "phase": "measure", "runs": 9,
                                       "elapsed_s": 0.5})
        registry.job_event("rpi5-01", result_event(f"job{n}", 1000.0 + n), {"class": "rpi5", "release": "v1"})
    registry.job_event("rpi5-01", {"event": "error", "job_id": "job3", "reason": "out of memory"})
    registry.job_sent("job4")
    registry.record_delivered([(f"msg{n}", "rpi5-01") for n in range(7)])
    for n in range(4):
        registry.dead_letter("edgebench/devices/x/events", f"bad {n}", bytes([0, 255, n]) + b"\xc3(")
    token, revoked = auth.new_token(), auth.new_token()
    registry.add_token("ci", "submit", auth.token_hash(token))
    registry.add_token("old", "read", auth.token_hash(revoked))
    registry.revoke_token("old")
    registry.add_verdicts([{"rule": "r", "model": "m.onnx", "board_class": "rpi5", "config": "", "status": "pass",
                            "value": 1.0, "message": "ok"}], 1000.0)
    signed = dict(part.split("=") for part in auth.Authenticator(registry).sign(SHA).split("&"))  # the signing key
    return {"token": token, "revoked": revoked, "signed": signed}


def dump(spec: str, data_dir: Path) -> dict[str, list[dict]]:
    store = open_store(spec, data_dir)
    try:
        return {table: store.rows(f"SELECT * FROM {table} ORDER BY {store.rows(store.KEY_SQL, (table,))[0]['name']}")
                for table in TABLES}
    finally:
        store.close()


@pytest.fixture
def source(tmp_path) -> tuple[str, dict]:
    path = tmp_path / "old" / "registry.sqlite3"
    registry = open_registry(str(path), tmp_path)
    try:
        made = fill(registry)
    finally:
        registry.close()
    return str(path), made


def copy_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["server", "copy-registry", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tables_come_from_the_migrations():
    assert tuple(registry_copy.tables()) == TABLES


def test_sqlite_into_postgresql_every_row_and_again_nothing(source, pg_url, tmp_path):
    path, made = source
    before = dump(path, tmp_path)
    assert all(before[table] for table in TABLES), {t: len(rows) for t, rows in before.items()}

    counts = registry_copy.copy_registry(path, pg_url)
    assert {t: (c.copied, c.already_there, c.differing) for t, c in counts.items()} == {
        t: (len(rows), 0, 0) for t, rows in before.items()}
    assert dump(pg_url, tmp_path) == before  # every column, ids and blobs included
    again = registry_copy.copy_registry(path, pg_url)
    assert {t: (c.copied, c.already_there, c.differing) for t, c in again.items()} == {
        t: (0, len(rows), 0) for t, rows in before.items()}
    assert dump(pg_url, tmp_path) == before

    copied = open_registry(pg_url, tmp_path)  # a collector on the copy
    try:
        authenticator = auth.Authenticator(copied)
        assert authenticator.caller(f"Bearer {made['token']}", "submit") == auth.Caller("ci", "submit")
        assert authenticator.signed(SHA, made["signed"]["expires"], made["signed"]["sig"])
        with pytest.raises(auth.Refused):
            authenticator.caller(f"Bearer {made['revoked']}", "read")  # revoked before the copy, and after it
        copied.dead_letter("t", "after the copy", b"x")  # the identity's sequence is past the copied ids
        assert [row["id"] for row in copied.dead_letters()] == [5, 4, 3, 2, 1]
    finally:
        copied.close()

    back = str(tmp_path / "back.sqlite3")  # and back into SQLite: the same rows
    registry_copy.copy_registry(pg_url, back)
    assert dump(back, tmp_path) == dump(pg_url, tmp_path)


def test_a_top_up_keeps_what_the_destination_changed(source, pg_url, tmp_path):
    """The old collector took one more job after the copy while the new ones used the token ("ci" last_used):
    the default refuses, --on-conflict keep copies the new job and keeps the destination's token row."""
    path, made = source
    registry_copy.copy_registry(path, pg_url)
    copied = open_registry(pg_url, tmp_path)
    try:
        auth.Authenticator(copied).caller(f"Bearer {made['token']}", "read")
    finally:
        copied.close()
    old = open_registry(path, tmp_path)
    try:
        old.add_jobs([job("job9", "jetson-01")], "batch2")
    finally:
        old.close()
    with pytest.raises(UsageError, match=r"differ from the source's under the same key: 1 in tokens \(e.g. 'ci'\)"):
        registry_copy.copy_registry(path, pg_url)
    assert {row["job_id"] for row in dump(pg_url, tmp_path)["jobs"]} == {f"job{n}" for n in range(5)}
    kept = registry_copy.copy_registry(path, pg_url, on_conflict="keep")
    assert (kept["jobs"].copied, kept["jobs"].already_there) == (1, 5)
    assert (kept["tokens"].copied, kept["tokens"].already_there, kept["tokens"].differing) == (0, 1, 1)
    tokens = {row["name"]: row for row in dump(pg_url, tmp_path)["tokens"]}
    assert tokens["ci"]["last_used"] is not None  # the destination's row, kept


def test_the_command_prints_counts_and_json(source, pg_url, tmp_path, capsys):
    path, _ = source
    code, out, err = copy_cli(capsys, "--from", path, "--to", pg_url, "--json", tmp_path / "copy.json")
    assert code == 0 and err == "", err
    assert "model files are not in the registry" in out and "--models-dir" in out
    assert [line.split() for line in out.splitlines() if line.startswith("jobs ")] == [["jobs", "5", "0", "0"]]
    document = json.loads((tmp_path / "copy.json").read_text())
    assert document["tables"]["jobs"] == {"copied": 5, "already_there": 0, "differing": 0}
    assert document["already_there"] == 0 and document["differing"] == 0
    assert document["copied"] == sum(t["copied"] for t in document["tables"].values())

    code, out, _ = copy_cli(capsys, "--from", path, "--to", pg_url, "--json", "-")
    assert code == 0
    document = json.loads(out)  # stdout holds the JSON alone
    assert document["copied"] == 0 and document["tables"]["results"] == {"copied": 0, "already_there": 3,
                                                                          "differing": 0}


def test_a_destination_that_differs_is_refused_and_left_alone(source, tmp_path, capsys):
    path, _ = source
    with temporary_database() as url:
        destination = open_registry(url, tmp_path)  # a collector that ran on it: its own token "ci"
        try:
            destination.add_token("ci", "admin", auth.token_hash(auth.new_token()))
            destination.dead_letter("t", "its own", b"y")
        finally:
            destination.close()
        before = dump(url, tmp_path)

        code, out, err = copy_cli(capsys, "--from", path, "--to", url)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("edgebench: error: the destination already holds rows that differ from the source's")
        assert "1 in tokens (e.g. 'ci')" in err and "1 in dead_letters (e.g. '1')" in err
        assert "Nothing was copied" in err and "Traceback" not in err
        assert dump(url, tmp_path) == before  # devices, jobs...: none written


def test_batches_and_progress(source, tmp_path, monkeypatch, caplog):
    """Tables longer than a batch are read in key order, a batch at a time, and logged as they go."""
    path, _ = source
    monkeypatch.setattr(registry_copy, "BATCH", 2)
    monkeypatch.setattr(registry_copy, "PROGRESS_S", 0.0)
    target = str(tmp_path / "new.sqlite3")
    with caplog.at_level(logging.INFO, logger="edgebench.server.registry_copy"):
        counts = registry_copy.copy_registry(path, target)
    assert counts["delivered"].copied == 7 and dump(target, tmp_path) == dump(path, tmp_path)
    assert "delivered: 6 of 7 rows read" in caplog.text and "delivered: 7 copied, 0 already there" in caplog.text
    copied = open_registry(target, tmp_path)  # SQLite's AUTOINCREMENT counter follows the copied ids by itself
    try:
        copied.dead_letter("t", "after the copy", b"x")
        assert copied.dead_letters(limit=1)[0]["id"] == 5
    finally:
        copied.close()


def test_usage_errors_are_one_line(source, tmp_path, capsys):
    path, _ = source
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a registry\n")
    cases = [
        (["--from", path, "--to", str(Path(path).parent / ".." / "old" / "registry.sqlite3")],
         "are the same registry"),
        (["--from", "postgresql://u:pw@db.lab/edgebench", "--to", "postgres://other@db.lab:5432/edgebench"],
         "are the same registry"),
        (["--from", tmp_path / "missing.sqlite3", "--to", tmp_path / "x.sqlite3"], "no such file"),
        (["--from", garbage, "--to", tmp_path / "x.sqlite3"], "--from: registry"),
        (["--from", path, "--to", "mysql://u:pw@h/db"], "--to mysql://u:***@h/db: expected a SQLite file"),
        (["--from", path, "--to", "postgresql://h/db?bogus=1"], "--to postgresql://h/db?bogus=1: invalid URI"),
        (["--from", path, "--to", ""], "--to: expected a SQLite file"),
        (["--from", path, "--to", tmp_path / "x.sqlite3", "--json", tmp_path / "no" / "c.json"], "--json"),
    ]
    for argv, says in cases:
        code, out, err = copy_cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and says in err and "pw" not in err, (argv, err)
    assert not (tmp_path / "missing.sqlite3").exists() and not (tmp_path / "x.sqlite3").exists()
