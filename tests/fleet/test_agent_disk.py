"""The agent's disk: finished jobs leave nothing in work/, reports/ stays under --reports-quota, a job does not start
without --min-free-space, and a full disk fails the job with a reason but never stops the agent.

The full-disk test runs a real `edgebench agent` whose --data-dir is a small tmpfs mounted in the agent's own mount
namespace (`unshare --mount`): the test reaches it through /proc/PID/root, and the mount goes with the process.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edgebench.agent.fleet import daemon
from edgebench.agent.fleet.daemon import Agent as AgentDaemon
from edgebench.agent.fleet.daemon import AgentConfig, is_disk_full, keep_tail
from edgebench.agent.fleet.mqtt import MqttSettings

from .conftest import assert_exactly_once
from .services import Service, edgebench_argv, wait_for
from .test_faults import LONG

# Microseconds per run: about 1 MB of report (every latency sample) per job.
SMALL = {"min_runs": 20, "min_duration_s": 0.1, "warmup_runs": 1, "warmup_duration_s": 0.0}
MB = 1024**2
DISK_FULL = sqlite3.OperationalError("database or disk is full")


# ---------------------------------------------------------------- without services


def make_agent(data_dir: Path, **config) -> AgentDaemon:
    return AgentDaemon(AgentConfig(mqtt=MqttSettings(), device_id="disk-unit", data_dir=data_dir, **config))


def test_disk_full_errors_are_recognized():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(DISK_FULL)
    assert not is_disk_full(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_disk_full(sqlite3.OperationalError("no such table: jobs"))
    assert not is_disk_full(ValueError("database or disk is full"))


def test_keep_tail_cuts_a_log_in_place(tmp_path):
    log = tmp_path / "job.log"
    log.write_bytes(b"a" * 100_000 + b"THE END")
    keep_tail(log, 1000)
    data = log.read_bytes()
    assert len(data) == 1000 and data.endswith(b"THE END")
    keep_tail(log, 5000)  # already small enough: untouched
    assert log.read_bytes() == data


def test_startup_clears_finished_jobs_files_and_trims_reports(tmp_path):
    data = tmp_path / "data"
    (data / "work").mkdir(parents=True)
    (data / "reports").mkdir()
    agent = make_agent(data, reports_quota_bytes=3 * MB)
    for job_id, state in (("j.done", "done"), ("j-failed", "failed"), ("j-queued", "queued"),
                          ("j-cancelled", "cancelled")):
        agent.store.add_job(job_id, "{}")
        if state != "queued":
            agent.store.finish_job(job_id, state, "t", b"{}", "event", f"m-{job_id}")
    agent.store.close()
    work = data / "work"
    for job_id in ("j.done", "j-failed", "j-queued", "j-cancelled", "j-unknown"):
        for suffix in daemon.WORK_SUFFIXES:
            (work / f"{job_id}{suffix}").write_bytes(b"x" * (200_000 if suffix == ".log" else 10))
    (work / "not-a-job-file").write_text("left alone")
    for i in range(5):  # 1 MB each, oldest first
        report = data / "reports" / f"r{i}.json"
        report.write_bytes(b"0" * MB)
        os.utime(report, (1000 + i, 1000 + i))

    agent = make_agent(data, reports_quota_bytes=3 * MB)  # cleans up on start
    agent.store.close()
    left = sorted(p.name for p in work.iterdir())
    assert left == sorted(["j-failed.log", "not-a-job-file"] + [f"j-queued{s}" for s in daemon.WORK_SUFFIXES])
    assert (work / "j-failed.log").stat().st_size == daemon.FAILED_LOG_TAIL
    assert sorted(p.name for p in (data / "reports").iterdir()) == ["r2.json", "r3.json", "r4.json"]

    agent = make_agent(data, reports_quota_bytes=0)  # 0 keeps none
    agent.store.close()
    assert list((data / "reports").iterdir()) == []


def test_a_final_event_that_cannot_be_written_is_retried_until_it_can(tmp_path, monkeypatch, caplog):
    agent = make_agent(tmp_path / "data")
    agent.store.add_job("j1", "{}")
    agent.store.start_job("j1")
    (agent.work / "j1.out.json").write_text("{}")
    room = threading.Event()
    tries = []
    finish_job = agent.store.finish_job

    def full_disk(*args, **kwargs):
        tries.append(time.monotonic())
        if not room.is_set():
            raise DISK_FULL
        return finish_job(*args, **kwargs)

    monkeypatch.setattr(agent.store, "finish_job", full_disk)
    monkeypatch.setattr(daemon, "FINISH_RETRY_MAX_S", 0.5)
    recorded = []
    worker = threading.Thread(target=lambda: recorded.append(agent._finish("j1", "failed", "error", reason="x")))
    worker.start()
    try:
        wait_for(lambda: len(tries) >= 3, 30, "three tries")
        assert agent.store.job_state("j1") == "running" and agent.store.depth() == 0  # nothing half-written
        assert not (agent.work / "j1.out.json").exists()  # freed while waiting: the outcome is in memory
    finally:
        room.set()
        worker.join(30)
    assert recorded == [True]
    assert agent.store.job_state("j1") == "failed" and agent.store.depth() == 1
    assert sum("cannot be recorded" in r.getMessage() for r in caplog.records) == 1  # logged once
    agent.store.close()


def test_telemetry_that_cannot_be_stored_is_dropped_and_counted(tmp_path, monkeypatch):
    agent = make_agent(tmp_path / "data")
    monkeypatch.setattr(agent.telemetry_source, "read", lambda: {"load1": 0.5})
    enqueue = agent.store.enqueue
    monkeypatch.setattr(agent.store, "enqueue", lambda *a, **k: (_ for _ in ()).throw(DISK_FULL))
    for _ in range(6):
        agent._sample_telemetry()  # no exception
    assert agent.telemetry_unrecorded == 1 and agent.telemetry == []
    monkeypatch.setattr(agent.store, "enqueue", enqueue)
    for _ in range(6):
        agent._sample_telemetry()
    assert agent.store.counter("telemetry_dropped") == 1 and agent.telemetry_unrecorded == 0
    assert agent.store.depth() == 1
    agent.store.close()


def test_the_main_loop_outlives_a_failing_outbox(tmp_path, monkeypatch):
    agent = make_agent(tmp_path / "data", heartbeat_s=0.05, telemetry_s=0.05)
    calls = []

    def failing_flush(connected):
        calls.append(connected)
        raise DISK_FULL

    monkeypatch.setattr(agent.outbox, "flush", failing_flush)
    monkeypatch.setattr(agent.telemetry_source, "read", lambda: (_ for _ in ()).throw(DISK_FULL))
    loop = threading.Thread(target=agent._main_loop)
    loop.start()
    try:
        wait_for(lambda: len(calls) >= 2, 30, "the outbox to be tried again")
        assert loop.is_alive()
    finally:
        agent.stop.set()
        agent.wake.set()
        loop.join(10)
    assert not loop.is_alive()
    agent.store.close()


# ---------------------------------------------------------------- real services


def work_files(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "work").iterdir())


def test_finished_jobs_leave_no_work_files_and_reports_stay_under_quota(fleet, sine_model):
    fleet.start_collector()
    agent = fleet.start_agent("disk-q", extra=("--reports-quota", "2M"))
    data = agent.log_path.parent / "data"
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]] * 4, {"ids": ["disk-q"]}, settings=SMALL)
    ids = [job["job_id"] for job in batch["jobs"]]
    # max_duration below min_duration: the engine refuses the settings, the job fails (and keeps its log's end).
    bad = fleet.submit([model["sha256"]], {"ids": ["disk-q"]},
                       settings={**SMALL, "min_duration_s": 2.0, "max_duration_s": 1.0})
    bad_id = bad["jobs"][0]["job_id"]
    jobs = fleet.wait_jobs(batch["batch_id"], timeout=120)
    assert [job["state"] for job in jobs] == ["done"] * 4, jobs
    assert fleet.wait_jobs(bad["batch_id"], timeout=60)[0]["state"] == "failed"
    assert_exactly_once(fleet.wait_results(4), ids)
    wait_for(lambda: work_files(data) == [f"{bad_id}.log"], 30, "only the failed job's log in work/")
    assert (data / "work" / f"{bad_id}.log").stat().st_size <= daemon.FAILED_LOG_TAIL
    reports = [p.stat().st_size for p in (data / "reports").iterdir()]
    assert sum(reports) <= 2 * MB, reports
    assert len(reports) < 4  # the oldest went (each report is about 1 MB: they cannot all fit)
    assert agent.alive()


class TmpfsAgent(Service):
    """`edgebench agent` with its --data-dir on a tmpfs of its own (its own mount namespace)."""

    def __init__(self, workdir: Path, mqtt_url: str, device: str, size: str, extra: tuple = ()):
        self.device, self.data = device, workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        agent = edgebench_argv("-v", "agent", "--mqtt", mqtt_url, "--device-id", device, "--labels", "class=x86",
                               "--data-dir", str(self.data), "--heartbeat", "1", "--telemetry-interval", "0.5",
                               *extra)
        script = f'd="$1"; shift; mount -t tmpfs -o size={size} tmpfs "$d" && exec "$@"'
        super().__init__(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                          str(self.data), *agent], workdir / "agent.log")

    def path(self, *parts: str) -> Path:
        """A path on the agent's tmpfs, as this process sees it (the agent is the unshared process itself)."""
        return Path(f"/proc/{self.proc.pid}/root{self.data}", *parts)

    def free(self) -> int:
        stat = os.statvfs(self.path())
        return stat.f_bavail * stat.f_frsize

    def job_running(self, job_id: str) -> bool:
        """The job's process runs (a child of the agent; SQLite cannot open the agent's database through
        /proc/PID/root: it resolves the link to the test's own mount namespace)."""
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) \
                        == self.proc.pid and job_id.encode() in (entry / "cmdline").read_bytes():
                    return True
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        return False


