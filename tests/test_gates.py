"""Release gates: verdicts on between-run variation (reports with repeats, seeded), every match judged, rules,
JUnit names, and `edgebench gate` on real benchmark results."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional
from xml.etree import ElementTree

import numpy as np
import pytest

from edgebench.agent.engine import stats
from edgebench.agent.errors import UsageError
from edgebench.server.gates import rules as gates

from .conftest import FAST


def repeats_ns(rng, level_ms: float, repeats: int, samples: int = 200, run_sigma: float = 0.03) -> list[list[int]]:
    """``repeats`` runs of a model whose typical latency is ``level_ms``: each repeat's level moves (between-run
    noise, as on a real machine), each sample around its repeat's level."""
    out = []
    for _ in range(repeats):
        level = level_ms * math.exp(rng.normal(0, run_sigma))
        out.append([int(v * 1e6) for v in level * np.exp(rng.normal(0, 0.05, samples))])
    return out


def bench_report(per_repeat: list[list[int]], model: str = "m.tflite", release: str = "v1",
                 created: str = "2026-01-01T00:00:00Z", board_class: str = "rpi5", threads=4,
                 requested=("xnnpack",), **extra) -> dict:
    """An edgebench.bench/2 report as the engine writes it: pooled statistics, ``stats.interval`` from the
    repeats (stats.interval_summary), one ``repeats`` entry per repeat."""
    flat = [x for repeat in per_repeat for x in repeat]
    summary = stats.summarize(flat)
    summary["interval"] = stats.interval_summary(per_repeat, summary["ci_level"])
    return {"schema": "edgebench.bench/2", "created": created, "model": {"name": model},
            "runtime": {"runtime": "litert", "requested": list(requested), "used": list(requested),
                        "threads": threads},
            "labels": {"release": release, "class": board_class}, "stats": summary,
            "samples": {"latency_ns": flat, "repeat": [i for i, r in enumerate(per_repeat) for _ in r]},
            "repeats": [{"index": i, "stats": stats.summarize(r)} for i, r in enumerate(per_repeat)], **extra}


def result(report: dict, source: str = "") -> gates.Result:
    return gates.result_from_report(report, source or report["created"], {})


def write_rules(path, text):
    path.write_text(text)
    return str(path)


REGRESSION = '[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nbaseline = "v1"\nmax_regression_pct = 5\n'


def judge(rules_text: str, reports: list[dict]) -> list[gates.Verdict]:
    return gates.evaluate(gates.rules_from_toml(rules_text), [result(r, f"r{i}") for i, r in enumerate(reports)])


# ---------------------------------------------------------------- three outcomes, from reports with repeats

def test_three_way_verdicts_from_reports_with_repeats():
    rng = np.random.default_rng(20261201)
    base = bench_report(repeats_ns(rng, 2.0, 5, run_sigma=0.015))
    same = bench_report(repeats_ns(rng, 2.0, 5, run_sigma=0.015), release="v2", created="2026-01-02T00:00:00Z")
    slower = bench_report(repeats_ns(rng, 2.5, 5, run_sigma=0.015), release="v2", created="2026-01-02T00:00:00Z")
    noisy = bench_report(repeats_ns(rng, 2.1, 5, run_sigma=0.12), release="v2", created="2026-01-02T00:00:00Z")
    verdicts = {name: judge(REGRESSION, [base, cand])[0] for name, cand in
                (("same", same), ("slower", slower), ("noisy", noisy))}
    assert verdicts["same"].status == gates.PASS, verdicts["same"].message
    assert verdicts["slower"].status == gates.FAIL and "regressed +2" in verdicts["slower"].message
    assert verdicts["noisy"].status == gates.INCONCLUSIVE, verdicts["noisy"].message
    assert re.search(r"needs about \d+ more repeats per side", verdicts["noisy"].message)
    for verdict in verdicts.values():  # the units compared are the repeats' p90s, five a side
        regression = verdict.regression
        assert regression["n_baseline"] == regression["n_candidate"] == 5 and not regression["paired"]
        assert regression["baseline_units"] == base["stats"]["interval"]["p90_ms"]["per_unit"]
    assert verdicts["noisy"].regression["more_repeats"] >= 1
    assert gates.exit_code([verdicts["same"], verdicts["noisy"]]) == 6
    assert gates.exit_code(list(verdicts.values())) == 1
    assert gates.exit_code([verdicts["same"]]) == 0


