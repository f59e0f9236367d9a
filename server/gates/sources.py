"""Where `edgebench gate` gets fleet results and records its verdicts: the collector's HTTP API or InfluxDB.

Only the fetching lives here; the evaluation is ``gates.evaluate`` whatever the source. Standard library only (the
InfluxDB v1 HTTP API with InfluxQL, which InfluxDB 1.x, 2.x and 3.x serve), so a CI runner needs nothing more.

- Collector: ``GET /api/v1/results?latest=1&samples=1`` returns the newest result of every device x model x
  runtime x delegates x labels with its labels and raw latency samples (exactly what the gates' filters need).
- InfluxDB: the newest ``edgebench_result`` point of every series (``GROUP BY *``) for the summary metrics; the raw
  samples of the results a latency-regression rule compares come from ``edgebench_latency`` (one point per sample,
  the result's tags, at the result's time + the sample index in ns). Names and times: edgebench.server.schema; what a
  gate metric is, from the point's fields: edgebench.server.result_metrics (as for a report).
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
from edgebench.server import schema as db
from edgebench.server.gates import rules as gates
from edgebench.server.result_metrics import gate_metrics

log = logging.getLogger(__name__)


class SourceError(EdgebenchError):
    """The collector or InfluxDB cannot be reached or refused the request (exit code 2: no data to decide on)."""

    exit_code = 2


# ---------------------------------------------------------------- the collector

def _http(method: str, url: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
          timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise SourceError(f"{method} {url.split('?')[0]}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"cannot reach {url.split('?')[0]}: {getattr(exc, 'reason', exc)}") from None


def results_from_server(server: str) -> list[gates.Result]:
    url = server.rstrip("/") + "/api/v1/results?latest=1&samples=1"
    rows = json.loads(_http("GET", url))["results"]
    return [gates.result_from_fleet(row, "collector") for row in rows]


def record_to_server(server: str, document: dict) -> int:
    """Hand the verdicts to the collector, which writes them to its InfluxDB (``POST /api/gates/verdicts``)."""
    answer = json.loads(_http("POST", server.rstrip("/") + "/api/gates/verdicts", json.dumps(document).encode(),
                              {"Content-Type": "application/json"}))
    return int(answer.get("written", 0))


# ---------------------------------------------------------------- InfluxDB (v1 HTTP API, InfluxQL)

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
        answer = json.loads(_http("GET", f"{self.url}/query?{params}", headers=self.headers, timeout=self.timeout_s))
        result = answer["results"][0]
        if "error" in result:
            raise SourceError(f"InfluxDB {self.url}: {result['error']}")
        return result.get("series", [])

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        params = urllib.parse.urlencode({"db": self.database, "precision": "ns"})
        _http("POST", f"{self.url}/write?{params}", "\n".join(lines).encode(),
              {**self.headers, "Content-Type": "text/plain; charset=utf-8"}, self.timeout_s)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _result_from_point(tags: dict, point: dict, source: str) -> gates.Result:
    labels = db.labels_of(tags)
    labels.setdefault("device", tags.get(db.DEVICE, ""))
    # no drift metrics from fleet results (docs/gates.md): --influx-url judges as --server does
    metrics = gate_metrics({k: v for k, v in point.items() if not k.startswith("drift_")})
    return gates.Result(model=tags.get(db.MODEL, ""), labels=labels, runtime=tags.get(db.RUNTIME, ""),
                        delegate=tags.get(db.DELEGATE, ""), variant=None, created=gates.utc_iso(point["time"] / 1e9),
                        metrics=metrics, latency_ns=(),
                        source=f"{source} {db.RESULT.name} run {point.get('run_id')} on {tags.get(db.DEVICE)}")


def _needs_samples(result: gates.Result, rules: Sequence[gates.Rule]) -> bool:
    return any(rule.baseline is not None and gates.METRICS[rule.metric][2] is not None and gates.matches(rule, result)
               for rule in rules)


def results_from_influx(influx: Influx, rules: Optional[Sequence[gates.Rule]] = None) -> list[gates.Result]:
    """The newest result point of every series; raw samples only for results a latency-regression rule needs
    (every result when ``rules`` is None)."""
    source = f"{influx.url}/{influx.database}"
    results = []
    for series in influx.query(f'SELECT * FROM "{db.RESULT.name}" GROUP BY * ORDER BY time DESC LIMIT 1'):
        tags = series.get("tags") or {}
        point = dict(zip(series["columns"], series["values"][0]))
        result = _result_from_point(tags, point, source)
        if rules is None or _needs_samples(result, rules):
            # the latency points carry the result's tags but not those of the result point alone (reference)
            where = " AND ".join(f'"{k}" = {_quote(v or "")}' for k, v in sorted(tags.items())
                                 if k not in db.RESULT_ONLY_TAGS)
            start, end = db.latency_window(int(point["time"]))
            text = f'SELECT "latency_ns" FROM "{db.LATENCY.name}" WHERE {where} AND time >= {start} AND time < {end}'
            rows = influx.query(text)
            result.latency_ns = [int(v[1]) for s in rows for v in s["values"]]
        results.append(result)
    return results


def record_to_influx(influx: Influx, document: dict, ts_ns: Optional[int] = None) -> int:
    lines = gates.verdict_lines(document["verdicts"], ts_ns if ts_ns is not None else time.time_ns())
    influx.write(lines)
    return len(lines)