def fill(path: Path, leave: int = 0) -> None:
    """Write zeros to ``path`` until its file system has ``leave`` bytes free (or none: ENOSPC)."""
    stat = os.statvfs(path.parent)
    budget = max(stat.f_bavail * stat.f_frsize - leave, 0)
    block = b"\0" * (1 << 20)
    with open(path, "wb") as out:
        try:
            while budget > 0:
                budget -= out.write(block[:budget])
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def heartbeat_of(fleet, device: str) -> dict:
    found = [d for d in fleet.collector.get("/api/v1/devices")["devices"] if d["device_id"] == device]
    return (found[0].get("heartbeat") or {}) if found else {}


@pytest.fixture
def tmpfs_agent(fleet):
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to give the agent a small tmpfs")
    fleet.start_collector()
    agent = TmpfsAgent(fleet.root / "agent-disk-full", fleet.mqtt_url, "disk-full", "48m",
                       ("--min-free-space", "16M"))
    agent.start()
    fleet.services.append(agent)  # stopped (SIGTERM, by PID) with the fleet; its mount namespace goes with it
    wait_for(lambda: agent.path("agent.sqlite3").exists() or not agent.alive(), 30, "the agent on its tmpfs")
    assert agent.alive(), agent.log_text()
    assert agent.free() <= 48 * MB  # the tmpfs, not the test's own file system
    fleet.wait_online("disk-full")
    return agent


