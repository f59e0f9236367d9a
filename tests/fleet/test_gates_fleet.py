"""Release gates on fleet data: real agent, collector, Mosquitto and influxd; results pushed with release labels,
and results with repeats published as a board publishes them; `edgebench gate --server` / `--influx-url` and the
collector's /api/gates/evaluate judge them with the same code, on the same units."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from xml.etree import ElementTree

import pytest

from .conftest import FAST, publish_many
from .services import wait_for

LOOSE = """
[[gate]]
name = "sine p90 budget"
model = "sine_*"
devices = "class=x86"
metric = "p90_ms"
max = 1000.0

[[gate]]
name = "sine p50 vs v1"
model = "sine_*"
devices = "class=x86"
metric = "p50_ms"
baseline = "v1"
max_regression_pct = 10000
candidate_runs = 3
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


def _http(collector, path: str, body: bytes = None, content_type: str = "application/toml"):
    """The collector's answer, with the launcher's token (a JSON answer decoded)."""
    data = collector.request("POST" if body is not None else "GET", path, body, content_type, timeout=60)
    try:
        return json.loads(data)
    except ValueError:
        return data


def _comparable(verdicts: list[dict]) -> list[tuple]:
    return [(v["rule"], v["board_class"], v["config"], v["status"], v["value"], v["interval"], v["result_model"],
             (v["regression"] or {}).get("ratio"), (v["regression"] or {}).get("baseline_units"),
             (v["regression"] or {}).get("candidate_units")) for v in verdicts]


@pytest.fixture(scope="module")
def gated_fleet(tmp_path_factory, influxd):
    """One fleet for the module: pushes of the same model, labelled release=v1 and release=v2."""
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
    for release in ("v1", "v1", "v1", "v2", "v2", "v2"):  # three runs a release: three units a side (one repeat each)
        out = root / f"push-{len(batches)}.json"
        result = run_cli("push", sine_model_module, "--server", collector.url, "--token", collector.token,
                         "--devices", "class=x86",
                         "--no-sensors", *FAST, "--label", f"release={release}", "--wait", "--wait-timeout", "120",
                         "--json", str(out), timeout=180)
        assert result.code == 0, result
        batches.append(json.loads(out.read_text()))
    fleet.wait_results(6)
    return batches


def test_results_carry_release_labels_raw_samples_and_intervals(gated_fleet, pushed):
    fleet, collector, _ = gated_fleet
    rows = collector.get("/api/v1/results?samples=1")["results"]
    assert [row["labels"]["release"] for row in rows] == ["v1"] * 3 + ["v2"] * 3
    assert all(row["labels"]["class"] == "x86" and row["labels"]["site"] == "lab1" for row in rows)
    for row in rows:
        assert 36 <= len(row["latency_ns"]) <= 10000 and all(isinstance(x, int) and x > 0 for x in row["latency_ns"])
    assert "latency_ns" not in collector.get("/api/v1/results")["results"][0]
    # latest=N: the N newest of the configuration (one device, one model, one chain, release labels apart)
    assert [r["labels"]["release"] for r in collector.get("/api/v1/results?latest=1")["results"]] == ["v1", "v2"]
    assert len(collector.get("/api/v1/results?latest=2")["results"]) == 4
    points = fleet.results_in_influx()
    assert sorted(pt["label_release"] for pt in points) == ["v1"] * 3 + ["v2"] * 3
    for pt in points:  # every carried sample is a point of edgebench_latency, with the result's tags
        count = fleet.influxd.rows(fleet.db, f"SELECT count(latency_ns) FROM edgebench_latency "
                                             f"WHERE time >= {pt['time']} AND time < {pt['time'] + 10000}")[0]["count"]
        row = next(r for r in rows if r["job_id"] == pt["job_id"])
        carried = len(row["latency_ns"])
        assert count == carried and pt["samples_total"] >= carried and pt["delegate_loaded"] in (0.0, 1.0)
        # where the nodes ran travels in the result: the coverage gates judge, and one placement point per backend
        placement = row["summary"]["placement"]
        assert pt["delegate_coverage"] == placement["coverage"] and 0 < placement["coverage"] <= 1
        backends = fleet.influxd.rows(fleet.db, f'SELECT "nodes", "partitions", "model_nodes", "first_choice" FROM '
                                                f'edgebench_placement WHERE time = {pt["time"]} GROUP BY "backend"')
        assert sum(b["nodes"] for b in backends) == placement["nodes"] == backends[0]["model_nodes"], backends
        interval = row["summary"]["stats"]["interval"]  # one repeat a job: batches of the run
        assert pt["interval_method"] == interval["method"] == "batch-means" and pt["repeats"] == 1
        assert pt["p90_estimate_ms"] == interval["p90_ms"]["estimate"]
        assert [pt["p90_ci_low_ms"], pt["p90_ci_high_ms"]] == interval["p90_ms"]["ci"]


