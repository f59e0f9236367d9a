"""The registry's behaviour, the same on every backend (the ``registries`` fixture: SQLite and PostgreSQL): devices,
models, jobs and their events (a final state is never left, also with two registries racing on one job), results
with ``latest``, delivered msg ids, dead letters, tokens, the shared secret; and the migrations, from a registry
file made by the collector before versioning."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest

from edgebench.server import registry as registry_module
from edgebench.server.registry import MIGRATIONS, SCHEMA_VERSION, Registry, RegistryError

SHA = "a" * 64


def job(job_id: str, device: str = "dev1", sha: str = SHA) -> dict:
    return {"job_id": job_id, "device": device, "model": {"sha256": sha, "name": "m.tflite"}, "runtime": "litert"}


def result_event(job_id: str, finished: float = 100.0, threads: int = 1, requested=("xnnpack",), **extra) -> dict:
    summary = {"model": {"name": "m.tflite"}, "stats": {"count": 1, "p50_ms": 1.0},
               "runtime": {"runtime": "litert", "requested": list(requested), "used": ["xnnpack"], "threads": threads}}
    return {"event": "result", "job_id": job_id, "run_id": job_id, "ts": finished + 1, "finished_ts": finished,
            "summary": summary, **extra}


def progress_event(job_id: str, runs: int = 1) -> dict:
    return {"event": "progress", "job_id": job_id, "phase": "measure", "runs": runs, "elapsed_s": runs / 10}


# ---------------------------------------------------------------- devices and models


def test_devices(registry):
    registry.device_status("b", "online", {"class": "rpi5"}, "0.1.0")
    registry.device_status("b", "offline", None, None)  # no labels, no version: both kept
    registry.device_inventory("a", {"labels": {"class": "jetson"}, "cpu": "arm"})
    registry.device_seen("a", {"uptime_s": 5, "unacked": 0})
    registry.device_seen("a")  # no heartbeat: the last one kept
    devices = registry.devices()
    assert [d["device_id"] for d in devices] == ["a", "b"]
    a, b = devices
    assert a["state"] == "unknown" and a["labels"] == {"class": "jetson"} and a["inventory"]["cpu"] == "arm"
    assert a["heartbeat"] == {"uptime_s": 5, "unacked": 0} and isinstance(a["last_seen"], float)
    assert b["state"] == "offline" and b["labels"] == {"class": "rpi5"} and b["agent_version"] == "0.1.0"
    assert b["inventory"] is None and b["heartbeat"] is None
    assert registry.device_state("b") == "offline" and registry.device_state("nobody") is None
    assert registry.labels("b") == {"class": "rpi5"} and registry.labels("nobody") == {}


class CountingStore:
    """The registry's store, counting the transactions it was asked for (a statement alone is one)."""

    def __init__(self, store):
        self.store, self.transactions = store, 0

    def __getattr__(self, name):
        if name in ("rows", "run", "transaction"):
            self.transactions += 1
        return getattr(self.store, name)


def test_a_batch_of_messages_costs_a_few_transactions_whatever_its_size(registry):
    """What the collector does per chunk of messages and per written batch: a handful of calls, not one a message
    (each commit syncs SQLite's WAL, each call is a round trip to PostgreSQL)."""
    registry.add_jobs([job(f"j{n:03d}", device=f"dev{n % 7}") for n in range(300)], "b1")
    counted = registry._store = CountingStore(registry._store)
    registry.device_changes(statuses=[(f"dev{n}", "online", {"class": "rpi5"}, "1.0") for n in range(0, 600, 2)],
                            inventories=[(f"dev{n}", {"labels": {"class": "jetson"}}) for n in range(1, 600, 2)])
    registry.devices_seen({f"dev{n}": {"uptime_s": n} for n in range(600)})
    assert counted.transactions == 2
    labels = registry.labels_of([f"dev{n}" for n in range(600)] + ["nobody"])
    assert len(labels) == 600 and labels["dev2"] == {"class": "rpi5"} and labels["dev3"] == {"class": "jetson"}
    owners = registry.job_devices([f"j{n:03d}" for n in range(300)] + ["nope"])
    assert len(owners) == 300 and owners["j010"] == "dev3"
    assert counted.transactions == 2 + 2 + 1  # 601 devices: two IN queries of IN_CHUNK (500); 301 jobs: one
    registry.record_stored([(f"dev{n % 7}", result_event(f"j{n:03d}"), {"release": "v2"}) for n in range(300)],
                           [(f"m{n}", f"dev{n % 7}") for n in range(600)])
    assert counted.transactions == 6
    assert registry.delivered_among([f"m{n}" for n in range(0, 1000, 100)]) == {"m0", "m100", "m200", "m300",
                                                                                "m400", "m500"}
    assert counted.transactions == 7
    jobs = registry.jobs("b1")
    assert {j["state"] for j in jobs} == {"done"} and len(registry.results()) == 300
    assert registry.results()[0]["labels"] == {"release": "v2"}
    devices = {d["device_id"]: d for d in registry.devices()}
    assert devices["dev5"]["heartbeat"] == {"uptime_s": 5}  # a result's device seen: its last heartbeat kept
    assert devices["dev4"]["state"] == "online" and devices["dev5"]["inventory"] == {"labels": {"class": "jetson"}}