def test_a_full_disk_refuses_a_job_holds_a_result_and_the_agent_carries_on(fleet, tmpfs_agent, sine_model, slow_model):
    agent = tmpfs_agent
    sine, slow = fleet.upload(sine_model), fleet.upload(slow_model)

    # 1. Less free than --min-free-space (16M), more than SQLite needs: the job is refused before it starts.
    filler = agent.path("filler")
    fill(filler, leave=6 * MB)
    short = fleet.submit([sine["sha256"]], {"ids": ["disk-full"]}, settings=SMALL)
    job = fleet.wait_jobs(short["batch_id"], timeout=60)[0]
    assert job["state"] == "failed", job
    assert f"not enough free disk space in {agent.data}" in job["reason"] and "16.0 MB needed" in job["reason"], job
    filler.unlink()

    # 2. The disk fills up while a job runs: the job's outcome comes back over its pipe (no disk), but its end and
    #    its result event cannot be committed to the agent's database.
    running = fleet.submit([slow["sha256"]], {"ids": ["disk-full"]}, settings=LONG)
    job_id = running["jobs"][0]["job_id"]
    wait_for(lambda: agent.job_running(job_id), 60, "the job process to start (its model cached)")
    fill(filler)
    assert agent.free() < MB
    seen = heartbeat_of(fleet, "disk-full").get("uptime_s", 0)
    wait_for(lambda: "cannot be recorded" in agent.log_text(), 90, "the job to meet the full disk")
    # Still alive, still connected and reporting: heartbeats (QoS 0, no disk) keep coming.
    wait_for(lambda: heartbeat_of(fleet, "disk-full").get("uptime_s", 0) > seen + 2, 60, "heartbeats on a full disk")
    assert agent.alive(), agent.log_text()
    assert [d["state"] for d in fleet.collector.get("/api/v1/devices")["devices"]
            if d["device_id"] == "disk-full"] == ["online"]
    assert fleet.jobs(running["batch_id"])[0]["state"] not in ("done",)

    # 3. Space is back: the job's end is recorded and its result delivered (nothing lost), and the next job runs.
    filler.unlink()
    first = fleet.wait_jobs(running["batch_id"], timeout=120)[0]
    assert first["state"] == "done", first
    after = fleet.submit([sine["sha256"]], {"ids": ["disk-full"]}, settings=SMALL)
    job = fleet.wait_jobs(after["batch_id"], timeout=90)[0]
    assert job["state"] == "done", job
    assert_exactly_once(fleet.wait_results(2), [first["job_id"], job["job_id"]])
    assert agent.alive()
    wait_for(lambda: not [p for p in agent.path("work").iterdir() if not p.name.endswith(".log")], 30,
             "no work files but failed jobs' logs")
    assert "Traceback" not in agent.log_text(), agent.log_text()