def test_the_allowance_decides_a_real_but_small_slowdown():
    """A candidate really 3% slower (tight repeats): within a 5% allowance it passes, with none it fails. A gate
    that ignored the allowance would fail it."""
    base = bench_report([[int(2e6 * f)] * 40 for f in (1.0, 1.004, 0.996, 1.002, 0.998)])
    cand = bench_report([[int(2.06e6 * f)] * 40 for f in (1.0, 1.004, 0.996, 1.002, 0.998)], release="v2",
                        created="2026-01-02T00:00:00Z")
    (within,) = judge(REGRESSION, [base, cand])
    assert within.status == gates.PASS and "+3.0% vs v1" in within.message, within.message
    (strict,) = judge(REGRESSION.replace("max_regression_pct = 5", "max_regression_pct = 0"), [base, cand])
    assert strict.status == gates.FAIL and "regressed +3.0%" in strict.message


def test_beyond_the_allowance_by_the_point_alone_is_never_a_fail():
    """The candidate's repeats are 10% slower on average but spread so widely that it may not be slower at all: the
    interval's low end is under 1. A gate that dropped the interval condition (fail on the point ratio alone) fails
    it; the gate says inconclusive."""
    base = bench_report([[int(v * 1e6)] * 40 for v in (8.0, 12.0, 10.0, 9.0, 11.5)])
    cand = bench_report([[int(v * 1e6)] * 40 for v in (9.0, 14.5, 10.5, 9.5, 13.5)], release="v2",
                        created="2026-01-02T00:00:00Z")
    (verdict,) = judge(REGRESSION, [base, cand])
    regression = verdict.regression
    assert regression["ratio"] > 1.05 and regression["ratio_ci"][0] < 1.0
    assert verdict.status == gates.INCONCLUSIVE, verdict.message


def test_results_without_repeats_are_one_unit_each_and_runs_add_up():
    """A v1 report (or a run of one repeat) is one unit: its headline p90. One run a side cannot decide; the newest
    runs of each release can (baseline_runs, candidate_runs)."""
    rng = np.random.default_rng(5)

    def single(release, day, level=2.0):
        report = bench_report(repeats_ns(rng, level, 1), release=release, created=f"2026-01-{day:02d}T00:00:00Z")
        report["schema"] = "edgebench.bench/1"
        for key in ("interval",):
            report["stats"].pop(key)
        report.pop("repeats")
        return report

    bases = [single("v1", day) for day in range(1, 6)]
    cands = [single("v2", day) for day in range(10, 14)]
    (one,) = judge(REGRESSION, bases + cands)
    assert one.status == gates.INCONCLUSIVE and "has 5 and 1" in one.message and "counts as one" in one.message
    assert one.regression["candidate_units"] == [cands[-1]["stats"]["p90_ms"]]
    runs = REGRESSION + "baseline_runs = 3\ncandidate_runs = 4\n"
    (several,) = judge(runs, bases + cands)
    assert several.regression["n_baseline"] == 3 and several.regression["n_candidate"] == 4
    assert several.regression["baseline_units"] == [b["stats"]["p90_ms"] for b in bases[::-1][:3]]
    assert several.status in (gates.PASS, gates.INCONCLUSIVE) and several.status != gates.FAIL
    # min_repeats: fewer units than asked is inconclusive however clear the rest
    (short,) = judge(runs + "min_repeats = 5\n", bases + cands)
    assert short.status == gates.INCONCLUSIVE and "a side needs 5; has 3 and 4" in short.message


def test_the_baselines_runs_show_how_much_runs_differ():
    """Three baseline runs whose levels differ by ~5% (what separate invocations do on a noisy machine) and whose
    repeats agree within each run: a candidate run inside that range is not a regression the gate can call. Pooling
    the 15 repeats as independent (the old gate) fails it; the gate's two-level interval (runs, then repeats) says
    the runs differ too much and what would decide. Against one baseline run the variation between runs is not
    measured, and the verdict says so."""
    rng = np.random.default_rng(3)

    def run(level: float, release: str, day: int) -> dict:
        repeats = [[int(v * 1e6) for v in level * np.exp(rng.normal(0, 0.005)) * np.exp(rng.normal(0, 0.05, 100))]
                   for _ in range(5)]
        return bench_report(repeats, release=release, created=f"2026-01-{day:02d}T00:00:00Z")

    bases = [run(level, "v1", day) for day, level in ((1, 2.0), (2, 1.8), (3, 1.9))]
    cand = run(2.04, "v2", 10)
    (verdict,) = judge(REGRESSION, bases + [cand])
    assert verdict.status == gates.INCONCLUSIVE, verdict.message
    assert "in 3 and 1 runs, runs differ by" in verdict.message and "candidate_runs" in verdict.message
    assert verdict.regression["runs_baseline"] == 3 and verdict.regression["between_run_sd"] > 0.03
    pooled = stats.regression_verdict(verdict.regression["baseline_units"], verdict.regression["candidate_units"], 5)
    assert pooled["verdict"] == stats.FAIL  # what flattening the runs would have said
    (one,) = judge(REGRESSION + "baseline_runs = 1\n", bases + [cand])
    assert "between-run variation unmeasured" in one.message and one.regression["runs_baseline"] == 1


