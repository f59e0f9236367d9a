"""An interleaved group's members on the board, when something goes wrong that no benchmark reported: a member
whose result cannot be reported fails alone (the others keep theirs), and an unexpected error fails the members
started with the job but never one already reported, so none is left 'running' to be run again alone (without its
group: a result a paired gate would then compare as unpaired)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgebench.agent.engine import isolation
from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.daemon import Agent as AgentDaemon
from edgebench.agent.fleet.daemon import AgentConfig
from edgebench.agent.fleet.mqtt import MqttSettings

SHA = "ab" * 32


def make_agent(data_dir: Path) -> AgentDaemon:
    return AgentDaemon(AgentConfig(mqtt=MqttSettings(), device_id="grp-unit", data_dir=data_dir))


def events(agent: AgentDaemon) -> dict[str, dict]:
    """The final event of each job in the outbox, by job id."""
    rows = agent.store.due(set(), 100, time.time() + 1)
    return {event["job_id"]: event for event in (json.loads(payload) for _, _, payload in rows)}


def group_jobs(agent: AgentDaemon, ids: list[str]) -> list[tuple[str, p.Job]]:
    jobs = []
    for job_id in ids:
        job = p.Job(job_id=job_id, device="grp-unit", model=p.JobModel(sha256=SHA, size_bytes=10), repeats=2,
                    group=list(ids))
        agent.store.add_job(job_id, json.dumps(job.to_payload(time.time())))
        agent.store.start_job(job_id)
        jobs.append((job_id, job))
    return jobs


def test_a_result_that_cannot_be_reported_fails_only_its_own_job(tmp_path, monkeypatch):
    agent = make_agent(tmp_path / "data")
    group = group_jobs(agent, ["b1-0000-aa", "b1-0001-bb"])
    outcome = isolation.ChildOutcome(result={"group": [{"job_id": job_id, "report": {}} for job_id, _ in group]})
    monkeypatch.setattr(isolation, "run_child", lambda *args, **kwargs: outcome)

    def report(job_id, job, entry, drift):
        if job_id == "b1-0001-bb":
            raise ValueError("Out of range float values are not JSON compliant")
        agent._finish(job_id, "done", "result", run_id=job_id, finished_ts=time.time(), summary={})

    monkeypatch.setattr(agent, "_report", report)
    agent._execute(group, tmp_path / "model.tflite")
    assert [agent.store.job_state(job_id) for job_id, _ in group] == ["done", "failed"]
    sent = events(agent)
    assert sent["b1-0000-aa"]["event"] == "result"
    assert sent["b1-0001-bb"]["event"] == "error"
    assert "could not be reported: ValueError: Out of range float" in sent["b1-0001-bb"]["reason"]
    agent.store.close()


def test_an_unexpected_error_fails_the_started_members_and_keeps_a_reported_one(tmp_path):
    agent = make_agent(tmp_path / "data")
    group_jobs(agent, ["b1-0000-aa", "b1-0001-bb", "b1-0002-cc"])
    agent._finish("b1-0001-bb", "done", "result", run_id="b1-0001-bb", finished_ts=time.time(), summary={})
    agent.store.add_job("b1-0003-dd", "{}")  # of the group, never started: it runs later
    agent._fail_unfinished(["b1-0000-aa", "b1-0001-bb", "b1-0002-cc", "b1-0003-dd"], RuntimeError("boom"))
    states = [agent.store.job_state(job_id) for job_id in ("b1-0000-aa", "b1-0001-bb", "b1-0002-cc", "b1-0003-dd")]
    assert states == ["failed", "done", "failed", "queued"]
    sent = events(agent)
    assert sent["b1-0001-bb"]["event"] == "result"  # not followed by an error for the same job
    assert sent["b1-0000-aa"]["reason"] == sent["b1-0002-cc"]["reason"] == "internal error in the agent (see its log)"
    assert agent.store.next_job() == ("b1-0003-dd", "{}", 0)
    agent.store.close()