def test_a_devices_changes_apply_in_the_order_given(registry):
    registry.device_changes(statuses=[("b", "online", {"class": "x"}, "1"), ("b", "offline", None, None),
                                      ("a", "online", None, "2")])
    a, b = registry.devices()
    assert (a["state"], a["agent_version"], b["state"], b["labels"], b["agent_version"]) == \
        ("online", "2", "offline", {"class": "x"}, "1")


def test_models(registry):
    first = registry.add_model(SHA, "m.tflite", 3 * 1024**3, "tflite")  # over 2 GiB: a 64-bit column
    assert first["size_bytes"] == 3 * 1024**3 and first["name"] == "m.tflite" and first["format"] == "tflite"
    time.sleep(0.01)
    again = registry.add_model(SHA, "renamed.tflite", 3 * 1024**3, "tflite")  # the same bytes: the name follows
    assert again["name"] == "renamed.tflite" and again["uploaded"] == first["uploaded"]
    registry.add_model("b" * 64, "n.onnx", 10, "onnx")
    assert [m["sha256"] for m in registry.models()] == [SHA, "b" * 64]
    assert registry.model("c" * 64) is None


# ---------------------------------------------------------------- jobs and their events


def test_jobs_move_and_never_leave_a_final_state(registry):
    registry.add_jobs([job("j1"), job("j2"), job("j3", device="dev2")], "batch1")
    registry.add_jobs([job("k1")], "batch2")
    assert [j["job_id"] for j in registry.unsent_jobs()] == ["j1", "j2", "j3", "k1"]
    registry.job_sent("j1")
    assert "j1" not in [j["job_id"] for j in registry.unsent_jobs()]
    assert registry.job_device("j3") == "dev2" and registry.job_device("nope") is None

    registry.job_event("dev1", {"event": "accepted", "job_id": "j1"})
    assert registry.jobs(job_id="j1")[0]["state"] == "accepted"
    registry.job_event("dev1", progress_event("j1", 7))
    running = registry.jobs(job_id="j1")[0]
    assert running["state"] == "running" and running["progress"] == {"phase": "measure", "runs": 7, "elapsed_s": 0.7}
    assert running["spec"] == job("j1") and running["batch_id"] == "batch1" and running["sent"] == 1
    registry.job_event("dev1", result_event("j1"))
    for late in (progress_event("j1", 8), {"event": "error", "job_id": "j1", "reason": "late"},
                 {"event": "accepted", "job_id": "j1"}):
        registry.job_event("dev1", late)  # a redelivered or late event: the job stays done
    done = registry.jobs(job_id="j1")[0]
    assert done["state"] == "done" and done["reason"] is None and done["progress"]["runs"] == 7

    registry.job_event("dev1", {"event": "error", "job_id": "j2", "reason": "out of memory"})
    registry.job_event("dev1", result_event("j2"))  # the result of a failed job: kept, the job stays failed
    failed = registry.jobs(job_id="j2")[0]
    assert failed["state"] == "failed" and failed["reason"] == "out of memory"

    registry.job_event("dev1", {"event": "rejected", "job_id": "j3", "reason": "forged"})  # not dev1's job
    assert registry.jobs(job_id="j3")[0]["state"] == "queued"

    assert [j["job_id"] for j in registry.jobs(batch_id="batch1")] == ["j1", "j2", "j3"]
    assert len(registry.jobs()) == 4 and len(registry.jobs(limit=2)) == 2
    assert registry.jobs(job_id="nope") == []