def test_interleaved_runs_are_paired_by_slot():
    """Both sides of one interleaved run (reports carrying interleave {group, slot}): units pair by slot and repeat,
    so the level shifts each slot shared cancel, and the gate decides what it could not on separate runs."""
    rng = np.random.default_rng(11)
    levels = np.exp(rng.normal(0, 0.15, 6))  # the noise each slot shared (A and B ran side by side)
    base, cand = [], []
    for slot, level in enumerate(levels):
        for out, release in ((base, "v1"), (cand, "v2")):
            samples = [[int(v * 1e6) for v in 2.0 * level * np.exp(rng.normal(0, 0.01, 100))]]
            out.append(bench_report(samples, release=release, created=f"2026-01-01T00:00:{slot:02d}Z",
                                    interleave={"group": "ab-1", "slot": slot}))
    rules = REGRESSION + "baseline_runs = 10\ncandidate_runs = 10\n"
    (paired,) = judge(rules, base + cand)
    assert paired.regression["paired"] and paired.regression["n_candidate"] == 6
    assert paired.status == gates.PASS, paired.message
    apart = [{k: v for k, v in r.items() if k != "interleave"} for r in base + cand]
    (unpaired,) = judge(rules, apart)
    assert not unpaired.regression["paired"] and unpaired.status == gates.INCONCLUSIVE


def test_error_rates_through_the_gate():
    """Seeded pairs of reports with 5 repeats each and between-run noise, through evaluate: identical releases fail
    at most 5% of the time and mostly pass; a 25% regression fails nearly always."""
    rng = np.random.default_rng(20261130)
    outcomes = {"same": [], "plus25": []}
    for _ in range(60):
        base = bench_report(repeats_ns(rng, 2.0, 5, samples=100, run_sigma=0.02))
        for name, factor in (("same", 1.0), ("plus25", 1.25)):
            cand = bench_report(repeats_ns(rng, 2.0 * factor, 5, samples=100, run_sigma=0.02), release="v2",
                                created="2026-01-02T00:00:00Z")
            outcomes[name].append(judge(REGRESSION, [base, cand])[0].status)
    assert outcomes["same"].count(gates.FAIL) <= 3 and outcomes["same"].count(gates.PASS) >= 40, outcomes["same"]
    assert outcomes["plus25"].count(gates.FAIL) >= 54, outcomes["plus25"]


# ---------------------------------------------------------------- budgets judge the estimate

def test_a_budget_judges_the_estimate_and_notes_an_interval_across_it():
    rng = np.random.default_rng(3)
    report = bench_report(repeats_ns(rng, 2.0, 5, run_sigma=0.05))
    p90 = report["stats"]["interval"]["p90_ms"]
    low, high = p90["ci"]
    between = (p90["estimate"] + high) / 2  # above the estimate, inside the interval
    (verdict,) = judge(f'[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = {between}\n', [report])
    assert verdict.status == gates.PASS and verdict.value == pytest.approx(p90["estimate"])
    assert verdict.interval == pytest.approx([low, high])
    assert "reaches over it" in verdict.message and verdict.notes
    (over,) = judge(f'[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = {(low + p90["estimate"]) / 2}\n', [report])
    assert over.status == gates.FAIL and "over the budget" in over.message and "confidence interval" in over.message
    (clear,) = judge(f'[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = {high * 1.1}\n', [report])
    assert clear.status == gates.PASS and not clear.notes


# ---------------------------------------------------------------- every match judged, unique names

def test_a_glob_judges_every_matching_model_and_configuration():
    """model = "*" over four reports of four models is four verdicts (it used to judge the newest only: a failing
    older match passed silently); one model at two thread counts is two configurations."""
    rng = np.random.default_rng(9)
    reports = [bench_report(repeats_ns(rng, level, 3), model=name, created=f"2026-01-0{i + 1}T00:00:00Z")
               for i, (name, level) in enumerate((("a.tflite", 1.0), ("b.tflite", 9.0), ("c.tflite", 1.0),
                                                  ("d.tflite", 1.0)))]
    verdicts = judge('[[gate]]\nname = "p90 budget"\nmodel = "*"\nmetric = "p90_ms"\nmax = 5\n', reports)
    assert [(v.model, v.status) for v in verdicts] == [("a.tflite", "pass"), ("b.tflite", "fail"),
                                                       ("c.tflite", "pass"), ("d.tflite", "pass")]
    assert gates.exit_code(verdicts) == 1
    threads = [bench_report(repeats_ns(rng, 1.0, 3), threads=t, created=f"2026-01-0{t}T00:00:00Z") for t in (1, 4)]
    delegates = [bench_report(repeats_ns(rng, 1.0, 3), requested=chain) for chain in (["gpu", "xnnpack"], ["cpu"])]
    verdicts = judge('[[gate]]\nmodel = "*"\nmetric = "p90_ms"\nmax = 5\n', threads + delegates)
    assert sorted(v.config for v in verdicts) == ["litert cpu, 4 threads", "litert gpu,xnnpack, 4 threads",
                                                  "litert xnnpack, 1 thread", "litert xnnpack, 4 threads"]


