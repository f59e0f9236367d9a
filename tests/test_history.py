"""This machine's run history widens the rerun interval by how much runs differ (agent/engine/history.py)."""

from __future__ import annotations

import json
import math

import numpy as np

from edgebench.agent.engine import history, stats

from .conftest import RUN_LENGTH


def report(level_ms: float, rng, repeats: int = 5, host: str = "lab-1") -> dict:
    """A report as build_report makes it, as far as the history reads it: repeats at one level (this run's)."""
    per_repeat = [[int(v * 1e6) for v in level_ms * np.exp(rng.normal(0, 0.01, 100))] for _ in range(repeats)]
    summary = stats.summarize([x for r in per_repeat for x in r])
    summary["interval"] = stats.interval_summary(per_repeat)
    return {"created": "2026-11-30T00:00:00Z", "model": {"sha256": "ab" * 32},
            "runtime": {"runtime": "onnxruntime", "requested": ["CPUExecutionProvider"], "threads": 1},
            "inputs_fed": [{"name": "x", "shape": [1, 3, 48, 320], "dtype": "float32"}],
            "noise": {"affinity": {"requested": None}}, "device": {"hostname": host}, "stats": summary}


def test_runs_that_differ_widen_the_rerun_interval(tmp_path):
    """Three runs whose levels differ by ~10% while each run's repeats agree within 1%: the third run's rerun
    interval, from its repeats alone, would be about +-1% and miss the others; with the history it covers them and
    says how much the runs differ. The file keeps each run's per-repeat percentiles."""
    rng = np.random.default_rng(4)
    levels = (10.0, 11.0, 10.4)
    reports = [report(level, rng) for level in levels]
    for one in reports:
        history.apply(one, str(tmp_path))
    first, last = reports[0]["stats"]["interval"], reports[-1]["stats"]["interval"]
    assert first["history"]["runs"] == 1 and "rerun_repeats_only" not in first["p90_ms"]
    assert last["history"]["runs"] == 3 and last["history"]["between_run_sd"]["p90_ms"] > 0.03
    own = last["p90_ms"]["rerun_repeats_only"]
    widened = last["p90_ms"]["rerun"]
    assert widened[0] < own[0] and widened[1] > own[1]
    estimates = [r["stats"]["interval"]["p90_ms"]["estimate"] for r in reports]
    assert not all(own[0] <= e <= own[1] for e in estimates)  # the repeats alone miss the other runs
    assert all(widened[0] <= e <= widened[1] for e in estimates)
    (file,) = tmp_path.glob("*.jsonl")
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [len(line["per_unit"]["p90_ms"]) for line in lines] == [5, 5, 5]
    # the arithmetic is stats.rerun_interval's on the runs' units
    expected = stats.rerun_interval([r["stats"]["interval"]["p90_ms"]["per_unit"] for r in reports])
    assert widened == expected["rerun"]


def test_runs_that_agree_keep_their_own_interval_and_configurations_are_apart(tmp_path):
    rng = np.random.default_rng(5)
    same = [report(10.0, rng) for _ in range(4)]
    for one in same:
        history.apply(one, str(tmp_path))
    interval = same[-1]["stats"]["interval"]
    assert interval["history"]["runs"] == 4 and interval["history"]["between_run_sd"]["p90_ms"] == 0.0
    assert "rerun_repeats_only" not in interval["p90_ms"]
    elsewhere = report(20.0, rng, host="lab-2")  # another host: another history
    history.apply(elsewhere, str(tmp_path))
    assert elsewhere["stats"]["interval"]["history"]["runs"] == 1 and len(list(tmp_path.glob("*.jsonl"))) == 2


def test_what_the_history_leaves_alone(tmp_path):
    """Off: nothing kept. A run without repeats: its units are parts of one run, not runs. A torn last line (a
    run killed while writing): skipped. An unwritable folder: a warning, the run's own interval stands. The file
    keeps the last runs only."""
    rng = np.random.default_rng(6)
    off = report(10.0, rng)
    history.apply(off, history.OFF)
    assert "history" not in off["stats"]["interval"] and not list(tmp_path.iterdir())
    single = report(10.0, rng, repeats=1)
    history.apply(single, str(tmp_path))
    assert "history" not in single["stats"]["interval"] and not list(tmp_path.iterdir())
    for _ in range(2 * history.HISTORY_RUNS + 1):
        history.apply(report(10.0, rng), str(tmp_path))
    (file,) = tmp_path.glob("*.jsonl")
    assert len(file.read_text().splitlines()) <= 2 * history.HISTORY_RUNS
    file.write_text(file.read_text() + '{"per_unit": {"p90_ms": [1.0,')
    torn = report(10.0, rng)
    history.apply(torn, str(tmp_path))
    assert torn["stats"]["interval"]["history"]["runs"] == history.HISTORY_RUNS
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = report(10.0, rng)
    history.apply(unwritable, str(blocked / "history"))
    assert "history" not in unwritable["stats"]["interval"]


def test_bench_keeps_a_history_and_prints_the_rerun_interval(cli, models, tmp_path):
    """Through the command: the second run of a configuration reads the first; the table states the p90 with its
    interval from the repeats and where an identical rerun is expected."""
    argv = ["bench", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", *RUN_LENGTH, "--repeats", "3",
            "--no-sensors", "--progress", "off", "--history", tmp_path]
    for index in range(2):
        outcome = cli(*argv, "--json", tmp_path / f"r{index}.json")
        assert outcome.code == 0, outcome
    assert "an identical rerun: [" in outcome.out and "interval [" in outcome.out and "from 3 repeats" in outcome.out
    second = json.loads((tmp_path / "r1.json").read_text())["stats"]["interval"]
    assert second["history"]["runs"] == 2 and math.isfinite(second["history"]["between_run_sd"]["p90_ms"])
    off = cli(*argv[:-2], "--json", tmp_path / "off.json")  # the tests' default: EDGEBENCH_BENCH_HISTORY=off
    assert "history" not in json.loads((tmp_path / "off.json").read_text())["stats"]["interval"], off
