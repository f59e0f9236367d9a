"""Two collectors of one share group on one PostgreSQL registry (``--registry postgresql://...``) and one models
directory (``--models-dir``): whichever collector an engineer asks, the answer is the same, although the broker
splits the boards' messages (job events, results) between the collectors."""

from __future__ import annotations

import hashlib
import urllib.request

import pytest

from ..pgdb import temporary_database
from .services import wait_for


@pytest.fixture
def pg_url():
    with temporary_database() as url:
        yield url


def download(collector, sha: str, headers: dict) -> bytes:
    """The model's bytes through this collector's API (with its token, and e.g. a Range header)."""
    token = getattr(collector, "token", None)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{collector.url}/api/v1/models/{sha}/content", headers={**auth, **headers})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_two_collectors_on_one_registry_answer_alike(fleet, pg_url, sine_model, slow_model, tmp_path):
    shared = ("--registry", pg_url, "--models-dir", str(tmp_path / "shared-models"))
    first = fleet.start_collector("collector-a", extra=("--client-id", "collector-a", *shared))
    # the first collector made the registry's admin token; the second uses the same (it is the same registry)
    second = fleet.start_collector("collector-b", extra=("--client-id", "collector-b", *shared),
                                   token=getattr(first, "token", None))
    fleet.start_agent("board-a", "class=x86")
    fleet.start_agent("board-b", "class=x86")
    wait_for(lambda: len(second.get("/api/v1/devices")["devices"]) == 2, 30, "both boards through B")

    # a model uploaded through A is listed and served by B, and the other way round
    sine = fleet.upload(sine_model)
    data = sine_model.read_bytes()
    assert sine["sha256"] == hashlib.sha256(data).hexdigest()
    assert [m["sha256"] for m in second.get("/api/v1/models")["models"]] == [sine["sha256"]]
    assert second.get(f"/api/v1/models/{sine['sha256']}") == sine
    assert download(second, sine["sha256"], {}) == data
    assert download(second, sine["sha256"], {"Range": "bytes=4-99"}) == data[4:100]
    slow = second.request("POST", f"/api/v1/models?name={slow_model.name}", slow_model.read_bytes(),
                          "application/octet-stream")
    assert b'"sha256"' in slow
    assert first.get("/api/v1/models") == second.get("/api/v1/models")
    assert len(first.get("/api/v1/models")["models"]) == 2
    sha = hashlib.sha256(slow_model.read_bytes()).hexdigest()
    assert download(first, sha, {"Range": "bytes=-10"}) == slow_model.read_bytes()[-10:]

    # a push through A: the same jobs, states and results through B
    batch = fleet.submit([sine["sha256"], sine["sha256"]], {"labels": {"class": "x86"}})["batch_id"]
    assert len(second.get(f"/api/v1/jobs?batch={batch}")["jobs"]) == 4  # listed by B as soon as submitted
    done = fleet.wait_jobs(batch, timeout=120)
    assert {job["state"] for job in done} == {"done"}, [(j["job_id"], j["state"], j["reason"]) for j in done]
    assert second.get(f"/api/v1/jobs?batch={batch}")["jobs"] == first.get(f"/api/v1/jobs?batch={batch}")["jobs"]
    for job in done:
        assert second.get(f"/api/v1/jobs/{job['job_id']}") == first.get(f"/api/v1/jobs/{job['job_id']}")
    results = first.get(f"/api/v1/results?batch={batch}")["results"]
    assert sorted(r["job_id"] for r in results) == sorted(job["job_id"] for job in done)
    assert second.get(f"/api/v1/results?batch={batch}")["results"] == results
    assert second.get("/api/v1/results?latest=1") == first.get("/api/v1/results?latest=1")
    # the boards' messages were split between the two: the registry, not one collector, holds the whole story
    received = [c.metric("edgebench_messages_received_total") for c in (first, second)]
    assert min(received) > 0, received
    fleet.wait_results(4)
