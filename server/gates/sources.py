"""Where `edgebench gate` gets fleet results and records its verdicts: the collector's HTTP API or InfluxDB.

Only the fetching lives here; the evaluation is ``gates.evaluate`` whatever the source. Standard library only (the
InfluxDB v1 HTTP API with InfluxQL, which InfluxDB 1.x, 2.x and 3.x serve), so a CI runner needs nothing more.

- Collector: ``GET /api/v1/results?latest=10`` returns the 10 newest results of every configuration (device x
  model x runtime x delegate chain asked for x what ran x threads x labels) with their labels and summaries, whose
  ``stats.interval`` holds each repeat's values (exactly what the gates' filters, groups and sides need).
- InfluxDB: the newest ``edgebench_result`` points of every series (``GROUP BY *``) for the summary metrics and the
  intervals; the repeats' values of the results a latency-regression rule compares come from ``edgebench_repeat``
  (one point per unit, the result's tags and ``unit``, at the result's time). Names and times:
  edgebench.server.schema; what a gate metric, an estimate and a unit are, from the point's fields:
  edgebench.server.result_metrics (as for a report).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional, Sequence

from edgebench.agent.errors import EdgebenchError
from edgebench.agent.tls import client_context, unverified
from edgebench.server import schema as db
from edgebench.server.gates import rules as gates

log = logging.getLogger(__name__)


class SourceError(EdgebenchError):
    """The collector or InfluxDB cannot be reached or refused the request (exit code 2: no data to decide on)."""

    exit_code = 2


# ---------------------------------------------------------------- the collector

def _http(method: str, url: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
          timeout: float = 60.0, ca: Optional[str] = None, give_ca: str = "--server-ca FILE") -> bytes:
    """``ca``: the CA that verifies an https:// collector (``--server-ca``; None: the system's store); ``give_ca``:
    how to give one, for the message when a certificate does not verify."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=client_context(ca, "--server-ca")) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise SourceError(f"{method} {url.split('?')[0]}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach {url.split('?')[0]}: {unverified(reason, give_ca) or reason}") from None


