"""InfluxDB: line protocol points from fleet messages, and the v1-compatible HTTP write/query API.

The v1 API (``POST /write``, InfluxQL on ``/query``) is served by InfluxDB 1.x and, with a DBRP mapping, by 2.x and
3.x, so one writer covers all of them. Points are idempotent: a point's series (measurement + tags) and timestamp
are derived from the message itself (run id, sample time), so writing a redelivered message again overwrites the
same point instead of adding one. The measurements, their tags, typed fields and time are edgebench.server.schema;
the points are built by edgebench.server.lineprotocol.
"""

from __future__ import annotations

import base64
import http.client
import json
import operator
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from edgebench.agent.fleet import protocol as p
from edgebench.server import lineprotocol as lp
from edgebench.server import schema as db
from edgebench.server.result_metrics import drift_fields, repeat_units, result_rows, summary_fields


class InfluxError(Exception):
    """A write or query failed; ``retryable`` is False for a rejected write (bad points: retrying cannot help)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


# ---------------------------------------------------------------- points (schema: edgebench.server.schema)

def _delegate(runtime: dict) -> Optional[str]:
    used = runtime.get("used")
    if isinstance(used, list):
        return ",".join(str(u) for u in used) or None
    return str(used) if used else None


def result_points(msg: p.Message, labels: dict) -> list[str]:
    """The result's summary point; one ``edgebench_repeat`` point per repeat of its interval (tag ``unit``: its
    index; at the result's time); its placement and per-op rows (``edgebench_placement`` per backend,
    ``edgebench_fallback_op`` and ``edgebench_op_type`` per op type: tags ``backend``, ``op``; at the result's
    time); then one ``edgebench_latency`` point per raw latency sample it carries: same tags, at the result's
    time + the sample's index in ns (a device finishes at most one run per millisecond, so a run's samples never
    meet another run's; a redelivery overwrites the same points)."""
    point = result_point(msg, labels)
    if point is None:
        return []
    tags, ts = _result_tags(msg, labels), _result_time_ns(msg.payload)
    points = [point]
    for index, unit in enumerate(repeat_units(msg.payload["summary"])):
        line = lp.line(db.REPEAT.name, {**tags, db.UNIT: index}, db.REPEAT.values(unit), ts)
        if line:
            points.append(line)
    points += row_points(result_rows(msg.payload["summary"]), tags, ts)
    latency = (msg.payload.get("samples") or {}).get("latency_ns") or []
    if latency:
        points += lp.indexed_integer_points(lp.series(db.LATENCY.name, tags), "latency_ns", latency, ts)
    return points


def row_points(rows: dict[str, list[dict]], tags: dict, ts: int) -> list[str]:
    """One point per row of ``result_rows``: the result's tags plus the row's own (``backend``, ``op``), its fields
    typed by the schema, at the result's time (rows of one result differ by their tags)."""
    points = []
    for measurement in db.RESULT_ROWS:
        own = [tag for tag in measurement.tags if tag not in db.RESULT_TAGS]
        for row in rows[measurement.name]:
            line = lp.line(measurement.name, {**tags, **{tag: row[tag] for tag in own}},
                           measurement.values({k: v for k, v in row.items() if k not in own}), ts)
            if line:
                points.append(line)
    return points


def _result_tags(msg: p.Message, labels: dict) -> dict:
    summary = msg.payload["summary"]
    model, runtime = summary["model"], summary["runtime"]
    return {db.DEVICE: msg.device, db.MODEL: model.get("name"), db.MODEL_SHA: str(model.get("sha256", ""))[:12],
            db.FORMAT: model.get("format"), db.RUNTIME: runtime.get("runtime"), db.DELEGATE: _delegate(runtime),
            db.THREADS: runtime.get("threads"), **db.label_tags(labels)}


def _result_time_ns(payload: dict) -> int:
    return db.result_time_ns(payload["run_id"], payload.get("finished_ts") or payload["ts"])


def result_point(msg: p.Message, labels: dict) -> Optional[str]:
    payload = msg.payload
    tags = _result_tags(msg, labels)
    drift = payload.get("drift") or {}
    if drift.get("reference_sha"):  # on the result point only: the latency points keep their series
        tags[db.REFERENCE] = str(drift["reference_sha"])[:12]
    fields = db.RESULT.values({
        **summary_fields(payload["summary"]), **drift_fields(drift), "run_id": payload["run_id"],
        "job_id": payload["job_id"], "samples_total": int((payload.get("samples") or {}).get("total") or 0) or None})
    return lp.line(db.RESULT.name, tags, fields, _result_time_ns(payload))


_READINGS, _TS = operator.itemgetter("readings"), operator.itemgetter("ts")


def telemetry_points(msg: p.Message, labels: dict) -> list[str]:
    """The ingest hot path: the series key is built once per message; reading names are protocol-checked
    ([a-z][a-z0-9_]*, nothing to escape) and values finite numbers."""
    series = lp.series(db.TELEMETRY.name, {db.DEVICE: msg.device, **db.label_tags(labels)})
    samples = msg.payload["samples"]
    readings = list(map(_READINGS, samples))
    keys = tuple(readings[0])
    if all(map(keys.__eq__, map(tuple, readings))):  # the same readings in the same order (an agent's samples are)
        lines = lp.float_columns(series, keys, zip(*map(dict.values, readings)),
                                 map(db.telemetry_time_ns, map(_TS, samples)))
        if lines is not None:
            return lines
    return lp.float_points(series, [(sample["readings"].items(), db.telemetry_time_ns(sample["ts"]))
                                    for sample in samples])


