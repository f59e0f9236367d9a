"""Release gates: the regression test's error rates (seeded experiments), rules, and `edgebench gate` on
real benchmark results."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from edgebench.agent.engine.stats import quantile_regression
from edgebench.agent.errors import UsageError
from edgebench.server.gates import rules as gates

from .conftest import FAST

SEEDS = 120


def lognormal_ns(rng, n, scale=1.0):
    """Latency-like samples: right-skewed around 2 ms."""
    return (rng.lognormal(np.log(2.0 * scale), 0.15, n) * 1e6).astype(np.int64)


def test_same_distribution_noise_passes_at_least_95_percent():
    failed = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        test = quantile_regression(lognormal_ns(rng, 400), lognormal_ns(rng, 400), 0.9, 5.0, resamples=400, seed=seed)
        failed += test["regressed"]
    assert failed / SEEDS <= 0.05


def test_true_ten_percent_p90_regression_fails_at_least_95_percent():
    failed = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(10_000 + seed)
        test = quantile_regression(lognormal_ns(rng, 400), lognormal_ns(rng, 400, 1.10), 0.9, 5.0, resamples=400,
                                   seed=seed)
        failed += test["regressed"]
    assert failed / SEEDS >= 0.95


def test_too_few_samples_are_undecided():
    rng = np.random.default_rng(0)
    test = quantile_regression(lognormal_ns(rng, 20), lognormal_ns(rng, 400), 0.9)
    assert not test["decided"] and "36 samples" in test["reason"]


def write_rules(path, text):
    path.write_text(text)
    return str(path)


def test_rule_validation(tmp_path):
    with pytest.raises(UsageError, match="unknown metric 'p42_ms'"):
        gates.load_rules(write_rules(tmp_path / "a.toml", '[[gate]]\nmodel = "m"\nmetric = "p42_ms"\nmax = 1\n'))
    with pytest.raises(UsageError, match="needs a budget"):
        gates.load_rules(write_rules(tmp_path / "b.toml", '[[gate]]\nmodel = "m"\nmetric = "p90_ms"\n'))
    with pytest.raises(UsageError, match="unknown key"):
        gates.load_rules(write_rules(tmp_path / "c.toml", '[[gate]]\nmodel = "m"\nmetric = "p90_ms"\nmax = 1\n'
                                     'foo = 2\n'))
    with pytest.raises(UsageError, match="no \\[\\[gate\\]\\]"):
        gates.load_rules(write_rules(tmp_path / "d.toml", "[gates]\n"))


@pytest.fixture(scope="module")
def real_reports(models, tmp_path_factory):
    """Two real benchmark runs of the same model, labelled as two releases of a board class."""
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("reports")
    paths = []
    for release in ("v1", "v2"):
        path = folder / f"{release}.json"
        result = run_cli("bench", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", *FAST, "--min-runs", "200",
                         "--no-sensors", "--label", f"release={release}", "--label", "class=x86-ci", "--json", path)
        assert result.code == 0, result
        paths.append(str(path))
    return paths


def test_gate_passes_a_loose_budget_and_fails_a_tight_one(cli, real_reports, tmp_path):
    loose = write_rules(tmp_path / "loose.toml", '[[gate]]\nmodel = "ppocr_cls*"\ndevices = "class=x86-ci"\n'
                        'metric = "p90_ms"\nmax = 1000.0\n')
    result = cli("gate", "--rules", loose, "--reports", *real_reports, "--junit", tmp_path / "loose.xml")
    assert result.code == 0, result
    assert "PASS" in result.out
    tight = write_rules(tmp_path / "tight.toml", '[[gate]]\nname = "cls p90 tight"\nmodel = "ppocr_cls*"\n'
                        'metric = "p90_ms"\nmax = 0.001\n')
    result = cli("gate", "--rules", tight, "--reports", *real_reports, "--junit", tmp_path / "tight.xml",
                 "--markdown", tmp_path / "tight.md", "--json", tmp_path / "tight.json")
    assert result.code == 1, result
    suite = ElementTree.parse(tmp_path / "tight.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
    case = suite.find("testcase")
    assert case.get("name") == "cls p90 tight" and case.get("classname") == "gates.x86-ci"
    assert "over the budget" in case.find("failure").get("message")
    assert "❌ fail" in (tmp_path / "tight.md").read_text()
    verdict = json.loads((tmp_path / "tight.json").read_text())["verdicts"][0]
    assert verdict["status"] == "fail" and verdict["value"] > 0.001


def test_gate_regression_against_a_baseline_release(cli, real_reports, tmp_path):
    """Two releases whose samples are a random split of one real run (exchangeable by construction, so the
    machine's load during the test cannot fake a regression): the gate decides on those real samples, does
    not fail, and its verdict carries the bootstrap interval it decided on."""
    report = json.loads(Path(real_reports[0]).read_text())
    latencies = np.random.default_rng(0).permutation(report["samples"]["latency_ns"]).tolist()
    half = len(latencies) // 2
    paths = []
    for release, part, created in (("v1", latencies[:half], "2026-01-01T00:00:00Z"),
                                   ("v2", latencies[half:], "2026-01-02T00:00:00Z")):
        derived = {**report, "created": created, "labels": {**report["labels"], "release": release},
                   "samples": {"latency_ns": part, "start_offset_ns": list(range(len(part)))}}
        paths.append(tmp_path / f"{release}.json")
        paths[-1].write_text(json.dumps(derived))
    rules = write_rules(tmp_path / "regression.toml", '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "p90_ms"\n'
                        'baseline = "v1"\nmax_regression_pct = 5\n')
    result = cli("gate", "--rules", rules, "--reports", *paths, "--json", "-")
    verdict = result.json()["verdicts"][0]
    assert result.code == 0 and verdict["status"] == "pass", result
    assert verdict["regression"]["decided"] and verdict["regression"]["candidate_n"] == len(latencies) - half
    low, high = verdict["regression"]["ratio_ci"]
    assert low <= high and low < 1.05  # the interval does not claim a regression beyond the allowance


def test_missing_data_exits_2(cli, real_reports, tmp_path):
    rules = write_rules(tmp_path / "missing.toml", '[[gate]]\nmodel = "mobilenet*"\nmetric = "p90_ms"\nmax = 5\n'
                        '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "energy_mj"\nmax = 5\n'
                        '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "p90_ms"\nmax = 1000\nbaseline = "v0"\n')
    result = cli("gate", "--rules", rules, "--reports", *real_reports, "--junit", tmp_path / "m.xml")
    assert result.code == 2, result
    suite = ElementTree.parse(tmp_path / "m.xml").getroot().find("testsuite")
    assert suite.get("errors") == "3"
    assert "no result labelled release=v0" in result.out


def test_synthetic_regression_fails_through_the_gate(tmp_path):
    rng = np.random.default_rng(7)

    def result(release, scale):
        return gates.Result(model="m.tflite", labels={"class": "rpi5", "release": release}, runtime="litert",
                            delegate="xnnpack", variant=None, created=release,
                            metrics={"p90_ms": float(np.percentile(lognormal_ns(rng, 1000, scale), 90) / 1e6)},
                            latency_ns=lognormal_ns(rng, 1000, scale))

    rules = gates.load_rules(write_rules(tmp_path / "r.toml", '[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\n'
                                         'baseline = "v1"\nmax_regression_pct = 5\n'))
    (verdict,) = gates.evaluate(rules, [result("v1", 1.0), result("v2", 1.15)])
    assert verdict.status == "fail" and "regressed" in verdict.message


def test_rules_from_toml_and_json_documents():
    text = '[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\n'
    (rule,) = gates.rules_from_toml(text)
    (same,) = gates.rules_from_document({"gate": [{"model": "m*", "metric": "p90_ms", "max": 5}]}, "json")
    assert rule == same and rule.name == "m* p90_ms"
    with pytest.raises(UsageError, match="not valid TOML"):
        gates.rules_from_toml("[[gate]\n")
    with pytest.raises(UsageError, match="no \\[\\[gate\\]\\]"):
        gates.rules_from_document({"gate": "x"}, "json")


def test_fleet_rows_become_results():
    row = {"job_id": "b1-0000", "device_id": "pi-07", "finished": 1.7e9, "labels": {"class": "rpi5", "release": "v2"},
           "latency_ns": [2_000_000, 2_100_000], "summary": {
               "stats": {"count": 2, "p50_ms": 2.05, "p90_ms": 2.09, "p99_ms": 2.1}, "model": {"name": "m.tflite"},
               "runtime": {"runtime": "litert", "requested": ["xnnpack"], "used": ["xnnpack"]},
               "memory": {"peak_steady_bytes": 30e6}}}
    result = gates.result_from_fleet(row, "collector")
    assert (result.model, result.board_class, result.labels["release"], result.labels["device"]) == (
        "m.tflite", "rpi5", "v2", "pi-07")
    assert list(result.latency_ns) == [2_000_000, 2_100_000] and result.created == "2023-11-14T22:13:20.000000Z"
    assert result.metrics["peak_rss_mb"] == 30.0 and result.metrics["delegate_coverage"] == 1.0
    assert result.source == "collector job b1-0000 on pi-07"


def test_verdict_lines_for_the_gate_history():
    rules = gates.rules_from_toml('[[gate]]\nname = "p90, Pi 5"\nmodel = "m*"\nmetric = "p90_ms"\nmax = 1\n'
                                  '[[gate]]\nmodel = "x*"\nmetric = "p90_ms"\nmax = 1\n')
    result = gates.Result(model="m.tflite", labels={"class": "rpi 5"}, runtime="litert", delegate="", variant=None,
                          created="1", metrics={"p90_ms": 2.5})
    document = gates.document(gates.evaluate(rules, [result]))
    assert document["exit_code"] == 1
    fail, missing = gates.verdict_lines(document["verdicts"], 1_700_000_000_000_000_000)
    assert fail == ('edgebench_gate,board_class=rpi\\ 5,model=m.tflite,rule=p90\\,\\ Pi\\ 5,status=fail '
                    'passed=false,value=2.5,message="p90_ms 2.5ms is over the budget 1ms" 1700000000000000000')
    assert missing == ('edgebench_gate,board_class=any,model=x*,rule=x*\\ p90_ms,status=missing '
                       'passed=false,message="no result matches this rule" 1700000000000000001')


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "fast", None])
def test_a_value_that_is_not_a_number_never_passes(value):
    """NaN compares false with every limit, so without a check it would pass max and min alike: a measured
    value that is not a finite number is *missing* data (exit 2), whatever the budget."""
    (rule,) = gates.rules_from_toml('[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\nmin = 0\n')
    result = gates.Result(model="m.tflite", labels={}, runtime="litert", delegate="", variant=None, created="1",
                          metrics={"p90_ms": value})
    (verdict,) = gates.evaluate([rule], [result])
    assert verdict.status == gates.MISSING and verdict.value is None
    assert gates.exit_code([verdict]) == 2


@pytest.mark.parametrize(("line", "message"), [("max = nan", "max = nan is not a finite number"),
                                               ('max = "fast"', "max = 'fast' is not a finite number"),
                                               ("max = inf", "max = inf is not a finite number"),
                                               ("max = 5\nmin = 6", "min = 6 is above max = 5")])
def test_a_limit_that_is_not_a_number_is_a_usage_error(line, message):
    with pytest.raises(UsageError, match=re.escape(f"gates: gate #1: {message}")):
        gates.rules_from_toml(f'[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\n{line}\n')
