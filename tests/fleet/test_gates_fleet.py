"""Release gates on fleet data: real agent, collector, Mosquitto and influxd; results pushed with release labels;
`edgebench gate --server` / `--influx-url` and the collector's /api/gates/evaluate judge them with the same code."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from xml.etree import ElementTree

import pytest

from .services import wait_for

FAST = ["--min-runs", "50", "--min-duration", "0.1", "--warmup-runs", "2", "--warmup-duration", "0.05"]

LOOSE = """
[[gate]]
name = "sine p90 budget"
model = "sine_*"
devices = "class=x86"
metric = "p90_ms"
max = 1000.0

[[gate]]
name = "sine p90 vs v1"
model = "sine_*"
devices = "class=x86"
metric = "p90_ms"
baseline = "v1"
max_regression_pct = 1000
"""

TIGHT = """
[[gate]]
name = "sine p90 tight"
model = "sine_*"
devices = "class=x86"
metric = "p90_ms"
max = 0.000001
"""

MISSING = """
[[gate]]
model = "no_such_model*"
metric = "p90_ms"
max = 10.0
"""


def _http(url: str, body: bytes = None, content_type: str = "application/toml"):
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        data = response.read()
    return json.loads(data) if response.headers.get("Content-Type", "").startswith("application/json") else data


def _comparable(verdicts: list[dict]) -> list[tuple]:
    return [(v["rule"], v["board_class"], v["status"], v["value"], v["result_model"],
             (v["regression"] or {}).get("ratio")) for v in verdicts]


@pytest.fixture(scope="module")
def gated_fleet(tmp_path_factory, influxd):
    """One fleet for the module: two pushes of the same model, labelled release=v1 and release=v2."""
    from .conftest import Fleet
    from .services import Mosquitto

    root = tmp_path_factory.mktemp("gates-fleet")
    broker = Mosquitto(root / "mosquitto")
    broker.start()
    fleet = Fleet(root, broker, influxd)
    rules = root / "loose.toml"
    rules.write_text(LOOSE)
    try:
        collector = fleet.start_collector(extra=("--gates", str(rules)))
        fleet.start_agent("gate-board", "class=x86,site=lab1")
        yield fleet, collector, root
    finally:
        fleet.close()
        broker.stop()


@pytest.fixture(scope="module")
def sine_model_module(models):
    return models["sine_float.tflite"]


@pytest.fixture(scope="module")
def pushed(gated_fleet, sine_model_module):
    from tests.conftest import run_cli

    fleet, collector, root = gated_fleet
    batches = []
    for release in ("v1", "v2"):
        result = run_cli("push", sine_model_module, "--server", collector.url, "--devices", "class=x86",
                         "--no-sensors", *FAST, "--label", f"release={release}", "--wait", "--wait-timeout", "120",
                         "--json", str(root / f"push-{release}.json"), timeout=180)
        assert result.code == 0, result
        batches.append(json.loads((root / f"push-{release}.json").read_text()))
    fleet.wait_results(2)
    return batches


def test_results_carry_release_labels_and_raw_samples(gated_fleet, pushed):
    fleet, collector, _ = gated_fleet
    rows = collector.get("/api/v1/results?samples=1")["results"]
    assert [row["labels"]["release"] for row in rows] == ["v1", "v2"]
    assert all(row["labels"]["class"] == "x86" and row["labels"]["site"] == "lab1" for row in rows)
    for row in rows:
        assert 36 <= len(row["latency_ns"]) <= 10000 and all(isinstance(x, int) and x > 0 for x in row["latency_ns"])
    assert "latency_ns" not in collector.get("/api/v1/results")["results"][0]
    points = fleet.results_in_influx()
    assert sorted(pt["label_release"] for pt in points) == ["v1", "v2"]
    for pt in points:  # every carried sample is a point of edgebench_latency, with the result's tags
        count = fleet.influxd.rows(fleet.db, f"SELECT count(latency_ns) FROM edgebench_latency "
                                             f"WHERE label_release = '{pt['label_release']}'")[0]["count"]
        carried = next(len(r["latency_ns"]) for r in rows if r["job_id"] == pt["job_id"])
        assert count == carried and pt["samples_total"] >= carried and pt["delegate_coverage"] in (0.0, 1.0)


def test_gate_on_the_fleet_passes_loose_fails_tight_and_says_missing(gated_fleet, pushed, cli, tmp_path):
    fleet, collector, root = gated_fleet
    loose, tight, missing = (tmp_path / name for name in ("loose.toml", "tight.toml", "missing.toml"))
    loose.write_text(LOOSE)
    tight.write_text(TIGHT)
    missing.write_text(MISSING)

    ok = cli("gate", "--rules", loose, "--server", collector.url, "--junit", tmp_path / "ok.xml", "--json", "-")
    assert ok.code == 0, ok
    document = ok.json()
    assert [v["status"] for v in document["verdicts"]] == ["pass", "pass"]
    regression = document["verdicts"][1]["regression"]
    assert regression["decided"] and regression["baseline_n"] >= 36 and regression["candidate_n"] >= 36
    suite = ElementTree.parse(tmp_path / "ok.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0" and suite.get("errors") == "0"

    bad = cli("gate", "--rules", tight, "--server", collector.url, "--junit", tmp_path / "bad.xml",
              "--markdown", tmp_path / "bad.md")
    assert bad.code == 1, bad
    failure = ElementTree.parse(tmp_path / "bad.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and "over the budget" in failure.get("message")
    assert "❌ fail" in (tmp_path / "bad.md").read_text()

    gone = cli("gate", "--rules", missing, "--server", collector.url, "--junit", tmp_path / "gone.xml")
    assert gone.code == 2 and "no result matches" in gone.out
    assert ElementTree.parse(tmp_path / "gone.xml").getroot().find("testsuite/testcase/error") is not None
    unreachable = cli("gate", "--rules", loose, "--server", "http://127.0.0.1:9")
    assert unreachable.code == 2 and unreachable.err.startswith("edgebench: error: cannot reach")

    # the same rules on InfluxDB: summary fields for budgets, edgebench_latency for the regression
    influx = cli("gate", "--rules", loose, "--influx-url", fleet.influxd.url, "--influx-db", fleet.db, "--json", "-")
    assert influx.code == 0, influx
    assert _comparable(influx.json()["verdicts"]) == _comparable(document["verdicts"])
    influx_bad = cli("gate", "--rules", tight, "--influx-url", fleet.influxd.url, "--influx-db", fleet.db,
                     "--junit", tmp_path / "influx-bad.xml")
    assert influx_bad.code == 1
    assert ElementTree.parse(tmp_path / "influx-bad.xml").getroot().find("testsuite/testcase/failure") is not None

    # the collector answers with the same evaluation: its configured gates file, or rules POSTed
    configured = collector.get("/api/gates/evaluate")
    assert configured["verdicts"] == document["verdicts"] and configured["exit_code"] == 0
    posted = _http(collector.url + "/api/gates/evaluate", TIGHT.encode())
    assert posted["exit_code"] == 1 and posted["verdicts"][0]["status"] == "fail"
    as_json = _http(collector.url + "/api/gates/evaluate", json.dumps({"gate": [{
        "model": "sine_*", "metric": "p90_ms", "max": 1000.0}]}).encode(), "application/json")
    assert as_json["exit_code"] == 0
    junit = _http(collector.url + "/api/gates/evaluate?format=junit", TIGHT.encode())
    assert b"<failure" in junit

    # verdicts went to InfluxDB for the gate-history dashboard: tags rule, model, board_class, status
    def gate_rows():
        return fleet.influxd.rows(fleet.db, 'SELECT * FROM edgebench_gate')

    rows = wait_for(lambda: (lambda r: r if len(r) >= 7 else None)(gate_rows()), 10, "recorded verdicts")
    assert {r["status"] for r in rows} == {"pass", "fail", "missing"}
    passing = [r for r in rows if r["rule"] == "sine p90 budget"]
    assert passing and all(r["passed"] is True and r["model"] == "sine_float.tflite" and r["board_class"] == "x86"
                           and isinstance(r["value"], float) and "within limits" in r["message"] for r in passing)
    failing = [r for r in rows if r["status"] == "fail"]
    assert failing and all(r["passed"] is False and "over the budget" in r["message"] for r in failing)
    keys = fleet.influxd.query(fleet.db, "SHOW TAG KEYS FROM edgebench_gate")[0]["values"]
    assert sorted(k[0] for k in keys) == ["board_class", "model", "rule", "status"]
    fields = dict(tuple(v) for v in fleet.influxd.query(fleet.db, "SHOW FIELD KEYS FROM edgebench_gate")[0]["values"])
    assert fields == {"message": "string", "passed": "boolean", "value": "float"}


def test_collector_gate_errors(gated_fleet):
    _, collector, _ = gated_fleet
    for body, expected in ((b"[[gate]]\nmodel = 1\n", "needs model"), (b"not toml [", "not valid TOML")):
        with pytest.raises(urllib.error.HTTPError) as info:
            _http(collector.url + "/api/gates/evaluate", body)
        assert info.value.code == 400 and expected in json.loads(info.value.read())["error"]