def device_points(msg: p.Message, labels: dict, received_ts: float) -> list[str]:
    """Device state for the fleet dashboards (InfluxQL cannot read the registry): one point per status message
    (online as 1/0 so panels can sum it; at the receive time, since a last will carries no useful ts) and one
    per heartbeat (at its own ts)."""
    tags = {db.DEVICE: msg.device, **db.label_tags(labels)}
    payload = msg.payload
    if msg.kind == p.STATUS:
        fields = {"online": int(payload["state"] == "online"), "state": payload["state"],
                  "agent_version": payload.get("agent_version")}
        ts = received_ts
    else:
        fields = {"job_id": payload.get("job_id") or "",
                  **{key: payload.get(key) for key in ("uptime_s", "outbox_depth", "telemetry_dropped",
                                                       *p.HEARTBEAT_COUNTERS)}}
        ts = payload.get("ts") or received_ts
    point = lp.line(db.DEVICE_STATE.name, tags, db.DEVICE_STATE.values(fields), int(ts * 1e9))
    return [point] if point else []


def points_for(msg: p.Message, labels: dict, received_ts: Optional[float] = None) -> list[str]:
    if msg.kind == p.EVENTS and msg.payload["event"] == "result":
        return result_points(msg, labels)
    if msg.kind == p.TELEMETRY:
        return telemetry_points(msg, labels)
    if msg.kind in (p.STATUS, p.HEARTBEAT):
        return device_points(msg, labels, received_ts if received_ts is not None else time.time())
    return []


# ---------------------------------------------------------------- the v1 HTTP API

class InfluxV2:
    """InfluxDB 2.x/3.x's native write API (``POST /api/v2/write``: token, org, bucket) through ``influxdb-client``.

    Only writes: the collector never queries InfluxDB, and the release gates and dashboards read through InfluxQL
    (the v1-compatible ``/query``, a DBRP mapping on 2.x). The bucket must exist (create it with ``influx bucket
    create``); retries are the collector's own (backoff, manual ack), so the client's are off."""

    def __init__(self, url: str, org: str, bucket: str, token: Optional[str], timeout_s: float = 10.0):
        try:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
        except ImportError:
            from edgebench.agent.errors import UsageError

            raise UsageError("--influx-bucket needs the influxdb-client package (pip install edgebench[server])") \
                from None
        self.url, self.org, self.bucket = url.rstrip("/"), org, bucket
        self.client = InfluxDBClient(url=self.url, token=token or "", org=org, timeout=int(timeout_s * 1000),
                                     retries=False)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self.write_api.write(bucket=self.bucket, org=self.org, record="\n".join(lines),
                                 write_precision=WritePrecision.NS)
        except ApiException as exc:
            detail = str(exc.body or exc.reason or "")[:300]
            # 4xx but 429 (too many requests): the points or the credentials are wrong, retrying cannot help
            raise InfluxError(f"InfluxDB {exc.status} on /api/v2/write: {detail}",
                              retryable=exc.status is None or exc.status >= 500 or exc.status == 429) from None
        except Exception as exc:  # noqa: BLE001 - urllib3's connection errors, timeouts
            raise InfluxError(f"InfluxDB unreachable at {self.url}: {type(exc).__name__}: {exc}") from None

    def create_database(self) -> None:
        """Nothing to create: the bucket is made by the server's administrator."""

    def close(self) -> None:
        self.client.close()


def writer(url: str, database: str, username: Optional[str] = None, password: Optional[str] = None,
           token: Optional[str] = None, org: Optional[str] = None, bucket: Optional[str] = None):
    """The v2 native writer when a bucket is given, else the v1 HTTP API."""
    if bucket:
        return InfluxV2(url, org or "", bucket, token)
    return InfluxV1(url, database, username, password)


class InfluxV1:
    def __init__(self, url: str, database: str, username: Optional[str] = None, password: Optional[str] = None,
                 retention_policy: Optional[str] = None, timeout_s: float = 10.0):
        self.url, self.database, self.rp, self.timeout_s = url.rstrip("/"), database, retention_policy, timeout_s
        self.headers = {}
        self._path = urllib.parse.urlsplit(self.url).path
        self._local = threading.local()  # a kept-alive connection per writing thread (the collector's writers)
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
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                parts = urllib.parse.urlsplit(self.url)
                cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                conn = self._local.conn = cls(parts.hostname, parts.port, timeout=self.timeout_s)
            conn.request("POST", f"{self._path}/write?{urllib.parse.urlencode(params)}", body,
                         {**self.headers, "Content-Type": "text/plain; charset=utf-8"})
            response = conn.getresponse()
            detail = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            raise InfluxError(f"InfluxDB unreachable at {self.url}: {exc}") from None
        if response.status >= 300:
            text = detail[:300].decode("utf-8", "replace")
            # 4xx: the points themselves are bad (retrying cannot help); 5xx: the server is in trouble
            raise InfluxError(f"InfluxDB {response.status} on /write: {text}", retryable=response.status >= 500)

    def _close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

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