def test_junit_names_are_unique_per_rule_model_class_and_configuration(tmp_path):
    rng = np.random.default_rng(4)
    reports = [bench_report(repeats_ns(rng, 1.0, 3), model=m, threads=t, board_class=c)
               for m in ("a.tflite", "b.tflite") for t in (1, 4) for c in ("rpi5", "orin")]
    rules = ('[[gate]]\nname = "p90"\nmodel = "*"\nmetric = "p90_ms"\nmax = 5\n'
             '[[gate]]\nname = "p50"\nmodel = "*"\nmetric = "p50_ms"\nmax = 5\n')
    verdicts = judge(rules, reports)
    cases = [(case.get("classname"), case.get("name")) for case in
             ElementTree.fromstring(gates.junit_xml(verdicts).split("?>", 1)[1]).iter("testcase")]
    assert len(cases) == len(set(cases)) == 16
    assert ("gates.rpi5", "p90: a.tflite (litert xnnpack, 4 threads)") in cases
    with pytest.raises(UsageError, match="more than one rule is named 'p90'"):
        gates.rules_from_toml(rules.replace('"p50"', '"p90"'))
    same = gates.rules_from_toml('[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\n'
                                 '[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nbaseline = "v1"\n')
    assert [r.name for r in same] == ["m* p90_ms", "m* p90_ms (gate #2)"]


def test_only_the_baseline_in_a_configuration_is_missing():
    rng = np.random.default_rng(6)
    base = bench_report(repeats_ns(rng, 1.0, 3), threads=2)
    (verdict,) = judge(REGRESSION, [base])
    assert verdict.status == gates.MISSING and "no candidate to judge" in verdict.message
    assert verdict.config == "litert xnnpack, 2 threads"


# ---------------------------------------------------------------- rules

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


@pytest.mark.parametrize(("line", "message"), [
    ("baseline_runs = 0", "baseline_runs = 0 is not an integer from 1 to 10"),
    ("candidate_runs = 11", "candidate_runs = 11 is not an integer from 1 to 10"),
    ("min_repeats = 1", "min_repeats = 1 is not an integer from 2 to 1000"),
    ("min_repeats = 2.5", "min_repeats = 2.5 is not an integer"),
    ("min_samples = 36", "min_samples = 36: a regression is no longer decided on one run's samples"),
])
def test_regression_options_are_checked(line, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        gates.rules_from_toml(f"{REGRESSION}{line}\n")


def test_regression_options_need_a_latency_regression():
    with pytest.raises(UsageError, match="baseline_runs applies to a latency regression"):
        gates.rules_from_toml('[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\nbaseline_runs = 3\n')
    with pytest.raises(UsageError, match="min_repeats applies to a latency regression"):
        gates.rules_from_toml('[[gate]]\nmodel = "m*"\nmetric = "energy_mj"\nbaseline = "v1"\nmin_repeats = 3\n')


def test_rules_from_toml_and_json_documents():
    text = '[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\n'
    (rule,) = gates.rules_from_toml(text)
    (same,) = gates.rules_from_document({"gate": [{"model": "m*", "metric": "p90_ms", "max": 5}]}, "json")
    assert rule == same and rule.name == "m* p90_ms"
    with pytest.raises(UsageError, match="not valid TOML"):
        gates.rules_from_toml("[[gate]\n")
    with pytest.raises(UsageError, match="no \\[\\[gate\\]\\]"):
        gates.rules_from_document({"gate": "x"}, "json")


@pytest.mark.parametrize(("line", "message"), [("max = nan", "max = nan is not a finite number"),
                                               ('max = "fast"', "max = 'fast' is not a finite number"),
                                               ("max = inf", "max = inf is not a finite number"),
                                               ("max = 5\nmin = 6", "min = 6 is above max = 5")])
def test_a_limit_that_is_not_a_number_is_a_usage_error(line, message):
    with pytest.raises(UsageError, match=re.escape(f"gates: gate #1: {message}")):
        gates.rules_from_toml(f'[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\n{line}\n')


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "fast", None])
def test_a_value_that_is_not_a_number_never_passes(value):
    """NaN compares false with every limit, so without a check it would pass max and min alike: a measured
    value that is not a finite number is *missing* data (exit 2), whatever the budget."""
    (rule,) = gates.rules_from_toml('[[gate]]\nmodel = "m*"\nmetric = "p90_ms"\nmax = 5\nmin = 0\n')
    result_ = gates.Result(model="m.tflite", labels={}, runtime="litert", delegate="", variant=None, created="1",
                           metrics={"p90_ms": value})
    (verdict,) = gates.evaluate([rule], [result_])
    assert verdict.status == gates.MISSING and verdict.value is None
    assert gates.exit_code([verdict]) == 2