def _bearer(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def results_from_server(server: str, token: Optional[str] = None, ca: Optional[str] = None) -> list[gates.Result]:
    url = server.rstrip("/") + f"/api/v1/results?latest={gates.MAX_RUNS}"
    rows = json.loads(_http("GET", url, headers=_bearer(token), ca=ca))["results"]
    return [gates.result_from_fleet(row, "collector") for row in rows]


def record_to_server(server: str, document: dict, token: Optional[str] = None, ca: Optional[str] = None) -> int:
    """Hand the verdicts to the collector, which writes them to its InfluxDB (``POST /api/gates/verdicts``)."""
    answer = json.loads(_http("POST", server.rstrip("/") + "/api/gates/verdicts", json.dumps(document).encode(),
                              {"Content-Type": "application/json", **_bearer(token)}, ca=ca))
    return int(answer.get("written", 0))


# ---------------------------------------------------------------- InfluxDB (v1 HTTP API, InfluxQL)

SYSTEM_CA = "$SSL_CERT_FILE=FILE (OpenSSL's system store)"  # InfluxDB over https: no flag of its own


class Influx:
    def __init__(self, url: str, database: str, username: Optional[str] = None, password: Optional[str] = None,
                 timeout_s: float = 60.0):
        self.url, self.database, self.timeout_s = url.rstrip("/"), database, timeout_s
        self.headers: dict = {}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def query(self, text: str) -> list[dict]:
        params = urllib.parse.urlencode({"db": self.database, "q": text, "epoch": "ns"})
        answer = json.loads(_http("GET", f"{self.url}/query?{params}", headers=self.headers, timeout=self.timeout_s,
                                  give_ca=SYSTEM_CA))
        result = answer["results"][0]
        if "error" in result:
            raise SourceError(f"InfluxDB {self.url}: {result['error']}")
        return result.get("series", [])

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        params = urllib.parse.urlencode({"db": self.database, "precision": "ns"})
        _http("POST", f"{self.url}/write?{params}", "\n".join(lines).encode(),
              {**self.headers, "Content-Type": "text/plain; charset=utf-8"}, self.timeout_s, give_ca=SYSTEM_CA)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Points read per series: the gates compare at most MAX_RUNS runs of a configuration, and a series (device x tags)
# may hold several configurations that differ only in what a field says (the delegate chain asked for).
POINTS_PER_SERIES = 5 * gates.MAX_RUNS


def _result_from_point(tags: dict, point: dict, units: Sequence[dict], source: str) -> gates.Result:
    labels = db.labels_of(tags)
    labels.setdefault("device", tags.get(db.DEVICE, ""))
    # no drift metrics from fleet results (docs/gates.md): --influx-url judges as --server does
    fields = {k: v for k, v in point.items() if not k.startswith("drift_")}
    return gates.result_from_fields(
        fields, units, model=tags.get(db.MODEL, ""), labels=labels, runtime=tags.get(db.RUNTIME, ""),
        delegate=tags.get(db.DELEGATE, ""), threads=gates.threads_of(tags.get(db.THREADS)), variant=None,
        created=gates.utc_iso(point["time"] / 1e9),
        source=f"{source} {db.RESULT.name} run {point.get('run_id')} on {tags.get(db.DEVICE)}")


def _needs_units(tags: dict, point: dict, rules: Optional[Sequence[gates.Rule]]) -> bool:
    """Whether a point's repeats are read: it has repeats, and a latency-regression rule could compare it."""
    if point.get("interval_method") != "between-repeats":
        return False
    if rules is None:
        return True
    probe = _result_from_point(tags, point, (), "")
    return any(rule.baseline is not None and rule.latency and gates.matches(rule, probe) for rule in rules)


def _units(influx: Influx, tags: dict, times: Sequence[int]) -> dict[int, list[dict]]:
    """The ``edgebench_repeat`` points of one series' results at ``times``: result time -> its units in order."""
    # the repeat points carry the result's tags but not those of the result point alone (reference)
    where = " AND ".join(f'"{k}" = {_quote(v or "")}' for k, v in sorted(tags.items())
                         if k not in db.RESULT_ONLY_TAGS)
    columns = ", ".join(f'"{f}"' for f in db.REPEAT.field_names())
    text = (f'SELECT {columns} FROM "{db.REPEAT.name}" WHERE {where} AND time >= {min(times)} '
            f'AND time <= {max(times)} GROUP BY "{db.UNIT}"')
    found: dict[int, dict[int, dict]] = {}
    for series in influx.query(text):
        unit = int((series.get("tags") or {}).get(db.UNIT) or 0)
        for row in series["values"]:
            values = dict(zip(series["columns"], row))
            found.setdefault(int(values.pop("time")), {})[unit] = values
    wanted = set(times)
    return {ts: [units[i] for i in sorted(units)] for ts, units in found.items() if ts in wanted}


def results_from_influx(influx: Influx, rules: Optional[Sequence[gates.Rule]] = None) -> list[gates.Result]:
    """The newest result points of every series (up to POINTS_PER_SERIES); the repeats' values only for results a
    latency-regression rule could compare (every result with repeats when ``rules`` is None)."""
    source = f"{influx.url}/{influx.database}"
    results = []
    text = f'SELECT * FROM "{db.RESULT.name}" GROUP BY * ORDER BY time DESC LIMIT {POINTS_PER_SERIES}'
    for series in influx.query(text):
        tags = series.get("tags") or {}
        points = [dict(zip(series["columns"], row)) for row in series["values"]]
        times = [int(point["time"]) for point in points if _needs_units(tags, point, rules)]
        units = _units(influx, tags, times) if times else {}
        results += [_result_from_point(tags, point, units.get(int(point["time"]), ()), source) for point in points]
    return results


def record_to_influx(influx: Influx, document: dict, ts_ns: Optional[int] = None) -> int:
    lines = gates.verdict_lines(document["verdicts"], ts_ns if ts_ns is not None else time.time_ns())
    influx.write(lines)
    return len(lines)
