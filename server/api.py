"""The collector's HTTP API (stdlib http.server, one thread per request); docs/fleet.md and ``/api/v1/openapi.json``.

Models are uploaded as the raw request body (``POST /api/v1/models?name=NAME``) and stored under their sha256;
agents download them from ``GET /api/v1/models/{sha256}/content`` (Range requests resume a download).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import tempfile
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from edgebench.agent.errors import ModelError
from edgebench.agent.fleet import protocol as p
from edgebench.agent.modelfile import identify

from .collector import Collector
from .metrics import Metrics
from .openapi import OPENAPI
from .registry import Registry

log = logging.getLogger(__name__)
MAX_JSON_BODY = 1 << 20
MAX_JOBS_PER_REQUEST = 10000


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Api:
    """The request-independent part: what each route does, given parsed input."""

    def __init__(self, registry: Registry, collector: Collector, metrics: Metrics, models_dir: Path,
                 public_url: str, max_model_bytes: int, gates_file: Optional[str] = None):
        self.registry, self.collector, self.metrics, self.gates_file = registry, collector, metrics, gates_file
        self.models_dir, self.public_url, self.max_model_bytes = models_dir, public_url.rstrip("/"), max_model_bytes
        models_dir.mkdir(parents=True, exist_ok=True)

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
        if selector.get("ids"):
            known = {d["device_id"] for d in devices}
            unknown = [d for d in selector["ids"] if d not in known]
            if unknown:
                raise ApiError(400, f"unknown device(s): {', '.join(map(str, unknown[:10]))}")
            return list(selector["ids"])
        labels = selector.get("labels") or {}
        if not labels and not selector.get("all"):
            raise ApiError(400, "devices: give ids, labels, or all=true")
        return [d["device_id"] for d in devices if all(d["labels"].get(k) == v for k, v in labels.items())]

    def submit(self, request: dict) -> dict:
        models = [self.registry.model(sha) for sha in request.get("models") or []]
        if not models or None in models:
            raise ApiError(400, "models: give the sha256 of uploaded models (POST /api/v1/models first)")
        devices = self.select_devices(request.get("devices") or {})
        if not devices:
            raise ApiError(400, "no device matches the selector")
        axes = [request.get("runtimes") or [None], request.get("delegates") or [[]], request.get("threads") or [None]]
        options = request.get("options") or {}
        unknown = set(options) - {"settings", "shape", "input", "seed", "sensors", "timeout_s", "providers"}
        if unknown:
            raise ApiError(400, f"options: unknown key(s) {sorted(unknown)}")
        reference = request.get("reference")
        if reference is not None:
            if not isinstance(reference, str) or not self.registry.model(reference):
                raise ApiError(400, "reference: give the sha256 of an uploaded model (POST /api/v1/models first)")
            options = dict(options, reference=reference)
        combos = list(itertools.product(devices, models, *axes))
        if len(combos) > MAX_JOBS_PER_REQUEST:
            raise ApiError(400, f"the matrix makes {len(combos)} jobs; the limit is {MAX_JOBS_PER_REQUEST}")
        labels = request.get("labels") or {}
        try:
            p.check_labels(labels)
        except p.ProtocolError as exc:
            raise ApiError(400, f"labels: {exc}") from None
        batch = time.strftime("b%Y%m%d%H%M%S-", time.gmtime()) + secrets.token_hex(3)
        jobs = [self._job(f"{batch}-{n:04d}", batch, *combo, dict(options, labels=labels or None))
                for n, combo in enumerate(combos)]
        self.registry.add_jobs(jobs, batch)
        for job in jobs:
            self.collector.publish_job(job)
        self.metrics.inc("edgebench_jobs_submitted_total", len(jobs))
        return {"batch_id": batch, "jobs": [{k: job.get(k) for k in ("job_id", "device", "runtime", "delegates",
                                                                      "threads")} | {"model": job["model"]["name"]}
                                            for job in jobs]}

    def _job(self, job_id: str, batch: str, device: str, model: dict, runtime: Optional[str], delegates: list,
             threads: Optional[int], options: dict) -> dict:
        job = p.envelope(device, time.time(), job_id=job_id, batch_id=batch, model={
            "sha256": model["sha256"], "size_bytes": model["size_bytes"], "name": model["name"],
            "url": f"{self.public_url}/api/v1/models/{model['sha256']}/content"})
        job.update({k: v for k, v in {"runtime": runtime, "delegates": delegates or None, "threads": threads,
                                      **options}.items() if v is not None})
        try:
            p.check_job(job)
        except p.ProtocolError as exc:
            raise ApiError(400, f"invalid job: {exc}") from None
        return job

    # ------------------------------------------------------------ release gates (edgebench.agent.gates)

    def gate_rules(self, body: Optional[bytes], content_type: str) -> list:
        """The rules POSTed (TOML, or JSON ``{"gate": [...]}``), else those of ``--gates FILE``."""
        from edgebench.agent import gates
        from edgebench.agent.errors import UsageError

        try:
            if body is None:
                if not self.gates_file:
                    raise ApiError(409, "no gates file configured (edgebench server --gates FILE); POST the rules "
                                   "to /api/gates/evaluate instead")
                return gates.load_rules(self.gates_file)
            if "json" in content_type:
                try:
                    document = json.loads(body)
                except ValueError:
                    raise ApiError(400, "body is not JSON") from None
                return gates.rules_from_document(document, "request body")
            try:
                text = body.decode()
            except UnicodeDecodeError:
                raise ApiError(400, "body is not UTF-8 TOML") from None
            return gates.rules_from_toml(text, "request body")
        except UsageError as exc:
            raise ApiError(400, str(exc)) from None

    def evaluate_gates(self, rules: list, record: bool) -> tuple[list, dict]:
        """The same evaluation as ``edgebench gate --server``: gates.evaluate on the latest results with samples."""
        from edgebench.agent import gates

        results = [gates.result_from_fleet(row, "collector")
                   for row in self.registry.results(samples=True, latest=True)]
        verdicts = gates.evaluate(rules, results)
        document = gates.document(verdicts)
        if record:
            document["recorded"] = self.record_verdicts(document)
        return verdicts, document

    def record_verdicts(self, document: dict) -> int:
        """Write verdicts to InfluxDB (measurement edgebench_gate, the gate-history dashboard)."""
        from edgebench.agent import gates

        from .influx import InfluxError

        verdicts = document.get("verdicts") if isinstance(document, dict) else None
        required = ("rule", "model", "status", "message")
        if not isinstance(verdicts, list) or not all(
                isinstance(v, dict) and all(isinstance(v.get(k), str) for k in required) for v in verdicts):
            raise ApiError(400, "expected an edgebench.gates/1 document: verdicts with rule, model, status, message")
        if any(v["status"] not in (gates.PASS, gates.FAIL, gates.MISSING) for v in verdicts):
            raise ApiError(400, "verdict status must be pass, fail or missing")
        lines = gates.verdict_lines(verdicts, time.time_ns())
        try:
            if lines:
                self.collector.influx.write(lines)
        except InfluxError as exc:
            raise ApiError(503, f"verdicts not recorded: {exc}") from None
        return len(lines)

    def cancel(self, job_id: str) -> dict:
        rows = self.registry.jobs(job_id=job_id)
        if not rows:
            raise ApiError(404, f"no job {job_id}")
        self.collector.cancel_job(rows[0]["device_id"], job_id)
        return {"job_id": job_id, "cancel": "sent"}


ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"^/healthz$"), "healthz"),
    ("GET", re.compile(r"^/metrics$"), "metrics"),
    ("GET", re.compile(r"^/api/v1/openapi\.json$"), "openapi"),
    ("GET", re.compile(r"^/api/v1/devices$"), "devices"),
    ("GET", re.compile(r"^/api/v1/models$"), "models"),
    ("POST", re.compile(r"^/api/v1/models$"), "upload"),
    ("GET", re.compile(r"^/api/v1/models/(?P<sha>[0-9a-f]{64})$"), "model"),
    ("GET", re.compile(r"^/api/v1/models/(?P<sha>[0-9a-f]{64})/content$"), "content"),
    ("POST", re.compile(r"^/api/v1/jobs$"), "submit"),
    ("GET", re.compile(r"^/api/v1/jobs$"), "jobs"),
    ("GET", re.compile(r"^/api/v1/jobs/(?P<job>[A-Za-z0-9_.-]+)$"), "job"),
    ("POST", re.compile(r"^/api/v1/jobs/(?P<job>[A-Za-z0-9_.-]+)/cancel$"), "cancel"),
    ("GET", re.compile(r"^/api/v1/results$"), "results"),
    ("GET", re.compile(r"^/api/v1/dead-letters$"), "dead_letters"),
    ("GET", re.compile(r"^/api/gates/evaluate$"), "gates_configured"),
    ("POST", re.compile(r"^/api/gates/evaluate$"), "gates_posted"),
    ("POST", re.compile(r"^/api/gates/verdicts$"), "gates_record"),
]
TRUE = ("1", "true", "yes")


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "edgebench-collector"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            try:
                for verb, pattern, name in ROUTES:
                    match = pattern.match(url.path)
                    if match and verb == method:
                        route: Callable[..., None] = getattr(self, f"r_{name}")
                        route(**match.groupdict())
                        return
                raise ApiError(404 if not any(pat.match(url.path) for _, pat, _ in ROUTES) else 405,
                               f"no route {method} {url.path}")
            except ApiError as exc:
                self._json({"error": str(exc)}, exc.status)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
                log.exception("%s %s failed", method, url.path)
                self._json({"error": f"internal error: {type(exc).__name__}"}, 500)

        # ---------------------------------------------------- helpers

        def _send(self, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: int = 200) -> None:
            self._send(json.dumps(value, default=str).encode(), status)

        def _body_json(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_JSON_BODY:
                raise ApiError(413, "request body too large")
            try:
                value = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                raise ApiError(400, "body is not JSON") from None
            if not isinstance(value, dict):
                raise ApiError(400, "body must be a JSON object")
            return value

        # ---------------------------------------------------- routes

        def r_healthz(self) -> None:
            from .collector import describe

            state = describe(api.collector)
            ok = state["mqtt"] and state["influx"]
            self._json({"ok": ok, **state}, 200 if ok else 503)

        def r_metrics(self) -> None:
            self._send(api.metrics.render().encode(), content_type="text/plain; version=0.0.4")

        def r_openapi(self) -> None:
            self._json(OPENAPI)

        def r_devices(self) -> None:
            self._json({"devices": api.registry.devices()})

        def r_models(self) -> None:
            self._json({"models": api.registry.models()})

        def r_upload(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._json(api.upload(self.query.get("name", ""), self.rfile, length), 201)

        def r_model(self, sha: str) -> None:
            model = api.registry.model(sha)
            if not model:
                raise ApiError(404, "no such model")
            self._json(model)

        def r_content(self, sha: str) -> None:
            path = api.model_path(sha)
            if not path.exists():
                raise ApiError(404, "no such model")
            size = path.stat().st_size
            start = 0
            match = re.match(r"^bytes=(\d+)-$", self.headers.get("Range") or "")
            if match and int(match.group(1)) < size:
                start = int(match.group(1))
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            with open(path, "rb") as handle:
                handle.seek(start)
                for block in iter(lambda: handle.read(1 << 20), b""):
                    self.wfile.write(block)

        def r_submit(self) -> None:
            self._json(api.submit(self._body_json()), 201)

        def r_jobs(self) -> None:
            self._json({"jobs": api.registry.jobs(batch_id=self.query.get("batch"))})

        def r_job(self, job: str) -> None:
            rows = api.registry.jobs(job_id=job)
            if not rows:
                raise ApiError(404, f"no job {job}")
            self._json(rows[0])

        def r_cancel(self, job: str) -> None:
            self._json(api.cancel(job), 202)

        def r_results(self) -> None:
            self._json({"results": api.registry.results(
                batch_id=self.query.get("batch"), samples=self.query.get("samples", "").lower() in TRUE,
                latest=self.query.get("latest", "").lower() in TRUE)})

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_JSON_BODY:
                raise ApiError(413, "request body too large")
            return self.rfile.read(length)

        def _gates(self, body: Optional[bytes]) -> None:
            from edgebench.agent import gates

            rules = api.gate_rules(body, self.headers.get("Content-Type") or "")
            verdicts, document = api.evaluate_gates(rules, self.query.get("record", "").lower() in TRUE)
            fmt = self.query.get("format", "json")
            if fmt == "junit":
                self._send(gates.junit_xml(verdicts).encode(), content_type="application/xml")
            elif fmt == "markdown":
                self._send(gates.markdown(verdicts).encode(), content_type="text/markdown; charset=utf-8")
            elif fmt == "json":
                self._json(document)
            else:
                raise ApiError(400, "format must be json, junit or markdown")

        def r_gates_configured(self) -> None:
            self._gates(None)

        def r_gates_posted(self) -> None:
            self._gates(self._body())

        def r_gates_record(self) -> None:
            self._json({"written": api.record_verdicts(self._body_json())}, 201)

        def r_dead_letters(self) -> None:
            self._json({"dead_letters": api.registry.dead_letters(int(self.query.get("limit", 100)))})

    return Handler


def serve(api: Api, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(api))
    server.daemon_threads = True
    return server