def test_a_malformed_interval_in_a_report_is_a_usage_error(tmp_path):
    rng = np.random.default_rng(2)
    report = bench_report(repeats_ns(rng, 1.0, 3))
    report["stats"]["interval"]["p90_ms"]["per_unit"][1] = -1.0
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(UsageError, match="r.json: not a well-formed edgebench report .*per_unit must hold finite"):
        gates.load_reports([str(path)])


# ---------------------------------------------------------------- sources and outputs

def test_fleet_rows_become_results():
    rng = np.random.default_rng(8)
    report = bench_report(repeats_ns(rng, 2.0, 4))
    from edgebench.agent.fleet.protocol import summarize_report

    row = {"job_id": "b1-0000", "device_id": "pi-07", "finished": 1.7e9, "labels": {"class": "rpi5", "release": "v2"},
           "summary": {**summarize_report(report), "memory": {"peak_steady_bytes": 30e6}}}
    result_ = gates.result_from_fleet(row, "collector")
    assert (result_.model, result_.board_class, result_.labels["release"], result_.labels["device"]) == (
        "m.tflite", "rpi5", "v2", "pi-07")
    assert result_.created == "2023-11-14T22:13:20.000000Z" and result_.threads == 4
    assert result_.metrics["peak_rss_mb"] == 30.0 and result_.metrics["delegate_loaded"] == 1.0
    assert result_.metrics["delegate_coverage"] is None  # a report without placement cannot say
    assert result_.source == "collector job b1-0000 on pi-07" and result_.interval_method == "between-repeats"
    assert result_.units("p90_ms") == report["stats"]["interval"]["p90_ms"]["per_unit"]
    assert result_.units("p90_ms") == gates.result_from_report(report, "r", {}).units("p90_ms")


def test_verdict_lines_for_the_gate_history():
    rules = gates.rules_from_toml('[[gate]]\nname = "p90, Pi 5"\nmodel = "m*"\nmetric = "p90_ms"\nmax = 1\n'
                                  '[[gate]]\nmodel = "x*"\nmetric = "p90_ms"\nmax = 1\n')
    result_ = gates.Result(model="m.tflite", labels={"class": "rpi 5"}, runtime="litert", delegate="xnnpack",
                           variant=None, created="1", metrics={"p90_ms": 2.5})
    document = gates.document(gates.evaluate(rules, [result_]))
    assert document["exit_code"] == 1
    fail, missing = gates.verdict_lines(document["verdicts"], 1_700_000_000_000_000_000)
    assert fail == ('edgebench_gate,board_class=rpi\\ 5,config=litert\\ xnnpack,model=m.tflite,rule=p90\\,\\ Pi\\ 5,'
                    'status=fail passed=false,value=2.5,message="p90_ms 2.5ms is over the budget 1ms" '
                    '1700000000000000000')
    assert missing == ('edgebench_gate,board_class=any,model=x*,rule=x*\\ p90_ms,status=missing '
                       'passed=false,message="no result matches this rule" 1700000000000000001')


# ---------------------------------------------------------------- `edgebench gate` on real benchmark results

@pytest.fixture(scope="module")
def real_reports(models, tmp_path_factory):
    """Two real benchmark runs of the same model, labelled as two releases of a board class."""
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("reports")
    paths = []
    for release in ("v1", "v2"):
        path = folder / f"{release}.json"
        result_ = run_cli("bench", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", *FAST, "--min-runs", "200",
                          "--no-sensors", "--label", f"release={release}", "--label", "class=x86-ci", "--json", path)
        assert result_.code == 0, result_
        paths.append(str(path))
    return paths


