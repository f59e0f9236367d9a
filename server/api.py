"""The collector's HTTP API: falcon routes served by waitress (docs/fleet.md, docs/dependencies.md, and
``/api/v1/openapi.json``).

Models are uploaded as the raw request body (``POST /api/v1/models?name=NAME``) and stored under their sha256;
agents download them from ``GET /api/v1/models/{sha256}/content`` (Range requests resume a download).

waitress owns the connection: it parses and frames requests strictly (a malformed or oversized Content-Length is
refused and the connection closed), reads a whole request before a worker sees it (bodies over 512 KiB are spooled
to a file), times out idle connections and serves file responses from its event loop, so neither slow nor idle
clients hold one of its fixed worker threads. The routes below only see complete, well-framed requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import socket
import ssl
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import falcon
import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from edgebench.agent.errors import ModelError
from edgebench.agent.fleet import protocol as p
from edgebench.agent.modelfile import identify
from edgebench.server import openapi
from edgebench.server.auth import ROLES, Authenticator, Caller, Refused, new_token, token_hash
from edgebench.server.broker_admin import BrokerAdmin, BrokerError
from edgebench.server.collector import Collector
from edgebench.server.metrics import Metrics
from edgebench.server.registry import Registry
from edgebench.server.registry_backends import RegistryUnavailable
from edgebench.server.tls_front import TlsFront, unix_listener

log = logging.getLogger(__name__)
MAX_JSON_BODY = 1 << 20
MAX_JOBS_PER_REQUEST = 10000
MAX_AXIS = 1000  # entries in one list of a job matrix: bounds the work done before the matrix's size is known
MAX_DELEGATE_CHAIN = 16
MAX_VERDICTS = 1000  # GET /api/v1/gates/verdicts?limit=: at most this many, newest first
HTTP_TIMEOUT_S = 30  # a connection with no bytes either way for this long is closed (half-open or kept alive)
HTTP_THREADS = 8  # workers run routes only; transfers to and from clients happen in waitress's event loop
HTTP_CONNECTIONS = 1000  # beyond this many open connections new ones wait in the listen backlog
HTTP_BACKLOG = 1024
API_SOCKET = "api.sock"  # in the data directory: waitress's own address when the TLS front serves the public one
MAX_HEADER_BYTES = 64 * 1024
MATRIX_KEYS = ("models", "devices", "runtimes", "delegates", "threads", "options", "labels", "reference")
OPTION_KEYS = p.JOB_OPTIONS
JSON = "application/json"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REFUSAL_METRIC = {401: "edgebench_http_unauthorized_total", 403: "edgebench_http_forbidden_total"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def _kind(value: object) -> str:
    """The JSON type of a value, for error messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "null")


def _axis(request: dict, key: str, what: str, check: Callable[[Any], bool], default: list, parent: str = "") -> list:
    """One list of the matrix, its length and every entry's type checked; ``default`` when absent or empty."""
    value = request.get(key)
    if value is None or value == []:
        return default
    key = f"{parent}{key}"
    if not isinstance(value, list):
        raise ApiError(400, f"{key}: expected a list, each entry {what}; got {_kind(value)}")
    if len(value) > MAX_AXIS:
        raise ApiError(400, f"{key}: {len(value)} entries; at most {MAX_AXIS}")
    for n, item in enumerate(value):
        if not check(item):
            raise ApiError(400, f"{key}[{n}]: expected {what}; got {_kind(item)}{_preview(item)}")
    return value


def _preview(value: object) -> str:
    """A scalar's value, shortened, for error messages (containers only by their kind)."""
    return f" {json.dumps(value)[:40]}" if isinstance(value, (str, int, float)) else ""


def _is_sha(value: object) -> bool:
    return isinstance(value, str) and bool(p.SHA256.match(value))