def test_gate_on_the_fleet_passes_loose_fails_tight_and_says_missing(gated_fleet, pushed, cli, tmp_path):
    fleet, collector, root = gated_fleet
    loose, tight, missing = (tmp_path / name for name in ("loose.toml", "tight.toml", "missing.toml"))
    loose.write_text(LOOSE)
    tight.write_text(TIGHT)
    missing.write_text(MISSING)

    ok = cli("gate", "--rules", loose, "--server", collector.url, "--token", collector.token, "--junit",
             tmp_path / "ok.xml", "--json", "-")
    assert ok.code == 0, ok
    document = ok.json()
    assert [v["status"] for v in document["verdicts"]] == ["pass", "pass"], document
    regression = document["verdicts"][1]["regression"]  # one unit a run: the three newest runs of each release
    assert regression["n_baseline"] == regression["n_candidate"] == 3 and regression["verdict"] == "pass"
    assert len(regression["baseline_runs"]) == len(regression["candidate_runs"]) == 3
    suite = ElementTree.parse(tmp_path / "ok.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0" and suite.get("errors") == "0"

    bad = cli("gate", "--rules", tight, "--server", collector.url, "--token", collector.token, "--junit",
              tmp_path / "bad.xml",
              "--markdown", tmp_path / "bad.md")
    assert bad.code == 1, bad
    failure = ElementTree.parse(tmp_path / "bad.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and "over the budget" in failure.get("message")
    assert "❌ fail" in (tmp_path / "bad.md").read_text()

    gone = cli("gate", "--rules", missing, "--server", collector.url, "--token", collector.token, "--junit",
               tmp_path / "gone.xml")
    assert gone.code == 2 and "no result matches" in gone.out
    assert ElementTree.parse(tmp_path / "gone.xml").getroot().find("testsuite/testcase/error") is not None
    unreachable = cli("gate", "--rules", loose, "--server", "http://127.0.0.1:9")
    assert unreachable.code == 2 and unreachable.err.startswith("edgebench: error: cannot reach")

    # the same rules on InfluxDB: the same estimates, intervals and units
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
    posted = _http(collector, "/api/gates/evaluate", TIGHT.encode())
    assert posted["exit_code"] == 1 and posted["verdicts"][0]["status"] == "fail"
    as_json = _http(collector, "/api/gates/evaluate", json.dumps({"gate": [{
        "model": "sine_*", "metric": "p90_ms", "max": 1000.0}]}).encode(), "application/json")
    assert as_json["exit_code"] == 0
    junit = _http(collector, "/api/gates/evaluate?format=junit", TIGHT.encode())
    assert b"<failure" in junit

    # verdicts went to InfluxDB for the gate-history dashboard: tags rule, model, board_class, status
    def gate_rows():
        return fleet.influxd.rows(fleet.db, 'SELECT * FROM edgebench_gate')

    rows = wait_for(lambda: (lambda r: r if len(r) >= 7 else None)(gate_rows()), 10, "recorded verdicts")
    assert {r["status"] for r in rows} == {"pass", "fail", "missing"}
    passing = [r for r in rows if r["rule"] == "sine p90 budget"]
    assert passing and all(r["passed"] is True and r["model"] == "sine_float.tflite" and r["board_class"] == "x86"
                           and r["config"].startswith("litert ")
                           and isinstance(r["value"], float) and "within limits" in r["message"] for r in passing)
    failing = [r for r in rows if r["status"] == "fail"]
    assert failing and all(r["passed"] is False and "over the budget" in r["message"] for r in failing)
    keys = fleet.influxd.query(fleet.db, "SHOW TAG KEYS FROM edgebench_gate")[0]["values"]
    assert sorted(k[0] for k in keys) == ["board_class", "config", "model", "rule", "status"]
    fields = dict(tuple(v) for v in fleet.influxd.query(fleet.db, "SHOW FIELD KEYS FROM edgebench_gate")[0]["values"])
    assert fields == {"message": "string", "passed": "boolean", "value": "float"}


def test_collector_gate_errors(gated_fleet):
    _, collector, _ = gated_fleet
    for body, expected in ((b"[[gate]]\nmodel = 1\n", "needs model"), (b"not toml [", "not valid TOML")):
        with pytest.raises(urllib.error.HTTPError) as info:
            _http(collector, "/api/gates/evaluate", body)
        assert info.value.code == 400 and expected in json.loads(info.value.read())["error"]


# ---------------------------------------------------------------- results with repeats, as a board publishes them

REPEATS = """
[[gate]]
name = "rep p90 vs v1"
model = "rep_*"
devices = "class=arm"
metric = "p90_ms"
baseline = "v1"
max_regression_pct = 5
"""


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish QoS 1 messages as a board does (one MQTT v5 client); every PUBACK must be a success."""
    assert publish_many(port, messages, "rep-board") == [0] * len(messages)


def _repeats_event(model: str, release: str, levels_ms: list, finished: float, rng, drift: bool = False) -> bytes:
    """A result event with a repeat per level: the engine's statistics (stats.interval_summary) of seeded samples
    around each repeat's level, the summary as the daemon makes it (protocol.summarize_report)."""
    import numpy as np

    from edgebench.agent.engine import stats
    from edgebench.agent.fleet import protocol as p

    per_repeat = [[int(v * 1e6) for v in level * np.exp(rng.normal(0, 0.02, 120))] for level in levels_ms]
    summary = stats.summarize([x for r in per_repeat for x in r])
    summary["interval"] = stats.interval_summary(per_repeat)
    report = {"schema": "edgebench.bench/2", "model": {"name": model, "format": "tflite", "sha256": "c" * 64},
              "runtime": {"runtime": "litert", "requested": ["xnnpack"], "used": ["xnnpack"], "threads": 4},
              "stats": summary, "repeats": [{"index": i} for i in range(5)]}
    job = f"rep-{model.split('.')[0]}-{release}"
    extra = {"drift": {"reference_sha": "d" * 64, "max_abs_err": 0.01, "mean_abs_err": 0.001, "cosine_mean": 0.999,
                       "samples": 8}} if drift else {}
    return p.encode(p.EVENTS, p.envelope("rep-board", finished, msg_id=p.new_msg_id(), event="result", job_id=job,
                                         run_id=job, finished_ts=finished, summary=p.summarize_report(report),
                                         labels={"class": "arm", "release": release}, **extra))


@pytest.fixture(scope="module")
def published_repeats(gated_fleet):
    """Three models, each a v1 and a v2 result with five repeats: the same speed (pass), 30% slower (fail), and a
    noisy one a little slower (inconclusive). One v2 result was measured with drift: its point has a `reference`
    tag its repeat points do not carry."""
    import time

    import numpy as np

    from edgebench.agent.fleet import protocol as p

    fleet, collector, _ = gated_fleet
    rng = np.random.default_rng(20261202)
    now = time.time()
    events = []
    steady = [2.0, 2.02, 1.98, 2.01, 1.99]  # repeats of a quiet machine
    noisy = ([1.6, 2.4, 2.0, 1.8, 2.3], [1.8, 2.9, 2.1, 1.9, 2.7])  # +10% on average, but spread as widely
    for model, base, cand in (("rep_same.tflite", steady, steady), ("rep_slower.tflite", steady,
                                                                     [1.3 * v for v in steady]),
                              ("rep_noisy.tflite", *noisy)):
        events.append(_repeats_event(model, "v1", base, now - 60, rng))
        events.append(_repeats_event(model, "v2", cand, now - 30, rng, drift=model == "rep_same.tflite"))
    _publish(fleet.broker.port, [(p.topic("rep-board", p.EVENTS), data) for data in events])

    def stored() -> bool:
        results = collector.get("/api/v1/results")["results"]
        repeats = fleet.influxd.rows(fleet.db, 'SELECT count("p90_ms") FROM "edgebench_repeat"')
        return (sum(r["device_id"] == "rep-board" for r in results) == 6 and bool(repeats)
                and repeats[0]["count"] == 30)

    wait_for(stored, 60, "the six results with their repeats stored")
    return events


def test_repeats_are_stored_with_the_result(gated_fleet, published_repeats):
    fleet, collector, _ = gated_fleet
    points = [pt for pt in fleet.results_in_influx() if pt["device"] == "rep-board"]
    assert len(points) == 6
    rows = {r["job_id"]: r for r in collector.get("/api/v1/results")["results"] if r["device_id"] == "rep-board"}
    for pt in points:
        interval = rows[pt["job_id"]]["summary"]["stats"]["interval"]
        assert pt["repeats"] == 5 and pt["interval_method"] == "between-repeats"
        assert [pt["p90_ci_low_ms"], pt["p90_ci_high_ms"]] == interval["p90_ms"]["ci"]
        assert pt["p90_estimate_ms"] == interval["p90_ms"]["estimate"] and pt["delegate_requested"] == "xnnpack"
        units = fleet.influxd.rows(fleet.db, f'SELECT "p50_ms", "p90_ms", "p99_ms" FROM "edgebench_repeat" WHERE '
                                             f'time = {pt["time"]} GROUP BY "unit"')
        assert [u["p90_ms"] for u in units] == interval["p90_ms"]["per_unit"]
    fields = dict(tuple(v) for v in fleet.influxd.query(fleet.db, "SHOW FIELD KEYS FROM edgebench_result")[0]["values"])
    assert fields["repeats"] == "integer" and fields["interval_method"] == "string"
    assert all(fields[f"p{pct}_ci_{end}_ms"] == "float" for pct in (50, 90, 99) for end in ("low", "high"))
    assert fields["drift_pct"] == "float"
    keys = fleet.influxd.query(fleet.db, "SHOW TAG KEYS FROM edgebench_repeat")[0]["values"]
    assert "unit" in {k[0] for k in keys} and "reference" not in {k[0] for k in keys}


def test_the_gate_decides_on_the_repeats_alike_from_every_source(gated_fleet, published_repeats, cli, tmp_path):
    """Pass, fail and inconclusive from the repeats the boards sent: `--server` (the collector's summaries) and
    `--influx-url` (edgebench_result and edgebench_repeat) give the same verdicts on the same units, and so does
    the collector's own evaluation."""
    fleet, collector, _ = gated_fleet
    rules = tmp_path / "repeats.toml"
    rules.write_text(REPEATS)
    server = cli("gate", "--rules", rules, "--server", collector.url, "--token", collector.token, "--no-record",
                 "--json", "-")
    verdicts = server.json()["verdicts"]
    assert server.code == 1, server
    assert [(v["result_model"], v["status"]) for v in verdicts] == [
        ("rep_noisy.tflite", "inconclusive"), ("rep_same.tflite", "pass"), ("rep_slower.tflite", "fail")]
    assert all(v["regression"]["n_baseline"] == v["regression"]["n_candidate"] == 5 for v in verdicts)
    assert "more repeats per side" in verdicts[0]["message"] and verdicts[1]["interval"]
    influx = cli("gate", "--rules", rules, "--influx-url", fleet.influxd.url, "--influx-db", fleet.db, "--no-record",
                 "--json", "-")
    assert influx.code == 1 and _comparable(influx.json()["verdicts"]) == _comparable(verdicts)
    evaluated = _http(collector, "/api/gates/evaluate", REPEATS.encode())
    assert evaluated["exit_code"] == 1 and _comparable(evaluated["verdicts"]) == _comparable(verdicts)
    # the inconclusive one alone: its own exit code, from either source
    noisy = tmp_path / "noisy.toml"
    noisy.write_text(REPEATS.replace('"rep_*"', '"rep_noisy*"'))
    for source in (("--server", collector.url, "--token", collector.token),
                   ("--influx-url", fleet.influxd.url, "--influx-db", fleet.db)):
        done = cli("gate", "--rules", noisy, *source, "--no-record")
        assert done.code == 6 and "INCONCLUSIVE" in done.out, done
