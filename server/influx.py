"""InfluxDB: line protocol points from fleet messages, and the v1-compatible HTTP write/query API.

The v1 API (``POST /write``, InfluxQL on ``/query``) is served by InfluxDB 1.x and, with a DBRP mapping, by 2.x and
3.x, so one writer covers all of them. Points are idempotent: a point's series (measurement + tags) and timestamp
are derived from the message itself (run id, sample time), so writing a redelivered message again overwrites the
same point instead of adding one. docs/influx-schema.md documents the measurements.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from edgebench.agent.fleet import protocol as p

RESULT = "edgebench_result"
TELEMETRY = "edgebench_telemetry"


class InfluxError(Exception):
    """A write or query failed; ``retryable`` is False for a rejected write (bad points: retrying cannot help)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


# ---------------------------------------------------------------- line protocol

def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _field_value(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


def line(measurement: str, tags: dict, fields: dict, ts_ns: int) -> Optional[str]:
    """One line of line protocol; None if no field has a value. Tags are sorted (InfluxDB's canonical order)."""
    tag_text = "".join(f",{_escape_key(k)}={_escape_key(str(v))}" for k, v in sorted(tags.items())
                       if v is not None and str(v) != "")
    field_text = ",".join(f"{_escape_key(k)}={v}" for k, v in
                          ((k, _field_value(raw)) for k, raw in fields.items()) if v is not None)
    if not field_text:
        return None
    return f"{_escape_key(measurement)}{tag_text} {field_text} {int(ts_ns)}"


def run_timestamp_ns(run_id: str, finished_ts: float) -> int:
    """The result's time: when the run finished (ms) plus a sub-millisecond offset from the run id, so two runs that
    finish in the same millisecond stay two points, and one run sent twice stays one."""
    offset = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % 1_000_000
    return int(finished_ts * 1000) * 1_000_000 + offset


def _label_tags(labels: dict) -> dict:
    return {f"label_{k}": v for k, v in (labels or {}).items()}


def _delegate(runtime: dict) -> Optional[str]:
    used = runtime.get("used")
    if isinstance(used, list):
        return ",".join(str(u) for u in used) or None
    return str(used) if used else None


def result_point(msg: p.Message, labels: dict) -> Optional[str]:
    payload = msg.payload
    summary = payload["summary"]
    stats, model, runtime = summary["stats"], summary["model"], summary["runtime"]
    memory = summary.get("memory") or {}
    timing = summary.get("timing") or {}
    physics = summary.get("physics") or {}
    energy = physics.get("energy") or {}
    throttling = physics.get("throttling") or {}
    tags = {"device": msg.device, "model": model.get("name"), "model_sha": str(model.get("sha256", ""))[:12],
            "format": model.get("format"), "runtime": runtime.get("runtime"), "delegate": _delegate(runtime),
            "threads": runtime.get("threads"), **_label_tags(labels)}
    fields: dict[str, Any] = {key: float(stats[key]) for key in p.STATS_KEYS if stats.get(key) is not None}
    fields["count"] = int(stats["count"])
    fields.update(
        std_ms=stats.get("std_ms"), load_ms=timing.get("load_ms"), first_inference_ms=timing.get("first_inference_ms"),
        peak_steady_bytes=memory.get("peak_steady_bytes"), peak_load_bytes=memory.get("peak_load_bytes"),
        energy_per_inference_mj=energy.get("energy_per_inference_mj"), avg_w=energy.get("avg_w"),
        throttled=bool(throttling.get("detected")) if throttling else None,
        valid=bool((summary.get("validity") or {}).get("valid")),
        run_id=payload["run_id"], job_id=payload["job_id"])
    fields = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) and k not in ("count",) else v
              for k, v in fields.items()}
    return line(RESULT, tags, fields, run_timestamp_ns(payload["run_id"], payload.get("finished_ts") or
                                                        payload["ts"]))


def telemetry_points(msg: p.Message, labels: dict) -> list[str]:
    """The ingest hot path: the series key is built once per message; reading names are protocol-checked
    ([a-z][a-z0-9_]*, nothing to escape) and values finite numbers."""
    tags = {"device": msg.device, **_label_tags(labels)}
    series = "".join(f",{_escape_key(k)}={_escape_key(str(v))}" for k, v in sorted(tags.items()) if v)
    return [f"{TELEMETRY}{series} "
            + ",".join(f"{key}={float(value)!r}" for key, value in sample["readings"].items())
            + f" {int(round(sample['ts'] * 1e6)) * 1000}"
            for sample in msg.payload["samples"]]


def points_for(msg: p.Message, labels: dict) -> list[str]:
    if msg.kind == p.EVENTS and msg.payload["event"] == "result":
        point = result_point(msg, labels)
        return [point] if point else []
    if msg.kind == p.TELEMETRY:
        return telemetry_points(msg, labels)
    return []


# ---------------------------------------------------------------- the v1 HTTP API

class InfluxV1:
    def __init__(self, url: str, database: str, username: Optional[str] = None, password: Optional[str] = None,
                 retention_policy: Optional[str] = None, timeout_s: float = 10.0):
        self.url, self.database, self.rp, self.timeout_s = url.rstrip("/"), database, retention_policy, timeout_s
        self.headers = {}
        self._path = urllib.parse.urlsplit(self.url).path
        self._conn: Optional[http.client.HTTPConnection] = None
        self._write_lock = threading.Lock()
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def _request(self, path: str, params: dict, body: Optional[bytes] = None) -> bytes:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        method = "POST" if body is not None else "GET"
        request = urllib.request.Request(url, data=body, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            # 4xx: the points themselves are bad (retrying cannot help); 5xx: the server is in trouble
            raise InfluxError(f"InfluxDB {exc.code} on {path}: {detail}", retryable=exc.code >= 500) from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfluxError(f"InfluxDB unreachable at {self.url}: {getattr(exc, 'reason', exc)}") from None

    def write(self, lines: list[str]) -> None:
        """One batch over a kept-alive connection (a new TCP connection per batch costs more than small batches)."""
        params = {"db": self.database, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        body = "\n".join(lines).encode()
        with self._write_lock:
            try:
                if self._conn is None:
                    parts = urllib.parse.urlsplit(self.url)
                    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                    self._conn = cls(parts.hostname, parts.port, timeout=self.timeout_s)
                self._conn.request("POST", f"{self._path}/write?{urllib.parse.urlencode(params)}", body,
                                   {**self.headers, "Content-Type": "text/plain; charset=utf-8"})
                response = self._conn.getresponse()
                detail = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                raise InfluxError(f"InfluxDB unreachable at {self.url}: {exc}") from None
        if response.status >= 300:
            text = detail[:300].decode("utf-8", "replace")
            # 4xx: the points themselves are bad (retrying cannot help); 5xx: the server is in trouble
            raise InfluxError(f"InfluxDB {response.status} on /write: {text}", retryable=response.status >= 500)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def query(self, text: str) -> list[dict]:
        """InfluxQL; returns the series of the first statement (``[{name, columns, values, tags}]``)."""
        raw = self._request("/query", {"db": self.database, "q": text, "epoch": "ns"})
        result = json.loads(raw)["results"][0]
        if "error" in result:
            raise InfluxError(f"InfluxQL: {result['error']}", retryable=False)
        return result.get("series", [])

    def create_database(self) -> None:
        self._request("/query", {"q": f'CREATE DATABASE "{self.database}"'}, b"")

    def ping(self) -> bool:
        try:
            self._request("/ping", {})
            return True
        except InfluxError:
            return False
