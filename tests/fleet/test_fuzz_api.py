"""Fuzzing the collector's HTTP API from its OpenAPI document (issue 13), with schemathesis 4 (its Python API:
``schemathesis.openapi.from_dict``, ``APIOperation.as_strategy``, ``Case.call`` and ``Case.validate_response``).

One real collector (with Mosquitto, influxd, one agent "fuzz-board" and one uploaded model) serves the whole file.
Every operation of the document the collector serves (``/openapi.json``, checked equal to ``document(ROUTES)``) is
fuzzed with cases schemathesis generates, valid (positive) and invalid (negative) alike, half of them aimed at what
exists (the uploaded model's sha256, a finished job, a throwaway token, a job matrix for the registered device, a
valid model upload, valid gate rules in JSON or TOML):

1. with the admin token: no 5xx, no 401/403, and each response conforms to the document (schemathesis's
   not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance). Job
   matrices that are accepted are at most 8 jobs of short settings, and are cancelled at once; the tokens the fuzz
   uses are never revoked (a revoke of one of them aims at a throwaway token instead);
2. without a token (none, or one schemathesis makes up): every operation but /healthz answers 401 with
   ``WWW-Authenticate: Bearer``; with a read token, every operation that needs submit or admin, and the gates
   routes with ``record=true``, answers 403 naming both roles; with a submit token, every admin operation answers
   403: asserted per case, besides the schemathesis checks;
3. after each operation's fuzz: the collector is alive and healthy, logged no traceback, and InfluxDB holds only
   the measurements, tags and field types server/schema.py declares.

What the fuzz found is kept as explicit cases (FOUND). Deterministic: ``derandomize=True``, no example database,
bounded ``max_examples``, no deadline. ``EDGEBENCH_FUZZ_SCALE=10`` multiplies the examples for a longer local run.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edgebench.agent.fleet import protocol as p
from edgebench.server import openapi
from edgebench.server import schema as db
from edgebench.server.api import ROUTES
from edgebench.server.auth import FIRST_ADMIN, ROLES

from .conftest import Fleet
from .services import Mosquitto

SCALE = float(os.environ.get("EDGEBENCH_FUZZ_SCALE", "1"))
ADMIN_EXAMPLES = 50  # per operation, with the admin token
REFUSED_EXAMPLES = 15  # per operation and caller that must be refused
DEVICE = "fuzz-board"
READ_TOKEN, SUBMIT_TOKEN = "fuzz-read", "fuzz-submit"
PROTECTED = {FIRST_ADMIN, READ_TOKEN, SUBMIT_TOKEN}  # tokens the fuzz must not revoke
SHORT = {"min_runs": 5, "min_duration_s": 0.01, "max_duration_s": 1, "warmup_runs": 1, "warmup_duration_s": 0.01}
GATE_RULE = {"name": "sine p90", "model": "sine*", "metric": "p90_ms", "max": 1000.0}
GATES = "[[gate]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in GATE_RULE.items())
JSON = "application/json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# POST /api/gates/evaluate takes TOML: sent as the text it is (schemathesis knows no TOML; unregistered media types
# are never generated)
schemathesis.serializer.alias("application/toml", "text/plain")
DOCUMENT = openapi.document(ROUTES)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
# the role each documented operation needs (None: no token), from ROUTES as openapi.document() reads it
ROLE = {f"{method} {path.replace('{sha}', '{sha256}').replace('{job}', '{job_id}')}": role
        for method, path, _, role in ROUTES}
GATE_ROUTES = ("GET /api/gates/evaluate", "POST /api/gates/evaluate")  # record=true needs submit


def fuzz(examples: int):
    return settings(derandomize=True, database=None, deadline=None, max_examples=max(1, int(examples * SCALE)),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def cases(label: str, headers: dict | None = None) -> st.SearchStrategy:
    """Valid and invalid cases of one operation, each with a flag: aim it at what exists. ``headers`` (a token):
    fixed, else schemathesis makes up an Authorization header (never a token) or leaves it out."""
    operation, described = OPERATIONS[label], DOCUMENT["paths"][OPERATIONS[label].path][OPERATIONS[label].method]
    modes = [GenerationMode.POSITIVE]
    if headers is None or described.get("parameters") or described.get("requestBody"):
        modes.append(GenerationMode.NEGATIVE)  # something to make invalid besides the token
    return st.tuples(st.one_of([operation.as_strategy(mode, headers=headers) for mode in modes]), st.booleans())


@pytest.fixture(scope="module", autouse=True)
def hypothesis_as_it_was():
    """schemathesis patches Hypothesis process-wide the first time it builds a strategy (its printer prints no
    falsifying example; a 4x larger buffer changes what derandomized tests generate): put Hypothesis back as it was,
    for the test files that run after this one."""
    from hypothesis import core
    from hypothesis.internal import entropy
    from hypothesis.internal.conjecture import engine
    from hypothesis.strategies._internal import collections
    from hypothesis.strategies._internal import core as strategies
    from schemathesis.generation import hypothesis as generation

    patched = [(core, "RepresentationPrinter"), (core, "BUFFER_SIZE"), (engine, "BUFFER_SIZE"),
               (collections, "BUFFER_SIZE"), (strategies, "is_first_param_referenced_in_function"),
               (entropy, "register_random"), (generation.setup, "_is_patched")]
    saved = [(owner, name, getattr(owner, name, False)) for owner, name in patched]
    yield
    for owner, name, value in saved:
        setattr(owner, name, value)


# ---------------------------------------------------------------- the collector

class FuzzedFleet:
    def __init__(self, fleet: Fleet, model: bytes, sha: str, job_id: str):
        self.fleet, self.collector, self.model, self.sha, self.job_id = fleet, fleet.collector, model, sha, job_id
        self.tokens: dict[str, str] = {"admin": fleet.collector.token}
        self.session = requests.Session()
        self.throwaway = 0

    @property
    def url(self) -> str:
        return self.collector.url

    def make_token(self, name: str, role: str) -> str:
        answer = self.session.post(f"{self.url}/api/v1/tokens", json={"name": name, "role": role},
                                   headers=self.bearer("admin"), timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def throwaway_token(self) -> str:
        """The name of a new read token, for a revoke to aim at."""
        while True:
            self.throwaway += 1
            name = f"fuzz-throwaway-{self.throwaway}"
            answer = self.session.post(f"{self.url}/api/v1/tokens", json={"name": name, "role": "read"},
                                       headers=self.bearer("admin"), timeout=30)
            if answer.status_code != 409:  # 409: the fuzz made one of that name
                assert answer.status_code == 201, answer.text
                return name

    def bearer(self, caller: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[caller]}"}

    def cancel(self, jobs: list[dict]) -> None:
        for job in jobs:
            answer = self.session.post(f"{self.url}/api/v1/jobs/{job['job_id']}/cancel", headers=self.bearer("admin"),
                                       timeout=30)
            assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def api(tmp_path_factory, influxd, models):
    root = tmp_path_factory.mktemp("fuzz-api")
    broker = Mosquitto(root / "mosquitto")
    broker.start()
    fleet = Fleet(root, broker, influxd)
    try:
        gates = root / "gates.toml"
        gates.write_text(GATES)
        fleet.start_collector(extra=("--gates", str(gates)))
        fleet.start_agent(DEVICE)
        sha = fleet.upload(models["sine_float.tflite"])["sha256"]
        batch = fleet.submit([sha], {"ids": [DEVICE]}, settings=SHORT)
        fleet.wait_jobs(batch["batch_id"])
        fuzzed = FuzzedFleet(fleet, models["sine_float.tflite"].read_bytes(), sha, batch["jobs"][0]["job_id"])
        fuzzed.tokens["read"] = fuzzed.make_token(READ_TOKEN, "read")
        fuzzed.tokens["submit"] = fuzzed.make_token(SUBMIT_TOKEN, "submit")
        served = fuzzed.session.get(f"{fuzzed.url}/openapi.json", headers=fuzzed.bearer("read"), timeout=30)
        assert served.json() == json.loads(json.dumps(DOCUMENT))  # what is fuzzed is what is served
        yield fuzzed
        fuzzed.session.close()
    finally:
        fleet.close()
        broker.stop()


def log_size(api: FuzzedFleet) -> int:
    return api.collector.log_path.stat().st_size


def assert_unharmed(api: FuzzedFleet, since: int = 0) -> None:
    """The collector is alive and healthy, logged no traceback (after byte ``since`` of its log), and InfluxDB
    holds only declared points."""
    collector = api.collector
    assert collector.alive(), collector.log_text()
    assert collector.health().get("ok") is True, collector.health()
    with open(collector.log_path, "rb") as handle:
        handle.seek(since)
        log = handle.read().decode(errors="replace")
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000):][:6000]
    declared = {m.name: m for m in db.MEASUREMENTS}
    influx = api.fleet.influxd
    present = [row["name"] for row in influx.rows(api.fleet.db, "SHOW MEASUREMENTS")]
    assert set(present) <= set(declared), present
    for name in present:
        measurement = declared[name]
        for row in influx.rows(api.fleet.db, f'SHOW TAG KEYS FROM "{name}"'):
            key = row["tagKey"]
            label = key.startswith(db.LABEL_PREFIX) and p.LABEL_KEY.match(key[len(db.LABEL_PREFIX):])
            assert key in measurement.tags or (measurement.labels and label), (name, key)
        types = {f.name: f.type for f in measurement.fields}
        for row in influx.rows(api.fleet.db, f'SHOW FIELD KEYS FROM "{name}"'):
            if row["fieldKey"] in types or not measurement.open_fields:
                assert types.get(row["fieldKey"]) == row["fieldType"], (name, row)


# ---------------------------------------------------------------- aiming cases at what exists

def _path_name(case: Any, name: str) -> str:
    return urllib.parse.unquote(str(case.path_parameters.get(name, "")))


def aim(api: FuzzedFleet, label: str, case: Any, aimed: bool) -> None:
    """Point a generated case at the uploaded model, the finished job, a throwaway token or the registered device
    (``aimed``), and keep it off what the fuzz must not do (revoke the tokens it uses, run long jobs)."""
    if label.endswith("/revoke") and (aimed or _path_name(case, "name") in PROTECTED):
        case.path_parameters["name"] = api.throwaway_token()
    if not aimed:
        return
    if label == "POST /api/v1/models":
        case.query = {**(case.query or {}), "name": re.sub(r"[^A-Za-z0-9_.+-]", "", str((case.query or {}).get(
            "name")))[:100] or "m.tflite"}
        case.body = api.model
    if label == "POST /api/gates/evaluate":
        case.body = {"gate": [GATE_RULE]} if "json" in (case.media_type or "") else GATES
    if label == "POST /api/gates/verdicts" and isinstance(case.body, dict):  # the strings as tags and fields
        verdicts = [v for v in case.body.get("verdicts") or [] if isinstance(v, dict)][:5] or [{}]
        case.body["verdicts"] = [
            {**v, **{key: v[key] if isinstance(v.get(key), str) else key for key in ("rule", "model", "message")},
             "status": v.get("status") if v.get("status") in ("pass", "fail", "missing", "inconclusive") else "pass"}
            for v in verdicts]
    if "{sha256}" in label:
        case.path_parameters["sha256"] = api.sha
    if "{job_id}" in label:
        case.path_parameters["job_id"] = api.job_id
    if label == "POST /api/v1/jobs" and isinstance(case.body, dict):
        body = case.body
        body["models"] = [api.sha]
        body["devices"] = {"ids": [DEVICE]}
        for axis in ("runtimes", "delegates", "threads"):  # at most 8 jobs
            if isinstance(body.get(axis), list):
                body[axis] = body[axis][:2]
        if "reference" in body:
            body["reference"] = api.sha
        if isinstance(body.get("options"), dict):
            body["options"]["settings"] = SHORT
            body["options"].pop("repeats", None)
        else:
            body["options"] = {"settings": SHORT}


def call(api: FuzzedFleet, case: Any) -> Any:
    response = case.call(base_url=api.url, session=api.session, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)
    case.validate_response(response, checks=CHECKS)
    return response


# ---------------------------------------------------------------- 1. with the admin token

@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_admin_fuzz_conforms_to_the_document(api, label):
    since = log_size(api)

    @fuzz(ADMIN_EXAMPLES)
    @given(cases(label, api.bearer("admin")))
    def run(generated):
        case, aimed = generated
        aim(api, label, case, aimed)
        response = call(api, case)
        assert response.request.headers["Authorization"] == api.bearer("admin")["Authorization"]
        assert response.status_code not in (401, 403), (case.formatted_path, response.text)
        if label == "POST /api/v1/jobs" and response.status_code == 201:
            assert response.json()["jobs"], response.text
            api.cancel(response.json()["jobs"])

    run()
    assert_unharmed(api, since)


# ---------------------------------------------------------------- 2. without a token, with a lower role

def _refusals() -> list:
    expected = []
    for label in sorted(OPERATIONS):
        need = ROLE[label]
        for caller in ("none", "read", "submit"):
            if caller == "none" or (need and ROLES.index(caller) < ROLES.index(need)) or (
                    caller == "read" and label in GATE_ROUTES):
                expected.append(pytest.param(caller, label, id=f"{caller}-{label}"))
    return expected


@pytest.mark.parametrize("caller, label", _refusals())
def test_without_a_good_enough_token_every_route_refuses(api, caller, label):
    since = log_size(api)
    need = ROLE[label]

    @fuzz(REFUSED_EXAMPLES)
    @given(cases(label, None if caller == "none" else api.bearer(caller)))
    def run(generated):
        case, aimed = generated
        aim(api, label, case, aimed)
        if caller == "none":
            if aimed and case.headers:  # else: the Authorization header schemathesis made up (never a token)
                case.headers.pop("Authorization", None)
        elif label in GATE_ROUTES:
            case.query = {**(case.query or {}), "record": "true"}
        response = call(api, case)
        if response.status_code == 404 and response.json()["error"].startswith("no route"):
            return  # a path parameter that does not stay one segment ('/', '..'): no route, nothing to guard
        if need is None:  # /healthz
            assert response.status_code == 200, response.text
        elif caller == "none" or "Authorization" not in response.request.headers:
            assert response.status_code == 401, (case.formatted_path, response.text)
            assert response.headers.get("www-authenticate", [""])[0].startswith("Bearer")  # lower-case keys
        else:
            assert response.status_code == 403, (case.formatted_path, response.text)
            required = "submit" if label in GATE_ROUTES else need
            assert response.json()["error"].endswith(f"has the {caller} role; this route needs {required}")

    run()
    assert_unharmed(api, since)


def test_the_document_itself_needs_a_token(api):
    for path in ("/openapi.json", "/api/v1/openapi.json"):
        assert api.session.get(api.url + path, timeout=30).status_code == 401
        assert api.session.get(api.url + path, headers=api.bearer("read"), timeout=30).status_code == 200


# ---------------------------------------------------------------- what the fuzz found, kept

FOUND = [  # (operation, case, status, content type): each was a 500 or a response the document did not describe
    # a non-ASCII signature: hmac.compare_digest raised TypeError, a 500 with a traceback (now: a refusal)
    ("GET /api/v1/models/{sha256}/content", {"query": {"expires": "9999999999", "sig": "\u00e9"}}, 401, JSON),
    # format=junit / markdown: 200 with application/xml / text/markdown; the document named only JSON
    ("GET /api/gates/evaluate", {"query": {"format": "junit"}, "token": True}, 200, "application/xml"),
    ("GET /api/gates/evaluate", {"query": {"format": "markdown"}, "token": True}, 200, "text/markdown"),
    ("POST /api/gates/evaluate", {"query": {"format": "junit"}, "body": GATES, "media_type": "application/toml",
                                  "token": True}, 200, "application/xml"),
    # an unknown format: 400, which the document did not list for GET
    ("GET /api/gates/evaluate", {"query": {"format": ":"}, "token": True}, 400, JSON),
    # latest beyond 1000: 400, which the document did not list
    ("GET /api/v1/results", {"query": {"latest": "2199023255553"}, "token": True}, 400, JSON),
]


@pytest.mark.parametrize("label, given_case, status, content_type", FOUND)
def test_what_the_fuzz_found_stays_fixed(api, label, given_case, status, content_type):
    given_case = dict(given_case)
    headers = api.bearer("admin") if given_case.pop("token", False) else None
    path = {name: api.sha for name in ("sha256",) if f"{{{name}}}" in label}
    case = OPERATIONS[label].Case(path_parameters=path, headers=headers, **given_case)
    response = call(api, case)
    assert response.status_code == status, response.text
    assert response.headers["content-type"][0].startswith(content_type)


def test_the_document_refuses_unknown_options_and_selectors_as_the_server_does(api):
    """options and devices of a job matrix: unknown keys are 400, and the document says so (additionalProperties
    false), so schemathesis no longer generates them as valid matrices."""
    import jsonschema

    matrix = DOCUMENT["components"]["schemas"]["JobMatrix"]
    for body in ({"models": [api.sha], "devices": {"ids": [DEVICE]}, "options": {"bogus": 1}},
                 {"models": [api.sha], "devices": {"ids": [DEVICE], "bogus": 1}}):
        assert not jsonschema.Draft4Validator(matrix).is_valid(body)
        case = OPERATIONS["POST /api/v1/jobs"].Case(body=body, media_type=JSON, headers=api.bearer("admin"))
        response = call(api, case)
        assert response.status_code == 400 and "unknown key" in response.json()["error"], response.text


# ---------------------------------------------------------------- 3. after the fuzz

def test_after_the_fuzz_the_collector_is_unharmed(api):
    assert_unharmed(api)