def _is_chain(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_DELEGATE_CHAIN and all(isinstance(d, str) for d in value)


def _is_threads(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _object(request: dict, key: str) -> dict:
    value = request.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{key}: expected an object; got {_kind(value)}")
    return value


def parse_matrix(request: dict) -> dict:
    """Types and sizes of a job matrix, checked before anything is looked up or built.

    Refuses a matrix whose size (the product of its lists' lengths, device ids included when given) is over
    MAX_JOBS_PER_REQUEST from the lengths alone: nothing of size proportional to the product is allocated.
    """
    unknown = sorted(set(request) - set(MATRIX_KEYS))
    if unknown:
        raise ApiError(400, f"unknown key(s) {unknown}; a job matrix has {', '.join(MATRIX_KEYS)}")
    matrix = {
        "models": _axis(request, "models", "the sha256 of an uploaded model", _is_sha, []),
        "devices": _selector(request.get("devices")),
        "runtimes": _axis(request, "runtimes", f"one of {', '.join(p.RUNTIMES)} or null",
                          lambda r: r is None or r in p.RUNTIMES, [None]),
        "delegates": _axis(request, "delegates", f"a list of at most {MAX_DELEGATE_CHAIN} delegate names",
                           _is_chain, [[]]),
        "threads": _axis(request, "threads", "an integer or null", _is_threads, [None]),
        "options": _object(request, "options"),
        "labels": _object(request, "labels"),
        "reference": request.get("reference"),
    }
    if not matrix["models"]:
        raise ApiError(400, "models: give the sha256 of uploaded models (POST /api/v1/models first)")
    unknown = sorted(set(matrix["options"]) - set(OPTION_KEYS))
    if unknown:
        raise ApiError(400, f"options: unknown key(s) {unknown}")
    if matrix["reference"] is not None and not _is_sha(matrix["reference"]):
        raise ApiError(400, "reference: give the sha256 of an uploaded model (POST /api/v1/models first)")
    try:
        p.check_labels(matrix["labels"])
    except p.ProtocolError as exc:
        raise ApiError(400, f"labels: {exc}") from None
    check_size(len(matrix["devices"].get("ids") or [None]), matrix)
    return matrix


def _selector(value: object) -> dict:
    if not isinstance(value, dict):
        raise ApiError(400, 'devices: expected an object, {"ids": [...]}, {"labels": {...}} or {"all": true}; '
                       f"got {_kind(value)}")
    unknown = sorted(set(value) - {"ids", "labels", "all"})
    if unknown:
        raise ApiError(400, f"devices: unknown key(s) {unknown}; give ids, labels or all")
    ids = _axis(value, "ids", "a device id", lambda d: isinstance(d, str) and bool(p.DEVICE_ID.match(d)), [],
                "devices.")
    labels = value.get("labels") or {}
    try:
        p.check_labels(labels)
    except p.ProtocolError as exc:
        raise ApiError(400, f"devices.labels: {exc}") from None
    if value.get("all") not in (None, True, False):
        raise ApiError(400, f"devices.all: expected true or false; got {_kind(value['all'])}")
    if not ids and not labels and not value.get("all"):
        raise ApiError(400, "devices: give ids, labels, or all=true")
    return {"ids": ids, "labels": labels, "all": bool(value.get("all"))}


def check_size(devices: int, matrix: dict) -> int:
    """The number of jobs of the matrix on ``devices`` devices, refused above MAX_JOBS_PER_REQUEST."""
    size = math.prod([devices, *(len(matrix[k]) for k in ("models", "runtimes", "delegates", "threads"))])
    if size > MAX_JOBS_PER_REQUEST:
        raise ApiError(400, f"the matrix makes {size} jobs; the limit is {MAX_JOBS_PER_REQUEST}")
    return size


class Api:
    """The request-independent part: what each route does, given parsed input."""

    def __init__(self, registry: Registry, collector: Collector, metrics: Metrics, models_dir: Path,
                 public_url: str, max_model_bytes: int, gates_file: Optional[str] = None, auth: bool = True):
        self.registry, self.collector, self.metrics, self.gates_file = registry, collector, metrics, gates_file
        self.models_dir, self.public_url, self.max_model_bytes = models_dir, public_url.rstrip("/"), max_model_bytes
        self.auth = Authenticator(registry, enabled=auth)
        self.broker_admin: Optional[BrokerAdmin] = None  # devices' MQTT credentials (--broker-admin-user): main.py
        self.broker_device_url: Optional[str] = None  # --broker-device-url: given with a device's credentials
        self.openapi = openapi.document(ROUTES)
        models_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ authentication (server/auth.py)

    def authorize(self, authorization: Optional[str], role: str) -> Caller:
        try:
            return self.auth.caller(authorization, role)
        except Refused as refused:
            self.metrics.inc(REFUSAL_METRIC[refused.status])
            headers = {"WWW-Authenticate": 'Bearer realm="edgebench"'} if refused.status == 401 else {}
            raise ApiError(refused.status, str(refused), headers) from None

    def signed_download(self, req: falcon.Request, sha256: str) -> bool:
        """A board's model download: the URL the collector put in its job, signed (no token)."""
        return self.auth.signed(sha256, req.get_param("expires"), req.get_param("sig"))

    def create_token(self, name: Any, role: Any) -> dict:
        if not isinstance(name, str) or not TOKEN_NAME.match(name):
            raise ApiError(400, "name: 1-64 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise ApiError(400, f"role: one of {', '.join(ROLES)}")
        token = new_token()
        if not self.registry.add_token(name, role, token_hash(token)):
            raise ApiError(409, f"a token named {name!r} exists; revoke it first")
        return {"name": name, "role": role, "token": token}

    def device_credentials(self, device: str, revoke: bool = False) -> dict:
        """The device's MQTT user and role on the broker, made (or its password reset) or revoked through the
        broker admin account (server/broker_admin.py). Not configured: 409, as a missing gates file."""
        try:
            p.check_device_id(device)
        except p.ProtocolError as exc:
            raise ApiError(400, str(exc)) from None
        if self.broker_admin is None:
            raise ApiError(409, "no broker admin account configured: start the collector with --broker-admin-user "
                           "and --broker-admin-password-file (or $EDGEBENCH_BROKER_ADMIN_PASSWORD)")
        try:
            answer = self.broker_admin.revoke(device) if revoke else self.broker_admin.issue(device)
        except BrokerError as exc:
            self.metrics.inc("edgebench_broker_admin_errors_total")
            raise ApiError(exc.status, str(exc)) from None
        self.metrics.inc("edgebench_device_credentials_total")
        if self.broker_device_url and not revoke:
            answer["mqtt_url"] = self.broker_device_url
        return answer

    def model_path(self, sha256: str) -> Path:
        if not p.SHA256.match(sha256):
            raise ApiError(404, "no such model")
        return self.models_dir / sha256

    def upload(self, name: str, stream: Any, length: int) -> dict:
        if not p.NAME.match(name or ""):
            raise ApiError(400, "name must be letters, digits and _.+- (at most 128)")
        if length <= 0 or length > self.max_model_bytes:
            raise ApiError(413 if length > 0 else 400, f"model size must be 1 to {self.max_model_bytes} bytes")
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.models_dir, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = length
                while remaining:
                    block = stream.read(min(remaining, 1 << 20))
                    if not block:
                        raise ApiError(400, "upload ended early")
                    digest.update(block)
                    out.write(block)
                    remaining -= len(block)
            try:
                fmt = identify(tmp).format
            except ModelError as exc:
                raise ApiError(400, str(exc).replace(tmp, name)) from None
            sha = digest.hexdigest()
            os.replace(tmp, self.models_dir / sha)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.metrics.inc("edgebench_models_uploaded_total")
        return self.registry.add_model(sha, name, length, fmt)

    def select_devices(self, selector: dict) -> list[str]:
        devices = self.registry.devices()
        if selector["ids"]:
            known = {d["device_id"] for d in devices}
            unknown = [d for d in selector["ids"] if d not in known]
            if unknown:
                raise ApiError(400, f"unknown device(s): {', '.join(unknown[:10])}")
            return list(selector["ids"])
        labels = selector["labels"]
        return [d["device_id"] for d in devices if all(d["labels"].get(k) == v for k, v in labels.items())]

    def submit(self, request: dict) -> dict:
        matrix = parse_matrix(request)  # refuses a matrix too large before the registry is even asked
        models = [self.registry.model(sha) for sha in matrix["models"]]
        if None in models:
            raise ApiError(400, "models: give the sha256 of uploaded models (POST /api/v1/models first)")
        generates = matrix["options"].get("generation") is not None
        for model in models:  # a runtime that cannot run a model: refused here, not failed on every board
            for runtime in matrix["runtimes"]:
                problem = p.runtime_problem(runtime, model["format"]) or (
                    p.generation_problem(runtime, model["format"]) if generates else None)
                if problem:
                    raise ApiError(400, f"model {model['name']}: {problem}")
        options, reference = dict(matrix["options"]), matrix["reference"]
        if reference is not None:
            if not self.registry.model(reference):
                raise ApiError(400, "reference: give the sha256 of an uploaded model (POST /api/v1/models first)")
            options.update(reference=reference, reference_url=self.content_url(reference))
        labels = matrix["labels"]
        devices = self.select_devices(matrix["devices"])
        if not devices:
            raise ApiError(400, "no device matches the selector")
        check_size(len(devices), matrix)
        batch = time.strftime("b%Y%m%d%H%M%S-", time.gmtime()) + secrets.token_hex(3)
        jobs = [self._job(job_id(batch, n), batch, *combo, dict(options, labels=labels or {}))
                for n, combo in enumerate(_combos(devices, models, matrix))]
        interleave_groups(jobs)
        jobs = [self._payload(job) for job in jobs]
        self.registry.add_jobs(jobs, batch)
        for job in jobs:
            self.collector.publish_job(job)
        self.metrics.inc("edgebench_jobs_submitted_total", len(jobs))
        return {"batch_id": batch, "jobs": [{k: job.get(k) for k in ("job_id", "device", "runtime", "delegates",
                                                                      "threads")} | {"model": job["model"]["name"]}
                                            for job in jobs]}

    def content_url(self, sha256: str) -> str:
        """Where a board downloads the model: signed, so it needs no token (server/auth.py)."""
        return f"{self.public_url}/api/v1/models/{sha256}/content?{self.auth.sign(sha256)}"

    def _job(self, job_id: str, batch: str, device: str, model: dict, runtime: Optional[str], delegates: list,
             threads: Optional[int], options: dict) -> p.Job:
        """One job of the matrix, with only its runtime's chain (a LiteRT job carries no execution providers)."""
        if p.chain_option(runtime, model["format"]) != "providers":
            options = {**options, "providers": []}
        return p.Job(job_id=job_id, device=device, batch_id=batch, runtime=runtime, delegates=list(delegates or []),
                     threads=threads, model=p.JobModel(sha256=model["sha256"], size_bytes=model["size_bytes"],
                                                       name=model["name"], url=self.content_url(model["sha256"])),
                     **options)

    @staticmethod
    def _payload(job: p.Job) -> dict:
        """The payload that goes to the job's device, checked as the agent will check it."""
        try:
            return job.to_payload(time.time())
        except p.ProtocolError as exc:
            raise ApiError(400, f"invalid job: {exc}") from None

    # ------------------------------------------------------------ release gates (edgebench.server.gates.rules)

    def gate_rules(self, body: Optional[bytes], content_type: str) -> list:
        """The rules POSTed (TOML, or JSON ``{"gate": [...]}``), else those of ``--gates FILE``."""
        from edgebench.agent.errors import UsageError
        from edgebench.server.gates import rules as gates

        try:
            if body is None:
                if not self.gates_file:
                    raise ApiError(409, "no gates file configured (edgebench server --gates FILE); POST the rules "
                                   "to /api/gates/evaluate instead")
                return gates.load_rules(self.gates_file)
            if "json" in content_type:
                return gates.rules_from_document(parse_json(body), "request body")
            try:
                text = body.decode()
            except UnicodeDecodeError:
                raise ApiError(400, "body is not UTF-8 TOML") from None
            return gates.rules_from_toml(text, "request body")
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None

    def evaluate_gates(self, rules: list, record: bool) -> tuple[list, dict]:
        """The same evaluation as ``edgebench gate --server``: gates.evaluate on the newest results of each
        configuration (as many as a gate compares)."""
        from edgebench.server.gates import rules as gates

        results = [gates.result_from_fleet(row, "collector")
                   for row in self.registry.results(latest=gates.MAX_RUNS)]
        verdicts = gates.evaluate(rules, results)
        document = gates.document(verdicts)
        if record:
            document["recorded"] = self.record_verdicts(document)
        return verdicts, document

    def record_verdicts(self, document: dict) -> int:
        """Write verdicts to the registry (the collector page's gate history, GET /api/v1/gates/verdicts) and to
        InfluxDB (measurement edgebench_gate, the gate-history dashboard)."""
        from edgebench.server.gates import rules as gates
        from edgebench.server.influx import InfluxError

        verdicts = _checked_verdicts(document)
        now = time.time()
        self.registry.add_verdicts([gates.verdict_record(v) for v in verdicts], now)
        lines = gates.verdict_lines(verdicts, int(now * 1e9))
        try:
            if lines:
                self.collector.influx.write(lines)
        except InfluxError as exc:
            raise ApiError(503, f"verdicts not recorded in InfluxDB (kept in the registry): {exc}") from None
        return len(lines)

    def cancel(self, job_id: str) -> dict:
        rows = self.registry.jobs(job_id=job_id)
        if not rows:
            raise ApiError(404, f"no job {job_id}")
        self.collector.cancel_job(rows[0]["device_id"], job_id)
        return {"job_id": job_id, "cancel": "sent"}


def _checked_verdicts(document: Any) -> list[dict]:
    """The verdicts of a POSTed edgebench.gates/1 document, each field of the type the registry's columns and
    InfluxDB's point need (a text value or a NaN would be refused there, after part of it was written)."""
    from edgebench.server.gates import rules as gates

    verdicts = document.get("verdicts") if isinstance(document, dict) else None
    required = ("rule", "model", "status", "message")
    if not isinstance(verdicts, list) or not all(
            isinstance(v, dict) and all(isinstance(v.get(k), str) for k in required) for v in verdicts):
        raise ApiError(400, "expected an edgebench.gates/1 document: verdicts with rule, model, status, message")
    if any(v["status"] not in gates.STATUSES for v in verdicts):
        raise ApiError(400, f"verdict status must be one of {', '.join(gates.STATUSES)}")
    for key in ("config", "board_class", "result_model"):
        if any(not isinstance(v.get(key) or "", str) for v in verdicts):
            raise ApiError(400, f"verdict {key} must be a string")
    if not all(_is_number_or_none(v.get("value")) for v in verdicts):
        raise ApiError(400, "verdict value must be a finite number or null")
    return verdicts


def _is_number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def interleave_groups(jobs: list[p.Job]) -> None:
    """Jobs of one model for one board (runtimes, delegate chains, thread counts), with repeats, are one group
    (at most protocol.MAX_JOB_GROUP): the board runs their repeats interleaved, so drift hits them alike and
    their comparison is paired (docs/fleet.md)."""
    together: dict[tuple, list[p.Job]] = {}
    for job in jobs:
        if job.repeats >= 2:
            together.setdefault((job.device, job.model.sha256), []).append(job)
    for members in together.values():
        for start in range(0, len(members), p.MAX_JOB_GROUP):
            chunk = members[start:start + p.MAX_JOB_GROUP]
            if len(chunk) > 1:
                for job in chunk:
                    job.group = [member.job_id for member in chunk]


def job_id(batch: str, n: int) -> str:
    """``{batch}-{n:04d}-{64 random bits}``: the index keeps a batch's jobs in matrix order in listings; the random
    part makes one job's id useless for guessing another's (devices see their own jobs' ids and the batch id)."""
    return f"{batch}-{n:04d}-{secrets.token_hex(8)}"


def _combos(devices: list, models: list, matrix: dict):
    """device x model x runtime x delegates x threads, lazily (the size was checked by check_size). A runtime gets
    only its own chain (``protocol.chain_option``): ONNX Runtime's jobs, and those of runtimes that take no chain
    (ExecuTorch, TorchScript), are not multiplied by LiteRT's delegate chains."""
    for device in devices:
        for model in models:
            for runtime in matrix["runtimes"]:
                takes_delegates = p.chain_option(runtime, model["format"]) == "delegates"
                chains = matrix["delegates"] if takes_delegates else [[]]
                for delegates in chains:
                    for threads in matrix["threads"]:
                        yield device, model, runtime, delegates, threads


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"body is not JSON: {exc}") from None


# ---------------------------------------------------------------- HTTP: routes (falcon)

ROUTES: list[tuple[str, str, str, Optional[str]]] = [  # method, falcon URI template, Routes method, role needed
    ("GET", "/healthz", "healthz", None),  # load balancers and probes: no token
    ("GET", "/metrics", "metrics", "read"),
    ("GET", "/api/v1/openapi.json", "openapi", "read"),
    ("GET", "/openapi.json", "openapi", "read"),  # where OpenAPI tools look first
    ("GET", "/api/v1/devices", "devices", "read"),
    ("GET", "/api/v1/models", "models", "read"),
    ("POST", "/api/v1/models", "upload", "submit"),
    ("GET", "/api/v1/models/{sha}", "model", "read"),
    ("GET", "/api/v1/models/{sha}/content", "content", "read"),  # or a signed URL (boards): Routes.content
    ("POST", "/api/v1/jobs", "submit", "submit"),
    ("GET", "/api/v1/jobs", "jobs", "read"),
    ("GET", "/api/v1/jobs/{job}", "job", "read"),
    ("POST", "/api/v1/jobs/{job}/cancel", "cancel", "submit"),
    ("GET", "/api/v1/results", "results", "read"),
    ("GET", "/api/v1/dead-letters", "dead_letters", "read"),
    ("GET", "/api/gates/evaluate", "gates_configured", "read"),
    ("POST", "/api/gates/evaluate", "gates_posted", "read"),  # ?record=true writes verdicts: submit (checked there)
    ("POST", "/api/gates/verdicts", "gates_record", "submit"),
    ("GET", "/api/v1/gates/verdicts", "gate_verdicts", "read"),
    ("GET", "/api/v1/tokens", "tokens", "admin"),
    ("POST", "/api/v1/tokens", "token_create", "admin"),
    ("POST", "/api/v1/tokens/{name}/revoke", "token_revoke", "admin"),
    ("POST", "/api/v1/devices/{device_id}/credentials", "credentials_create", "admin"),
    ("DELETE", "/api/v1/devices/{device_id}/credentials", "credentials_revoke", "admin"),
]
TRUE = ("1", "true", "yes")
RANGE = re.compile(r"^bytes=(?:(\d{1,19})-(\d{0,19})|-(\d{1,19}))$")


def _send(resp: falcon.Response, body: bytes, status: int | str = 200, content_type: str = JSON) -> None:
    resp.status, resp.content_type, resp.data = status, content_type, body


def _json(resp: falcon.Response, value: Any, status: int = 200) -> None:
    _send(resp, json.dumps(value, default=str).encode(), status)


def _body(req: falcon.Request, limit: int = MAX_JSON_BODY) -> bytes:
    length = req.content_length or 0
    if length > limit:
        raise ApiError(413, f"request body too large: {length} bytes; the limit is {limit}")
    return req.bounded_stream.read(length) if length else b""


def _body_json(req: falcon.Request) -> dict:
    value = parse_json(_body(req) or b"{}")
    if not isinstance(value, dict):
        raise ApiError(400, f"body must be a JSON object; got {_kind(value)}")
    return value


def _flag(req: falcon.Request, name: str) -> bool:
    return (req.get_param(name) or "").lower() in TRUE


def _int_param(req: falcon.Request, name: str, default: int, low: int, high: int) -> int:
    text = req.get_param(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(text)


def byte_range(header: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """The first and last byte of a ``Range: bytes=`` header's single range; None for no header, or for one this
    server ignores (several ranges, other units: RFC 9110 lets a server answer those with the whole file)."""
    match = RANGE.match(header.strip()) if header else None
    if not match:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        start, end = size - min(int(suffix), size), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None  # an invalid range: ignored
    if start >= size or end < start:
        raise ApiError(416, f"range {header.strip()} is beyond the model's {size} bytes",
                       {"Content-Range": f"bytes */{size}"})
    return start, end


class Routes:
    """The HTTP side of each route: parameters and body in, JSON out; the work is Api's."""

    def __init__(self, api: Api):
        self.api = api

    def healthz(self, req: falcon.Request, resp: falcon.Response) -> None:
        from edgebench.server.collector import describe

        state = describe(self.api.collector)
        _json(resp, state, 200 if state["ok"] else 503)

    def metrics(self, req: falcon.Request, resp: falcon.Response) -> None:
        gauges = {"edgebench_oldest_unacked_seconds": self.api.collector.oldest_held_s()}
        _send(resp, self.api.metrics.render(gauges).encode(), content_type="text/plain; version=0.0.4")

    def openapi(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, self.api.openapi)

    def devices(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"devices": self.api.registry.devices()})

    def models(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"models": self.api.registry.models()})

    def upload(self, req: falcon.Request, resp: falcon.Response) -> None:
        # waitress has the whole body already (spooled to a file when large): this copies it, hashing it
        _json(resp, self.api.upload(req.get_param("name") or "", req.bounded_stream, req.content_length or 0), 201)

    def model(self, req: falcon.Request, resp: falcon.Response, sha: str) -> None:
        model = self.api.registry.model(sha) if p.SHA256.match(sha) else None
        if not model:
            raise ApiError(404, "no such model")
        _json(resp, model)

    def content(self, req: falcon.Request, resp: falcon.Response, sha: str) -> None:
        path = self.api.model_path(sha)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - waitress closes it once sent (wsgi.file_wrapper)
        except FileNotFoundError:
            raise ApiError(404, "no such model") from None
        try:
            size = os.fstat(handle.fileno()).st_size
            span = byte_range(req.get_header("Range"), size)
        except BaseException:
            handle.close()
            raise
        start, end = span or (0, size - 1)
        handle.seek(start)
        resp.status = 206 if span else 200
        resp.content_type = "application/octet-stream"
        resp.set_header("Accept-Ranges", "bytes")
        if span:
            resp.set_header("Content-Range", f"bytes {start}-{end}/{size}")
        resp.content_length, resp.stream = end - start + 1, handle

    def submit(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, self.api.submit(_body_json(req)), 201)

    def jobs(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"jobs": self.api.registry.jobs(batch_id=req.get_param("batch"))})

    def job(self, req: falcon.Request, resp: falcon.Response, job: str) -> None:
        rows = self.api.registry.jobs(job_id=job) if p.JOB_ID.match(job) else []
        if not rows:
            raise ApiError(404, f"no job {job[:128]}")
        _json(resp, rows[0])

    def cancel(self, req: falcon.Request, resp: falcon.Response, job: str) -> None:
        if not p.JOB_ID.match(job):
            raise ApiError(404, f"no job {job[:128]}")
        _json(resp, self.api.cancel(job), 202)

    def results(self, req: falcon.Request, resp: falcon.Response) -> None:
        text = (req.get_param("latest") or "").lower()  # N: the N newest of each configuration; 1 or true: the newest
        latest = _int_param(req, "latest", 0, 0, 1000) if not text or text.isdigit() else int(text in TRUE)
        _json(resp, {"results": self.api.registry.results(
            batch_id=req.get_param("batch"), samples=_flag(req, "samples"), latest=latest)})

    def dead_letters(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = _int_param(req, "limit", 100, 1, 10000)
        _json(resp, {"dead_letters": self.api.registry.dead_letters(limit)})

    def _gates(self, req: falcon.Request, resp: falcon.Response, body: Optional[bytes]) -> None:
        from edgebench.server.gates import rules as gates

        fmt = req.get_param("format") or "json"
        if fmt not in ("json", "junit", "markdown"):
            raise ApiError(400, "format must be json, junit or markdown")
        rules = self.api.gate_rules(body, req.content_type or "")
        verdicts, document = self.api.evaluate_gates(rules, _flag(req, "record"))
        if fmt == "junit":
            _send(resp, gates.junit_xml(verdicts).encode(), content_type="application/xml")
        elif fmt == "markdown":
            _send(resp, gates.markdown(verdicts).encode(), content_type="text/markdown; charset=utf-8")
        else:
            _json(resp, document)

    def gates_configured(self, req: falcon.Request, resp: falcon.Response) -> None:
        if _flag(req, "record"):
            self.api.authorize(req.get_header("Authorization"), "submit")
        self._gates(req, resp, None)

    def gates_posted(self, req: falcon.Request, resp: falcon.Response) -> None:
        if _flag(req, "record"):  # writing verdicts is the submit role's
            self.api.authorize(req.get_header("Authorization"), "submit")
        self._gates(req, resp, _body(req))

    def tokens(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"tokens": self.api.registry.tokens()})

    def token_create(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _body_json(req)
        _json(resp, self.api.create_token(body.get("name"), body.get("role")), 201)

    def token_revoke(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if not self.api.registry.revoke_token(name):
            raise ApiError(404, f"no unrevoked token named {name[:64]!r}")
        _json(resp, {"name": name, "revoked": True})

    def credentials_create(self, req: falcon.Request, resp: falcon.Response, device_id: str) -> None:
        _json(resp, self.api.device_credentials(device_id), 201)

    def credentials_revoke(self, req: falcon.Request, resp: falcon.Response, device_id: str) -> None:
        _json(resp, self.api.device_credentials(device_id, revoke=True))

    def gates_record(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, {"written": self.api.record_verdicts(_body_json(req))}, 201)

    def gate_verdicts(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = _int_param(req, "limit", 100, 1, MAX_VERDICTS)
        _json(resp, {"verdicts": self.api.registry.verdicts(limit)})


def _api_error(req: falcon.Request, resp: falcon.Response, exc: ApiError, params: dict) -> None:
    _json(resp, {"error": str(exc)}, exc.status)
    for name, value in exc.headers.items():
        resp.set_header(name, value)


def _registry_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    """The shared registry's database is down or restarting: not a bug, and the request may be made again."""
    log.warning("%s %s: %s", req.method, req.path, exc)
    _json(resp, {"error": f"the registry is unavailable: {exc}"}, 503)
    resp.set_header("Retry-After", "5")


def _internal_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
    """A bug, not bad input: logged with its traceback; one bad request must not kill the server."""
    log.exception("%s %s failed", req.method, req.path)
    _json(resp, {"error": f"internal error: {type(exc).__name__}"}, 500)


def _http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """falcon's own refusals (no route, wrong method, bad header) in the API's error shape."""
    message = exc.description or exc.title
    if isinstance(exc, (falcon.HTTPRouteNotFound, falcon.HTTPMethodNotAllowed)):
        message = f"no route {req.method} {req.path[:200]}"
    _send(resp, json.dumps({"error": message}).encode(), exc.status)


def _page(req: falcon.Request, resp: falcon.Response) -> None:
    """The collector's page: no token needed, as it holds no data; its script asks the API with the user's."""
    from edgebench.server import page

    _send(resp, page.render().encode(), content_type="text/html; charset=utf-8")
    resp.set_header("Cache-Control", "no-cache")
    # its inline scripts may talk to this collector only: a token typed into the page cannot be sent elsewhere
    resp.set_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; form-action 'none'; "
                    "frame-ancestors 'none'")


def _guarded(api: Api, role: Optional[str], name: str, responder: Callable) -> Callable:
    """The responder behind the role check: a request without a good enough token never reaches it."""
    if role is None:
        return responder

    def guarded(req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        if not (name == "content" and api.signed_download(req, params.get("sha", ""))):
            req.context.caller = api.authorize(req.get_header("Authorization"), role)
        responder(req, resp, **params)

    return guarded


def make_app(api: Api) -> falcon.App:
    routes, app = Routes(api), falcon.App()
    responders: dict[str, dict[str, Callable]] = {}
    for method, path, name, role in ROUTES:
        responders.setdefault(path, {})[f"on_{method.lower()}"] = _guarded(api, role, name, getattr(routes, name))
    for path, methods in responders.items():
        app.add_route(path, types.SimpleNamespace(**methods))
    app.add_route("/", types.SimpleNamespace(on_get=_page))  # not an API route: it holds no data (server/page.py)
    app.add_error_handler(Exception, _internal_error)
    app.add_error_handler(ApiError, _api_error)
    app.add_error_handler(RegistryUnavailable, _registry_unavailable)
    app.set_error_serializer(_http_error)
    return app


# ---------------------------------------------------------------- HTTP: the server (waitress)

class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (malformed framing, a body over the limit) in the API's error shape; the
    connection is closed after them, so nothing left of a refused request is read as the next one."""

    def execute(self) -> None:
        error = self.request.error
        detail = error.body
        if error.code == 413:  # waitress refuses a body of max_request_body_size bytes or more
            detail = f"the limit is {self.channel.server.adj.max_request_body_size - 1} bytes"
        body = json.dumps({"error": f"{error.reason}: {detail}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", JSON))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


class HttpServer:
    """waitress behind the interface main.py drives (socketserver's): serve_forever, shutdown, server_address;
    with TLS, waitress listens on a private Unix socket behind the TLS front (server/tls_front.py)."""

    def __init__(self, server: Any, front: Optional[TlsFront] = None, private: Optional[Path] = None):
        self._server, self._front, self._private = server, front, private

    @property
    def server_address(self) -> tuple[str, int]:
        if self._front is not None:
            return self._front.server_address
        return self._server.effective_host, self._server.effective_port

    def serve_forever(self) -> None:
        if self._front is not None:
            self._front.start()
        self._server.run()

    def shutdown(self) -> None:
        if self._front is not None:
            self._front.close()  # the public address first: no new connections, none half-relayed
        self._server.close()  # the listening socket: no new connections
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        if self._private is not None:
            self._private.unlink(missing_ok=True)


def serve(api: Api, host: str, port: int, timeout: int = HTTP_TIMEOUT_S, spool: Optional[Path] = None,
          tls: Optional[ssl.SSLContext] = None) -> HttpServer:
    """Bind now (port 0 picks one: ``server_address``); serve from ``serve_forever()``. ``spool``: where large
    request bodies wait (the collector's data disk; default next to the models). ``tls``: serve HTTPS, through the
    TLS front, with waitress on ``API_SOCKET`` in the spool's parent (the data directory)."""
    spool = spool or api.models_dir.parent / "spool"
    _spool_on_data_disk(spool)
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=HTTP_BACKLOG)
    private = spool.parent / API_SOCKET if tls else None
    limit = _connection_limit(HTTP_CONNECTIONS, 4 if tls else 2)
    listener = sock
    try:
        listener = unix_listener(private) if private else sock
        server = waitress.create_server(
            make_app(api), sockets=[listener], ident="edgebench-collector", threads=HTTP_THREADS,
            connection_limit=limit, backlog=HTTP_BACKLOG, channel_timeout=timeout,
            cleanup_interval=max(1, min(30, timeout // 2)), asyncore_use_poll=True,  # select() stops at fd 1024
            max_request_header_size=MAX_HEADER_BYTES, url_scheme="https" if tls else "http",
            max_request_body_size=max(api.max_model_bytes, MAX_JSON_BODY) + 1)  # waitress refuses >= this
    except BaseException:
        for opened in {sock, listener}:
            opened.close()
        raise
    server.channel_class = _Channel
    front = TlsFront(sock, tls, private, timeout, limit) if tls else None
    return HttpServer(server, front, private)


def _spool_on_data_disk(spool: Path) -> None:
    """waitress spools request bodies over 512 KiB with tempfile.TemporaryFile(): a model upload (up to
    --max-model-size) must land on the data disk, not in a tmpfs /tmp (RAM). An explicit $TMPDIR wins."""
    if not os.environ.get("TMPDIR"):
        spool.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(spool)


def _connection_limit(wanted: int, files_each: int = 2) -> int:
    """Open connections allowed: ``wanted``, within the descriptors the process may open (raising its soft limit
    when the hard one allows), with room left for SQLite, MQTT, models being sent and the spool files.
    ``files_each``: a connection's socket and its spool or model file; behind the TLS front also the front's two."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return wanted
    need = wanted * files_each + 128
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return wanted if soft == resource.RLIM_INFINITY else max(16, min(wanted, (soft - 128) // files_each))