def test_gate_passes_a_loose_budget_and_fails_a_tight_one(cli, real_reports, tmp_path):
    loose = write_rules(tmp_path / "loose.toml", '[[gate]]\nmodel = "ppocr_cls*"\ndevices = "class=x86-ci"\n'
                        'metric = "p90_ms"\nmax = 1000.0\n')
    result_ = cli("gate", "--rules", loose, "--reports", *real_reports, "--junit", tmp_path / "loose.xml")
    assert result_.code == 0, result_
    assert "PASS" in result_.out
    tight = write_rules(tmp_path / "tight.toml", '[[gate]]\nname = "cls p90 tight"\nmodel = "ppocr_cls*"\n'
                        'metric = "p90_ms"\nmax = 0.001\n')
    result_ = cli("gate", "--rules", tight, "--reports", *real_reports, "--junit", tmp_path / "tight.xml",
                  "--markdown", tmp_path / "tight.md", "--json", tmp_path / "tight.json")
    assert result_.code == 1, result_
    suite = ElementTree.parse(tmp_path / "tight.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
    case = suite.find("testcase")
    assert case.get("name").startswith("cls p90 tight: ppocr_cls.onnx (onnxruntime ")
    assert case.get("classname") == "gates.x86-ci"
    assert "over the budget" in case.find("failure").get("message")
    assert "❌ fail" in (tmp_path / "tight.md").read_text()
    verdict = json.loads((tmp_path / "tight.json").read_text())["verdicts"][0]
    assert verdict["status"] == "fail" and verdict["value"] > 0.001


def test_gate_regression_on_real_repeats(cli, real_reports, tmp_path):
    """Two releases whose repeats are a random split of one real run (exchangeable by construction, so the
    machine's load during the test cannot fake a regression): the gate decides on those real units and does not
    fail; a loaded machine's spread may leave it inconclusive (exit 6), never a pass or a fail it cannot back.
    The verdict carries the interval it decided on."""
    report = json.loads(Path(real_reports[0]).read_text())
    latencies = np.random.default_rng(0).permutation(report["samples"]["latency_ns"]).tolist()
    chunks = [latencies[i::10] for i in range(10)]
    paths = []
    for release, units, created in (("v1", chunks[:5], "2026-01-01T00:00:00Z"),
                                    ("v2", chunks[5:], "2026-01-02T00:00:00Z")):
        derived = {**report, "created": created, "labels": {**report["labels"], "release": release},
                   "stats": {**report["stats"], "interval": stats.interval_summary(units)}}
        paths.append(tmp_path / f"{release}.json")
        paths[-1].write_text(json.dumps(derived))
    rules = write_rules(tmp_path / "regression.toml", '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "p50_ms"\n'
                        'baseline = "v1"\nmax_regression_pct = 25\n')
    result_ = cli("gate", "--rules", rules, "--reports", *paths, "--json", "-")
    verdict = result_.json()["verdicts"][0]
    assert (result_.code, verdict["status"]) in ((0, "pass"), (6, "inconclusive")), result_
    regression = verdict["regression"]
    assert regression["n_baseline"] == regression["n_candidate"] == 5
    low, high = regression["ratio_ci"]
    assert low <= regression["ratio"] <= high and (high <= 1.25) == (verdict["status"] == "pass")


def test_an_inconclusive_regression_exits_6(cli, tmp_path):
    """Through the real command: a regression the repeats cannot decide is its own exit code, an <error> in JUnit
    (type Inconclusive), and says how many more repeats would decide."""
    rng = np.random.default_rng(12)
    paths = []
    for release, level, day in (("v1", 2.0, 1), ("v2", 2.1, 2)):
        path = tmp_path / f"{release}.json"
        path.write_text(json.dumps(bench_report(repeats_ns(rng, level, 4, run_sigma=0.15), release=release,
                                                created=f"2026-01-0{day}T00:00:00Z")))
        paths.append(str(path))
    rules = write_rules(tmp_path / "r.toml", REGRESSION)
    done = cli("gate", "--rules", rules, "--reports", *paths, "--junit", tmp_path / "g.xml", "--markdown",
               tmp_path / "g.md", "--json", tmp_path / "g.json")
    assert done.code == 6, done
    assert "INCONCLUSIVE" in done.out and "more repeats per side" in done.out
    error = ElementTree.parse(tmp_path / "g.xml").getroot().find("testsuite/testcase/error")
    assert error is not None and error.get("type") == "Inconclusive"
    assert "❔ inconclusive" in (tmp_path / "g.md").read_text()
    assert json.loads((tmp_path / "g.json").read_text())["exit_code"] == 6


def test_missing_data_exits_2(cli, real_reports, tmp_path):
    rules = write_rules(tmp_path / "missing.toml", '[[gate]]\nmodel = "mobilenet*"\nmetric = "p90_ms"\nmax = 5\n'
                        '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "energy_mj"\nmax = 5\n'
                        '[[gate]]\nmodel = "ppocr_cls*"\nmetric = "p90_ms"\nmax = 1000\nbaseline = "v0"\n')
    result_ = cli("gate", "--rules", rules, "--reports", *real_reports, "--junit", tmp_path / "m.xml")
    assert result_.code == 2, result_
    suite = ElementTree.parse(tmp_path / "m.xml").getroot().find("testsuite")
    assert suite.get("errors") == "3"
    assert "no result labelled release=v0" in result_.out


def test_bench_with_a_baseline_model_interleaves_them_for_the_gate(cli, models, tmp_path):
    """`edgebench bench NEW --baseline-model OLD`: one run, the two builds' repeats interleaved, two reports (one
    interleave group, each with its labels), and the gate pairs them by repeat: the paired verdict, whatever the
    machine's load did between repeats."""
    from .conftest import RUN_LENGTH

    builds = {}
    for release in ("v1", "v2"):
        (tmp_path / release).mkdir()
        builds[release] = tmp_path / release / "ppocr_cls.onnx"
        builds[release].write_bytes(Path(models["ppocr_cls.onnx"]).read_bytes())
    outcome = cli("bench", builds["v2"], "--baseline-model", builds["v1"], "--shape", "x=1x3x48x192", *RUN_LENGTH,
                  "--repeats", "3", "--no-sensors", "--progress", "off", "--label", "release=v2",
                  "--baseline-label", "release=v1", "--json", tmp_path / "new.json",
                  "--baseline-json", tmp_path / "old.json")
    assert outcome.code == 0, outcome
    assert re.search(r"p90 vs .*ppocr_cls\.onnx: [0-9.]+x \[[0-9.]+, [0-9.]+\] \(3 repeats each, interleaved, "
                     r"paired\)", outcome.out), outcome.out
    new, old = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("new", "old"))
    assert new["interleave"]["group"] == old["interleave"]["group"]
    assert (new["labels"], old["labels"]) == ({"release": "v2"}, {"release": "v1"})
    assert len(new["stats"]["interval"]["p90_ms"]["per_unit"]) == 3
    rules = write_rules(tmp_path / "g.toml", REGRESSION.replace('"m*"', '"ppocr_cls*"'))
    gate = cli("gate", "--rules", rules, "--reports", tmp_path / "old.json", tmp_path / "new.json", "--json", "-")
    verdict = gate.json()["verdicts"][0]
    assert verdict["regression"]["paired"] and verdict["regression"]["n_candidate"] == 3, verdict
    assert ", paired" in verdict["message"]


