"""Hostile input on the collector's HTTP API: malformed framing, oversized bodies, smuggling on a kept-alive
connection, malformed job matrices, ranges beyond the end, idle connections, guessable job ids.

Framing cases are raw bytes over a socket; every test talks to a real collector process (`fleet` fixture), except
the unit tests of Api.submit at the end. Nothing here measures time: a socket timeout only bounds a hang.
"""

from __future__ import annotations

import http.client
import json
import socket
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from edgebench.agent.fleet import protocol as p
from edgebench.server.api import MAX_AXIS, MAX_JOBS_PER_REQUEST, Api, ApiError
from edgebench.server.metrics import Metrics

from .services import wait_for

SHA = "ab" * 32  # well-formed, never uploaded
HANG = 30  # seconds a socket waits before the test calls it a hang
# Framing and limits, not tokens (tests/fleet/test_auth.py): these collectors serve on loopback without auth.
NO_AUTH = ("--insecure-no-auth",)


# ---------------------------------------------------------------- helpers

def exchange(url: str, data: bytes) -> list[tuple[int, dict, bytes]]:
    """Send raw bytes on one connection and read until the server closes it: every response it sent."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=HANG) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    return parse_responses(received)


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:300]
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        responses.append((int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses


def request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """(status, headers, body) of one request over http.client, errors included."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HANG)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def error_of(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"error"} and isinstance(document["error"], str), document
    return document["error"]


def serving(url: str) -> bool:
    with urllib.request.urlopen(url + "/api/v1/devices", timeout=HANG) as response:
        return response.status == 200 and "devices" in json.loads(response.read())


def post_json(url: str, value: object) -> tuple[int, str]:
    status, headers, body = request(url, "POST", "/api/v1/jobs", json.dumps(value).encode(),
                                    {"Content-Type": "application/json"})
    assert headers["content-type"].startswith("application/json"), headers
    return status, error_of(body) if status >= 400 else ""


# ---------------------------------------------------------------- framing

def test_malformed_content_length_is_refused_and_the_connection_closed(fleet):
    url = fleet.start_collector(extra=NO_AUTH).url
    for length in ("-1", "abc", "1e3", "+2", "2, 2", "0x10", ""):
        head = f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
        # the old server read "-1" until EOF: this test never closes its side, so that would hang
        responses = exchange(url, head + b"{}")
        assert len(responses) == 1, (length, responses)
        status, headers, body = responses[0]
        assert status == 400 and headers["connection"] == "close", (length, responses)
        assert "Content-Length" in error_of(body)
    assert serving(url)