def test_a_failed_batch_insert_leaves_nothing(registry):
    registry.add_jobs([job("j1")], "batch1")
    with pytest.raises(Exception):  # noqa: B017 - sqlite3.IntegrityError or psycopg's UniqueViolation
        registry.add_jobs([job("j2"), job("j1")], "batch2")  # j1 exists: the whole batch is rolled back
    assert [j["job_id"] for j in registry.jobs()] == ["j1"]
    registry.add_jobs([job("j2")], "batch2")  # and the registry goes on
    assert len(registry.jobs()) == 2


def test_two_registries_racing_on_the_same_jobs(registries):
    """Two collectors apply one job's events at once, in any order: a finished job stays finished, its result is
    stored once, and msg ids recorded by both (in opposite orders) are all there, without a deadlock."""
    first, second = registries(), registries()
    jobs = [f"race-{n:02d}" for n in range(30)]
    first.add_jobs([job(j) for j in jobs], "race")
    errors: list[BaseException] = []

    def apply(registry: Registry, events: list[dict]) -> None:
        try:
            for event in events:
                registry.job_event("dev1", event)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    rng = random.Random(7)
    finishing = [e for j in jobs for e in (progress_event(j, 1), result_event(j), result_event(j))]
    late = [progress_event(j, n) for n in range(2, 6) for j in jobs]
    rng.shuffle(late)
    threads = [threading.Thread(target=apply, args=(first, finishing)),
               threading.Thread(target=apply, args=(second, late)),
               threading.Thread(target=apply, args=(second, [{"event": "accepted", "job_id": j} for j in jobs]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for registry in (first, second):
        states = {j["job_id"]: j["state"] for j in registry.jobs(batch_id="race")}
        assert states == dict.fromkeys(jobs, "done")
        assert sorted(r["job_id"] for r in registry.results()) == jobs

    ids = [f"msg-{n:03d}" for n in range(200)]
    recorders = [threading.Thread(target=lambda r=r, order=order: [r.record_delivered([(i, "dev1") for i in chunk])
                                                                     for chunk in zip(*[iter(order)] * 20)])
                 for r, order in ((first, ids), (second, ids[::-1]))]
    for thread in recorders:
        thread.start()
    for thread in recorders:
        thread.join(60)
    assert all(first.delivered(i) and second.delivered(i) for i in ids)


# ---------------------------------------------------------------- results


def test_results_latest_samples_and_batches(registry):
    registry.add_jobs([job(j) for j in ("old", "new", "four-threads", "fell-back")], "batch1")

    def result(job_id: str, threads: int, requested: list, finished: float, **extra) -> None:
        registry.job_event("dev1", result_event(job_id, finished, threads, requested, **extra), {"class": "rpi5"})

    result("old", 1, ["xnnpack"], 100.0, samples={"latency_ns": [1, 2, 3]})
    result("new", 1, ["xnnpack"], 200.0, samples={"latency_ns": [4, 5]}, drift={"cosine": 0.99})
    result("four-threads", 4, ["xnnpack"], 150.0)
    result("fell-back", 1, ["gpu", "xnnpack"], 160.0)  # asked for the GPU, ran XNNPACK: a configuration of its own
    registry.job_event("dev2", result_event("elsewhere", 50.0))  # a result of no job of this registry's batches
    assert [r["job_id"] for r in registry.results(latest=1)] == ["elsewhere", "four-threads", "fell-back", "new"]
    assert [r["job_id"] for r in registry.results(latest=True)] == ["elsewhere", "four-threads", "fell-back", "new"]
    assert [r["job_id"] for r in registry.results(latest=2)] == ["elsewhere", "old", "four-threads", "fell-back",
                                                                  "new"]
    rows = {r["job_id"]: r for r in registry.results(batch_id="batch1", samples=True)}
    assert sorted(rows) == ["fell-back", "four-threads", "new", "old"]
    assert rows["old"]["latency_ns"] == [1, 2, 3] and rows["four-threads"]["latency_ns"] == []
    new = rows["new"]
    assert new["labels"] == {"class": "rpi5"} and new["drift"] == {"cosine": 0.99} and new["finished"] == 200.0
    assert new["summary"]["runtime"]["threads"] == 1 and new["batch_id"] == "batch1" and new["device_id"] == "dev1"
    assert "samples" not in new and "latency_ns" not in registry.results()[0]
    latest = registry.results(samples=True, latest=1)
    assert {r["job_id"]: r["latency_ns"] for r in latest}["new"] == [4, 5]
    registry.job_event("dev1", result_event("new", 999.0))  # the same result delivered again: kept once, as it was
    assert [r["finished"] for r in registry.results() if r["job_id"] == "new"] == [200.0]


def test_the_samples_of_many_latest_results(registry):
    """``samples`` with ``latest``: the samples of the rows kept, read in chunks (more than one here)."""
    for n in range(510):
        registry.job_event(f"dev{n:03d}", result_event(f"j{n:03d}", 100.0 + n, samples={"latency_ns": [n, n + 1]}))
    rows = registry.results(samples=True, latest=1)
    assert len(rows) == 510 and all(row["latency_ns"] == [n, n + 1] for n, row in enumerate(rows))


# ---------------------------------------------------------------- delivered msg ids, dead letters


def test_delivered_dedup_and_prune(registries, monkeypatch):
    first, second = registries(), registries()
    first.record_delivered([])
    first.record_delivered([("m1", "dev1"), ("m1", "dev1"), ("m2", None)])  # a duplicate within a batch too
    second.record_delivered([("m2", "dev2"), ("m3", "dev2")])  # m2 again, from another collector: no error
    assert all(r.delivered(m) for r in (first, second) for m in ("m1", "m2", "m3"))
    assert not first.delivered("m4")
    now = time.time()
    monkeypatch.setattr(registry_module.time, "time", lambda: now + registry_module.DELIVERED_KEEP_S + 10)
    third = registries()  # a collector that has not pruned yet prunes at its first record
    third.record_delivered([("m5", "dev1")])
    assert not first.delivered("m1") and second.delivered("m5")


def test_dead_letters(registry):
    registry.dead_letter("devices/x/events", "bad json", b"\xff\xfe{")
    registry.dead_letter("t" * 600, "r" * 2000, b"p" * 10000)
    newest, oldest = registry.dead_letters()
    assert len(newest["topic"]) == 512 and len(newest["reason"]) == 1000
    assert newest["size_bytes"] == 10000 and newest["payload"] == "p" * 4096
    assert oldest["payload"] == "\ufffd\ufffd{" and oldest["size_bytes"] == 3 and newest["id"] > oldest["id"]
    assert [d["id"] for d in registry.dead_letters(limit=1)] == [newest["id"]]


# ---------------------------------------------------------------- tokens, secrets


def test_tokens(registries):
    first, second = registries(), registries()
    assert first.add_token("ci", "submit", "hash-1")
    assert not second.add_token("ci", "admin", "hash-2")  # an unrevoked token has the name
    assert second.token_by_hash("hash-1") == {"name": "ci", "role": "submit"}
    assert second.token_by_hash("hash-2") is None
    second.token_used("ci")
    listed = first.tokens()
    assert [t["name"] for t in listed] == ["ci"] and listed[0]["last_used"] and "hash" not in listed[0]
    assert second.revoke_token("ci") and not first.revoke_token("ci") and not first.revoke_token("nobody")
    assert first.token_by_hash("hash-1") is None
    assert first.add_token("ci", "admin", "hash-3")  # a revoked token is replaced
    replaced = second.tokens()[0]
    assert replaced["role"] == "admin" and replaced["revoked"] is None and replaced["last_used"] is None
    assert second.token_by_hash("hash-3") == {"name": "ci", "role": "admin"}


def test_the_secret_is_shared_and_made_once(registries):
    instances = [registries() for _ in range(4)]
    barrier, values, made = threading.Barrier(len(instances)), [], []

    def ask(registry: Registry, n: int) -> None:
        barrier.wait()
        values.append(registry.secret("signing-key", lambda: made.append(n) or f"value-{n}"))

    threads = [threading.Thread(target=ask, args=(r, n)) for n, r in enumerate(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(values) == 4 and len(set(values)) == 1, values  # every collector got the one value
    assert values[0] in {f"value-{n}" for n in made}
    assert instances[0].secret("signing-key", lambda: "another") == values[0]
    assert instances[1].secret("other", lambda: "x") == "x"


# ---------------------------------------------------------------- migrations


def test_migrations_applied_once(registries):
    first = registries()
    assert first.migrated == list(range(1, SCHEMA_VERSION + 1))
    assert registries().migrated == []
    versions = first._all("SELECT version, name FROM schema_version ORDER BY version")
    assert versions == [{"version": m.version, "name": m.name} for m in MIGRATIONS]


def test_a_registry_newer_than_the_collector_is_refused(registries):
    first = registries()
    first._exec("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (SCHEMA_VERSION + 1, "from the future", time.time()))
    with pytest.raises(RegistryError, match=f"version {SCHEMA_VERSION + 1}, newer than this collector"):
        registries()


def test_collectors_starting_together_migrate_once(registries):
    opened, errors = [], []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            opened.append(registries())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(len(r.migrated) for r in opened) == [0, 0, 0, SCHEMA_VERSION]
    assert len(opened[0]._all("SELECT version FROM schema_version")) == SCHEMA_VERSION


# The registry as the collector made it before versioning (commit 4bf7542 and earlier): CREATE TABLE IF NOT EXISTS,
# results without the columns added later by ALTER TABLE, no tokens or secrets.
OLD_SCHEMA = """
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seen REAL NOT NULL, labels TEXT NOT NULL DEFAULT '{}',
    inventory TEXT, agent_version TEXT, heartbeat TEXT);
CREATE TABLE models (
    sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, size_bytes INTEGER NOT NULL, format TEXT NOT NULL,
    uploaded REAL NOT NULL);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, device_id TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    spec TEXT NOT NULL, state TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 0, reason TEXT,
    progress TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX jobs_batch ON jobs (batch_id);
CREATE TABLE results (job_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, summary TEXT NOT NULL, received REAL NOT NULL);
CREATE TABLE delivered (msg_id TEXT PRIMARY KEY, device_id TEXT, stored REAL NOT NULL);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    size_bytes INTEGER NOT NULL, received REAL NOT NULL);
"""


@pytest.mark.parametrize("had", [(), ("labels", "samples")], ids=["oldest", "some-columns-added"])
def test_an_unversioned_sqlite_registry_is_migrated_not_lost(tmp_path, had):
    path = tmp_path / "registry.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for column in had:  # what a collector of some version in between had added
        db.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")
    db.execute("INSERT INTO devices VALUES ('dev1', 'online', 1.0, '{\"class\": \"rpi5\"}', NULL, '0.0.9', NULL)")
    db.execute(f"INSERT INTO models VALUES ('{SHA}', 'm.tflite', 10, 'tflite', 1.0)")
    db.execute(f"INSERT INTO jobs VALUES ('j1', 'b1', 'dev1', '{SHA}', '{{}}', 'done', 1, NULL, NULL, 1.0, 2.0)")
    db.execute("INSERT INTO results (job_id, device_id, summary, received) VALUES ('j1', 'dev1', "
               "'{\"model\": {\"name\": \"m.tflite\"}}', 5.0)")
    db.execute("INSERT INTO delivered VALUES ('m1', 'dev1', ?)", (time.time(),))
    db.execute("INSERT INTO dead_letters (topic, reason, payload, size_bytes, received) VALUES ('t', 'r', x'00', 1, 1)")
    db.commit()
    db.close()

    registry = Registry(path)
    try:
        assert registry.migrated == list(range(1, SCHEMA_VERSION + 1))
        assert registry.devices()[0]["labels"] == {"class": "rpi5"} and registry.model(SHA)["name"] == "m.tflite"
        assert registry.jobs()[0]["state"] == "done" and registry.delivered("m1")
        old = registry.results(samples=True)[0]
        assert old["job_id"] == "j1" and old["finished"] == 5.0 and old["labels"] == {} and old["latency_ns"] == []
        assert len(registry.dead_letters()) == 1
        registry.job_event("dev1", result_event("j2", samples={"latency_ns": [7]}))  # the new columns work
        assert registry.results(samples=True)[1]["latency_ns"] == [7]
        assert registry.add_token("ci", "read", "h") and registry.secret("s", lambda: "v") == "v"
    finally:
        registry.close()
    again = Registry(path)
    assert again.migrated == [] and len(again.results()) == 2
    again.close()