@pytest.mark.parametrize("extra, message", [
    (["--baseline-json", "x.json"], "--baseline-json needs --baseline-model"),
    (["--baseline-label", "release=v1"], "--baseline-label needs --baseline-model"),
    (["--baseline-model", "m.onnx", "--json", "-", "--baseline-json", "-"], "cannot both write to stdout"),
    (["--baseline-model", "m.onnx", "--baseline-label", "release"], "--baseline-label"),  # before any run
])
def test_baseline_options_misused_are_one_line(cli, models, extra, message):
    outcome = cli("bench", models["ppocr_cls.onnx"], *extra)
    assert outcome.code == 2 and message in outcome.err and "Traceback" not in outcome.err, outcome


def test_the_reports_run_history_brings_between_run_variation_to_one_run_a_side():
    """One run a side, 6% apart with repeats agreeing within 1%: without more, the gate calls it a regression. When
    the reports carry their machine's run history (bench --history: runs of this configuration differ by 4% beyond
    their repeats), that variation counts and the verdict is inconclusive, naming where it came from. A history of
    fewer than three runs says nothing."""
    rng = np.random.default_rng(8)

    def run(level: float, release: str, day: int, history: Optional[dict] = None) -> dict:
        repeats = [[int(v * 1e6) for v in level * np.exp(rng.normal(0, 0.003)) * np.exp(rng.normal(0, 0.02, 100))]
                   for _ in range(5)]
        report = bench_report(repeats, release=release, created=f"2026-01-{day:02d}T00:00:00Z")
        if history:
            report["stats"]["interval"]["history"] = history
        return report

    plain = judge(REGRESSION, [run(2.0, "v1", 1), run(2.12, "v2", 2)])[0]
    assert plain.status == gates.FAIL, plain.message
    known = {"runs": 10, "between_run_sd": {"p90_ms": 0.04, "p50_ms": 0.04}, "file": "h.jsonl"}
    (widened,) = judge(REGRESSION, [run(2.0, "v1", 1, known), run(2.12, "v2", 2)])
    assert widened.status == gates.INCONCLUSIVE, widened.message
    assert "the reports' run history" in widened.message and widened.regression["between_run_source"] == "history"
    short = {"runs": 2, "between_run_sd": {"p90_ms": 0.04}, "file": "h.jsonl"}
    assert judge(REGRESSION, [run(2.0, "v1", 1, short), run(2.12, "v2", 2)])[0].status == gates.FAIL