def test_bodies_over_the_limits(fleet):
    url = fleet.start_collector(extra=("--max-model-size", "1M", *NO_AUTH)).url
    # refused from the headers alone, the body never read, the connection closed
    for path, length in (("/api/v1/models?name=m.tflite", (1 << 20) + 1), ("/api/v1/jobs", 1 << 30),
                         ("/api/gates/evaluate", 1 << 30), ("/api/v1/models?name=m.tflite", 1 << 62)):
        responses = exchange(url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        assert [r[0] for r in responses] == [413], responses
        assert "limit is 1048576 bytes" in error_of(responses[0][2])
    assert serving(url)


def test_json_body_over_its_limit(fleet):
    url = fleet.start_collector(extra=NO_AUTH).url  # uploads up to 2G: a 2 MiB JSON body reaches the route
    for path in ("/api/v1/jobs", "/api/gates/evaluate", "/api/gates/verdicts"):
        status, _, body = request(url, "POST", path, b" " * (2 << 20), {"Content-Type": "application/json"})
        assert status == 413 and "the limit is 1048576" in error_of(body), (path, body)


SMUGGLED = b"POST /api/v1/jobs/smuggled-1/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
FOLLOW_UP = b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def upload_head(name: str, length: int) -> bytes:
    return f"POST /api/v1/models?name={name} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


def test_a_rejected_uploads_body_is_never_a_request(fleet):
    """The body of a refused upload is a complete cancel request: it must be skipped, not answered."""
    url = fleet.start_collector(extra=("--max-model-size", "1M", *NO_AUTH)).url
    # refused for its size, from the headers: answered, and the connection closed with the body unread
    responses = exchange(url, upload_head("m.tflite", 1 << 30) + SMUGGLED + FOLLOW_UP)
    assert [r[0] for r in responses] == [413], responses
    for head, body in ((upload_head("bad%20name", len(SMUGGLED)), SMUGGLED),  # refused for its name
                       (upload_head("m.tflite", len(SMUGGLED)), SMUGGLED)):  # for its content
        responses = exchange(url, head + body + FOLLOW_UP)
        statuses = [status for status, _, _ in responses]
        assert len(statuses) == 2 and statuses[0] in (400, 413) and statuses[1] == 200, responses
        assert not any(b"smuggled" in r[2] for r in responses), responses
        assert "devices" in json.loads(responses[1][2])


# ---------------------------------------------------------------- job matrices

MALFORMED = [  # (body, a word the error must name)
    ({"models": [SHA], "devices": "all"}, "devices"),
    ({"models": [{}], "devices": {"all": True}}, "models[0]"),
    ({"models": [SHA], "devices": {"all": True}, "threads": 5}, "threads"),
    ({"models": [SHA], "devices": {"all": True}, "runtimes": 3}, "runtimes"),
    ({"models": [SHA], "devices": {"all": True}, "runtimes": ["tensorflow"]}, "runtimes[0]"),
    ({"models": [SHA], "devices": {"all": True}, "delegates": ["xnnpack"]}, "delegates[0]"),
    ({"models": [SHA], "devices": {"all": True}, "threads": ["4"]}, "threads[0]"),
    ({"models": SHA, "devices": {"all": True}}, "models"),
    ({"models": [SHA], "devices": {"ids": "board-a"}}, "devices.ids"),
    ({"models": [SHA], "devices": {"ids": [["board-a"]]}}, "devices.ids[0]"),
    ({"models": [SHA], "devices": {"labels": ["class=x86"]}}, "devices.labels"),
    ({"models": [SHA], "devices": {"all": "yes"}}, "devices.all"),
    ({"models": [SHA], "devices": {"all": True}, "options": ["seed"]}, "options"),
    ({"models": [SHA], "devices": {"all": True}, "labels": "release=v1"}, "labels"),
    ({"models": [SHA], "devices": {"all": True}, "reference": 5}, "reference"),
    ({"models": [SHA], "devices": {"all": True}, "thread": [1]}, "thread"),
    ({"models": [SHA] * (MAX_AXIS + 1), "devices": {"all": True}}, f"at most {MAX_AXIS}"),
    ({"models": [SHA], "devices": {"ids": ["d"] * (MAX_AXIS + 1)}}, f"at most {MAX_AXIS}"),
    ([SHA], "JSON object"),
]


def test_malformed_job_matrices_are_400_naming_the_field(fleet):
    url = fleet.start_collector(extra=NO_AUTH).url
    for body, field in MALFORMED:
        status, error = post_json(url, body)
        assert status == 400 and field in error, (body if len(str(body)) < 200 else field, status, error)
    for raw, words in ((b"{", "not JSON"), (b"[" * 100_000, "not JSON"), (b"\xff\xfe", "not JSON")):
        status, _, body = request(url, "POST", "/api/v1/jobs", raw, {"Content-Type": "application/json"})
        assert status == 400 and words in error_of(body), (raw[:10], body)
    assert serving(url)


def test_a_matrix_too_large_is_refused_from_its_lengths(fleet):
    """10^9 jobs: refused with the count, from the lists' lengths, before anything is built."""
    url = fleet.start_collector(extra=NO_AUTH).url
    body = {"models": [SHA] * 1000, "devices": {"all": True}, "runtimes": ["litert"] * 1000, "threads": [1] * 1000}
    status, error = post_json(url, body)
    assert status == 400 and error == f"the matrix makes 1000000000 jobs; the limit is {MAX_JOBS_PER_REQUEST}"
    assert serving(url)


def test_other_bad_parameters_are_4xx(fleet):
    url = fleet.start_collector(extra=NO_AUTH).url
    for method, path, expected in (
            ("GET", "/api/v1/dead-letters?limit=abc", (400, "limit")),
            ("GET", "/api/v1/dead-letters?limit=-5", (400, "limit")),
            ("GET", "/api/v1/models/" + "z" * 64, (404, "no such model")),
            ("GET", "/api/v1/models/" + SHA + "/content", (404, "no such model")),
            ("GET", "/api/v1/jobs/-bad", (404, "no job -bad")),
            ("POST", "/api/v1/jobs/nope/cancel", (404, "no job nope")),
            ("DELETE", "/api/v1/jobs", (405, "no route DELETE")),
            ("GET", "/api/v2/anything", (404, "no route GET")),
            ("POST", "/api/gates/evaluate?format=pdf", (400, "format")),
            ("POST", "/api/gates/verdicts", (400, "verdicts")),
            ("POST", "/api/v1/models?name=m.tflite", (400, "model size")),
    ):
        status, _, body = request(url, method, path)
        assert (status, expected[1] in error_of(body)) == (expected[0], True), (method, path, status, body)


# ---------------------------------------------------------------- downloads

def test_range_requests(fleet, sine_model):
    url = fleet.start_collector(extra=NO_AUTH).url
    sha = fleet.upload(sine_model)["sha256"]
    data, path = sine_model.read_bytes(), f"/api/v1/models/{sha}/content"
    size = len(data)
    for header in (f"bytes={size}-", f"bytes={size + 1000}-", f"bytes={size}-{size + 5}", "bytes=-0"):
        status, headers, body = request(url, "GET", path, headers={"Range": header})
        assert status == 416 and headers["content-range"] == f"bytes */{size}", (header, status, headers)
        assert "beyond" in error_of(body)
    for header, start, end in (("bytes=10-", 10, size - 1), ("bytes=0-9", 0, 9), ("bytes=-5", size - 5, size - 1),
                               (f"bytes={size - 1}-", size - 1, size - 1), (f"bytes=5-{size * 2}", 5, size - 1)):
        status, headers, body = request(url, "GET", path, headers={"Range": header})
        assert (status, body) == (206, data[start:end + 1]), header
        assert headers["content-range"] == f"bytes {start}-{end}/{size}", (header, headers)
    for header in (None, "bytes=9-2", "items=0-1", "bytes=0-1,5-6"):  # none, or ignored: the whole file
        status, headers, body = request(url, "GET", path, headers={"Range": header} if header else {})
        assert (status, body) == (200, data) and headers["accept-ranges"] == "bytes", header


# ---------------------------------------------------------------- connections

def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_idle_connections_do_not_stop_service(fleet):
    collector = fleet.start_collector(extra=("--http-timeout", "300", *NO_AUTH))
    parts = urllib.parse.urlsplit(collector.url)
    before = threads_of(collector.proc.pid)
    idle = []
    try:
        for n in range(300):  # half of them half-open: a request line and no end of headers
            sock = socket.create_connection((parts.hostname, parts.port), timeout=HANG)
            if n % 2:
                sock.sendall(b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        assert serving(collector.url)  # at once: HANG is far below --http-timeout, which would free them
        assert threads_of(collector.proc.pid) < before + 10  # a fixed pool: no thread per connection
    finally:
        for sock in idle:
            sock.close()


def test_idle_connections_time_out(fleet):
    url = fleet.start_collector(extra=("--http-timeout", "1", *NO_AUTH)).url
    parts = urllib.parse.urlsplit(url)
    for sent in (b"", b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n",  # silent; half-open
                 b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n\r\n"):  # answered, then idle while kept alive
        with socket.create_connection((parts.hostname, parts.port), timeout=HANG) as sock:
            sock.sendall(sent)
            received = b""
            while chunk := sock.recv(1 << 16):  # returns b"" when the server closes; HANG if it never does
                received += chunk
        assert [r[0] for r in parse_responses(received)] == ([200] if sent.endswith(b"\r\n\r\n") else [])


# ---------------------------------------------------------------- job ids

def test_job_ids_are_not_guessable(fleet, sine_model):
    fleet.start_collector()
    fleet.start_agent("ids-board")
    sha = fleet.upload(sine_model)["sha256"]
    batch = fleet.post("/api/v1/jobs", json.dumps({
        "models": [sha], "devices": {"ids": ["ids-board"]}, "threads": [1, 2, 3, 4],
        "options": {"settings": {"min_runs": 1, "min_duration_s": 0.01, "warmup_runs": 0, "warmup_duration_s": 0},
                    "sensors": False}}).encode())
    assert_unguessable(batch["batch_id"], [job["job_id"] for job in batch["jobs"]])
    listed = wait_for(lambda: fleet.jobs(batch["batch_id"]), 10, "the jobs listed")
    assert [job["job_id"] for job in listed] == [job["job_id"] for job in batch["jobs"]]  # matrix order kept


def assert_unguessable(batch_id: str, ids: list[str]) -> None:
    assert len(set(ids)) == len(ids) > 1
    tokens = []
    for n, job_id in enumerate(ids):
        assert p.JOB_ID.match(job_id) and job_id.startswith(batch_id + "-"), job_id
        index, token = job_id[len(batch_id) + 1:].split("-")
        assert int(index) == n and len(token) == 16 and int(token, 16) >= 0, job_id
        tokens.append(int(token, 16))
    assert len(set(tokens)) == len(tokens)
    assert not any(abs(a - b) < 1 << 16 for a, b in zip(tokens, tokens[1:]))  # not a counter


# ---------------------------------------------------------------- Api.submit, without HTTP

class FakeRegistry:
    def __init__(self, devices: int):
        self.added: list = []
        self._devices = [{"device_id": f"dev-{n}", "labels": {"class": "x86"}} for n in range(devices)]

    def model(self, sha: str) -> dict:
        return {"sha256": sha, "size_bytes": 100, "name": "m.tflite", "format": "tflite"}

    def devices(self) -> list:
        return self._devices

    def add_jobs(self, jobs: list, batch: str) -> None:
        self.added.extend(jobs)

    def secret(self, name: str, make) -> str:
        return make()


class FakeCollector:
    def __init__(self):
        self.published: list = []

    def publish_job(self, job: dict) -> None:
        self.published.append(job)


def fake_api(tmp_path: Path, devices: int) -> Api:
    return Api(FakeRegistry(devices), FakeCollector(), Metrics(), tmp_path / "models", "http://collector:8780", 1024)


@pytest.mark.parametrize("request_, jobs", [
    ({"models": [SHA] * 1000, "devices": {"all": True}, "runtimes": ["litert"] * 1000, "threads": [1] * 1000,
      "delegates": [["xnnpack"]] * 1000}, 10**12),  # too large from the request's own lists
    ({"models": [SHA] * 10, "devices": {"labels": {"class": "x86"}}, "threads": [1] * 100}, 10**6),  # x 1000 devices
])
def test_submit_refuses_a_huge_matrix_without_building_it(tmp_path, request_, jobs):
    api = fake_api(tmp_path, devices=1000)
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as info:
            api.submit(request_)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 400 and str(info.value) == (
        f"the matrix makes {jobs} jobs; the limit is {MAX_JOBS_PER_REQUEST}")
    assert peak < 4 << 20, peak  # a few small lists and dicts; the matrix would be gigabytes
    assert api.registry.added == [] and api.collector.published == []


def test_submit_gives_each_job_a_random_id(tmp_path):
    api = fake_api(tmp_path, devices=3)
    batch = api.submit({"models": [SHA], "devices": {"all": True}, "threads": [1, 2, 4]})
    ids = [job["job_id"] for job in batch["jobs"]]
    assert len(ids) == 9 and ids == [job["job_id"] for job in api.collector.published]
    assert_unguessable(batch["batch_id"], ids)