@pytest.mark.parametrize("history", [{"runs": 0, "between_run_sd": {}}, {"runs": 5, "between_run_sd": {"p90_ms": -1}},
                                     {"runs": 5, "between_run_sd": {"p90_ms": float("nan")}}, [1, 2]])
def test_a_malformed_run_history_in_a_report_is_a_usage_error(tmp_path, history):
    rng = np.random.default_rng(9)
    report = bench_report(repeats_ns(rng, 2.0, 3))
    report["stats"]["interval"]["history"] = history
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(UsageError, match="stats.interval.history"):
        gates.load_reports([str(path)])


# ---------------------------------------------------------------- delegate coverage: a release that silently fell back

@pytest.fixture(scope="module")
def placement_reports(models, tmp_path_factory) -> dict:
    """Real runs of EfficientNet-Lite0 int8 on LiteRT: with XNNPACK (the default chain), which leaves 4 of its 64
    nodes (QUANTIZE x2, AVERAGE_POOL_2D, SOFTMAX) to the CPU kernels and says nothing at exit, and with
    ``--delegate cpu``, whose first choice takes every node."""
    from .conftest import run_cli

    folder = tmp_path_factory.mktemp("placement")
    paths = {}
    for name, chain in (("xnnpack", ()), ("cpu", ("--delegate", "cpu"))):
        path = folder / f"{name}.json"
        done = run_cli("bench", models["efficientnet_lite0_int8.tflite"], *chain, *FAST, "--no-sensors",
                       "--history", "off", "--label", "release=v2", "--label", "class=x86-ci", "--json", path)
        assert done.code == 0, done
        paths[name] = str(path)
    return paths


COVERAGE_RULE = '[[gate]]\nname = "all on the first choice"\nmodel = "efficientnet*"\nmetric = "delegate_coverage"\n' \
    'min = 1.0\n'


def test_a_release_that_silently_fell_back_fails_a_coverage_gate(cli, placement_reports, tmp_path):
    """``delegate_coverage`` is the placement's coverage: min = 1.0 fails the XNNPACK run (60 of 64 nodes), whose
    delegate loaded (``delegate_loaded`` 1, the old meaning, passes), and passes the run whose first choice took
    every node."""
    report = json.loads(Path(placement_reports["xnnpack"]).read_text())
    assert report["placement"]["coverage"] == 60 / 64 and report["runtime"]["used"] == ["xnnpack"]
    rules = write_rules(tmp_path / "coverage.toml", COVERAGE_RULE)
    done = cli("gate", "--rules", rules, "--reports", placement_reports["xnnpack"], "--json", "-")
    assert done.code == 1, done
    (verdict,) = done.json()["verdicts"]
    assert verdict["status"] == "fail" and verdict["value"] == 0.9375
    done = cli("gate", "--rules", rules, "--reports", placement_reports["cpu"], "--json", "-")
    assert done.code == 0, done
    assert done.json()["verdicts"][0]["value"] == 1.0
    loaded = write_rules(tmp_path / "loaded.toml", '[[gate]]\nmodel = "efficientnet*"\nmetric = "delegate_loaded"\n'
                         'min = 1.0\n')
    done = cli("gate", "--rules", loaded, "--reports", placement_reports["xnnpack"], "--json", "-")
    assert done.code == 0 and done.json()["verdicts"][0]["value"] == 1.0, done


def test_coverage_from_a_fleet_result_is_the_reports(placement_reports):
    """A board's result carries the placement summary (protocol.summarize_report): the gate metric from the
    collector's row is the report's coverage."""
    from edgebench.agent.fleet.protocol import summarize_report

    report = json.loads(Path(placement_reports["xnnpack"]).read_text())
    row = {"job_id": "b1-0000", "device_id": "pi-07", "finished": 1.7e9, "labels": {"class": "x86-ci"},
           "summary": summarize_report(report)}
    metrics = gates.result_from_fleet(row, "collector").metrics
    assert metrics["delegate_coverage"] == 0.9375 and metrics["delegate_loaded"] == 1.0


@pytest.mark.parametrize("coverage, message", [(7, "above 1"), (1.0, "is not the first choice's 60 of 64 nodes")])
def test_a_report_whose_coverage_lies_is_a_usage_error(placement_reports, tmp_path, coverage, message):
    report = json.loads(Path(placement_reports["xnnpack"]).read_text())
    report["placement"]["coverage"] = coverage
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(report))
    with pytest.raises(UsageError, match=f"edited.json: not a well-formed edgebench report .*placement.*{message}"):
        gates.load_reports([str(path)])
