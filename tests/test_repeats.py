"""`edgebench bench --repeats N`: N fresh child processes (forked by the run's zygote) running the same request,
one report that keeps every repeat, and every death still named, now with the repeat it happened in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import jsonschema
import pytest

from edgebench.agent.engine import bench, stats
from edgebench.agent.engine.executors.native import find_binary
from edgebench.agent.engine.isolation import ChildLimits, run_child
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.engine.report import SCHEMA_FILE, SCHEMA_FILE_V1
from edgebench.agent.engine.zygote import Zygote
from edgebench.agent.errors import ChildFailed, UsageError

from .conftest import FAST, REPO, cli_argv, cli_env
from .repeat_plugins import loads

QUICK = RunSettings(min_runs=20, min_duration_s=0.0, warmup_runs=2, warmup_duration_s=0.0)
PLUGIN = "tests.repeat_plugins:CountsLoads"
BOARDS = REPO / "tests" / "fixtures" / "boards"
ZONE0 = "sys/class/thermal/thermal_zone0/temp"
V2 = json.loads(SCHEMA_FILE.read_text())
V1 = json.loads(SCHEMA_FILE_V1.read_text())
PER_FAST = [arg for arg in FAST if arg not in ("--repeats", "1")]  # FAST's run length, without its --repeats 1


@pytest.fixture
def loads_file(tmp_path, monkeypatch):
    path = tmp_path / "loads.txt"
    monkeypatch.setenv("EDGEBENCH_TEST_LOADS", str(path))
    return path


def test_repeats_are_fresh_processes_in_one_report(tiny_onnx, loads_file):
    path, _, _ = tiny_onnx()
    report = bench.run(bench.BenchRequest(str(path), runtime=PLUGIN, settings=QUICK, repeats=3,
                                          limits=ChildLimits(timeout_s=120)))
    jsonschema.validate(report, V2)
    assert report["schema"] == "edgebench.bench/2" and report["settings"]["repeats"] == 3
    repeats = report["repeats"]
    # Three processes loaded the model, each once: the ones the report names, none of them this one.
    pids = [r["pid"] for r in repeats]
    assert loads(loads_file) == pids and len(set(pids)) == 3 and os.getpid() not in pids
    assert [r["index"] for r in repeats] == [0, 1, 2]
    # The pooled samples are the repeats' samples, in run order, each tagged with its repeat.
    samples = report["samples"]
    counts = [len(r["samples"]["latency_ns"]) for r in repeats]
    assert sum(counts) == len(samples["latency_ns"]) == report["stats"]["count"] == report["timing"]["measured"]["runs"]
    assert samples["repeat"] == [i for i, n in enumerate(counts) for _ in range(n)]
    assert samples["latency_ns"] == [lat for r in repeats for lat in r["samples"]["latency_ns"]]
    # Per repeat, offsets count from that repeat's first run; pooled, from the first repeat's, on one clock.
    origin = report["timing"]["measured"]["origin_monotonic_ns"]
    assert origin == repeats[0]["origin_monotonic_ns"]
    for r in repeats:
        assert r["samples"]["start_offset_ns"][0] == 0
        assert r["stats"]["count"] == len(r["samples"]["latency_ns"]) == r["timing"]["measured"]["runs"]
        assert r["stats"]["p90_ms"] == stats.summarize(r["samples"]["latency_ns"])["p90_ms"]
    pooled = [r["origin_monotonic_ns"] - origin + off for r in repeats for off in r["samples"]["start_offset_ns"]]
    assert samples["start_offset_ns"] == pooled
    assert all(b > a for a, b in zip(pooled, pooled[1:]))
    # The statistics pool every sample; the interval comes from the spread between the repeats.
    assert report["stats"]["p90_ms"] == stats.summarize(samples["latency_ns"])["p90_ms"]
    assert report["stats"]["interval"] == stats.interval_summary([r["samples"]["latency_ns"] for r in repeats])
    # Memory over the repeats: the largest checkpoint any repeat showed.
    assert report["memory"]["peak_load_bytes"] == max(r["memory"]["peak_load_bytes"] for r in repeats)


def test_one_repeat_is_todays_single_run(cli, tiny_onnx, loads_file):
    """--repeats 1: one child, and the report is a version 1 report plus the version 2 additions."""
    path, _, _ = tiny_onnx()
    result = cli("bench", path, *FAST, "--runtime", PLUGIN, "--no-sensors", "--json", "-")
    assert result.code == 0, result
    report = result.json()
    jsonschema.validate(report, V2)
    (repeat,) = report["repeats"]
    assert loads(loads_file) == [repeat["pid"]]
    assert report["timing"] == repeat["timing"] and report["samples"]["latency_ns"] == repeat["samples"]["latency_ns"]
    assert report["samples"]["start_offset_ns"] == repeat["samples"]["start_offset_ns"]
    assert {k: v for k, v in report["stats"].items() if k != "interval"} == repeat["stats"]
    assert report["settings"]["min_runs"] == 40 and report["settings"]["repeats"] == 1
    old = json.loads(json.dumps(report))
    del old["repeats"], old["samples"]["repeat"], old["stats"]["interval"]
    del old["settings"]["repeats"], old["settings"]["repeat_gap_s"]
    old["schema"] = "edgebench.bench/1"
    jsonschema.validate(old, V1)
    assert "repeats " not in result.out  # the table has no repeats line for a single run


def parse(argv):
    """The BenchRequest the command line makes (nothing runs)."""
    from edgebench.agent.cli.bench import request
    from edgebench.agent.cli.main import build_parser

    return request(build_parser().parse_args(["bench", "m.tflite", *argv]))


def test_repeat_defaults_and_per_repeat_minimums():
    default = parse([])
    assert default.repeats == 5 and (default.settings.min_runs, default.settings.min_duration_s) == (100, 0.3)
    single = parse(["--repeats", "1"])
    assert single.repeats == 1 and (single.settings.min_runs, single.settings.min_duration_s) == (400, 1.0)
    given = parse(["--repeats", "3", "--min-runs", "7", "--min-duration", "2", "--repeat-gap", "500ms"])
    assert (given.repeats, given.settings.min_runs, given.settings.min_duration_s, given.repeat_gap_s) == \
        (3, 7, 2.0, 0.5)
    sustained = parse(["--sustained", "10"])
    assert sustained.repeats == 1
    with pytest.raises(UsageError, match="--sustained"):
        parse(["--sustained", "10", "--repeats", "3"])


def test_bad_repeat_flags_are_usage_errors(cli, tiny_onnx):
    path, _, _ = tiny_onnx()
    for bad in (["--repeats", "0"], ["--repeats", "many"], ["--repeat-gap", "-1"], ["--repeats", "10001"]):
        result = cli("bench", path, *bad)
        assert result.code == 2 and "--repeat" in result.err, (bad, result)


def test_crash_in_repeat_3_of_5_names_the_crash_and_the_repeat(cli, tiny_onnx, tmp_path):
    path, _, _ = tiny_onnx()
    loads_path = tmp_path / "loads.txt"
    result = cli("bench", path, *PER_FAST, "--repeats", "5", "--runtime", PLUGIN, "--no-sensors",
                 env={"EDGEBENCH_TEST_LOADS": str(loads_path), "EDGEBENCH_TEST_MISBEHAVE_AT": "3"})
    assert result.code == 5, result
    (line,) = result.err.strip().splitlines()
    assert "repeat 3 of 5: " in line and "segmentation fault (SIGSEGV)" in line and "Traceback" not in line
    assert len(set(loads(loads_path))) == 3  # the run stopped there: repeats 4 and 5 never started


@pytest.mark.parametrize(("how", "needle"), [
    ("segfault", "segmentation fault (SIGSEGV)"),
    ("abort", "aborted (SIGABRT)"),
    ("killed", "killed (SIGKILL)"),
    ("load-segfault", "SIGSEGV) while loading the model"),
    ("oom", "ran out of memory"),
    ("hang", "hung"),
])
def test_every_death_is_named_in_a_later_repeat(tiny_onnx, loads_file, monkeypatch, how, needle):
    """The deaths tests/test_isolation.py checks for one child, in the second of two: the same words, with the
    repeat; the timeout and the memory limit are each repeat's."""
    path, _, _ = tiny_onnx()
    monkeypatch.setenv("EDGEBENCH_TEST_MISBEHAVE_AT", "2")
    monkeypatch.setenv("EDGEBENCH_TEST_MISBEHAVE", how)
    limits = ChildLimits(timeout_s=3 if how == "hang" else 120, memory_bytes=1500 * 2**20 if how == "oom" else None)
    request = bench.BenchRequest(str(path), runtime=PLUGIN, settings=QUICK, repeats=2, limits=limits)
    with pytest.raises(ChildFailed) as failed:
        bench.run(request)
    message = str(failed.value)
    assert message.startswith("repeat 2 of 2: ") and needle in message, message
    if how == "hang":
        assert "no result after 3s" in message
    assert len(loads(loads_file)) == 2


def test_timeout_applies_to_each_repeat(cli, tiny_onnx, tmp_path):
    """Four repeats whose loads take 1 s each run for more than the 3 s timeout together: each has its own."""
    path, _, _ = tiny_onnx()
    loads_path = tmp_path / "loads.txt"
    result = cli("bench", path, *PER_FAST, "--repeats", "4", "--runtime", PLUGIN, "--no-sensors", "--timeout", "3",
                 "--json", "-", env={"EDGEBENCH_TEST_LOADS": str(loads_path), "EDGEBENCH_TEST_LOAD_SLEEP_S": "1"})
    assert result.code == 0, result
    assert len(result.json()["repeats"]) == 4 == len(set(loads(loads_path)))


def test_a_dead_zygote_is_named_not_hung(tiny_onnx, loads_file, monkeypatch):
    """Repeat 2 kills the zygote that forked it (as the OOM killer might): repeat 2 still reports, and repeat 3,
    which nothing can fork any more, fails with a named death instead of waiting forever."""
    path, _, _ = tiny_onnx()
    monkeypatch.setenv("EDGEBENCH_TEST_MISBEHAVE_AT", "2")
    monkeypatch.setenv("EDGEBENCH_TEST_MISBEHAVE", "kill-parent")
    request = bench.BenchRequest(str(path), runtime=PLUGIN, settings=QUICK, repeats=3,
                                 limits=ChildLimits(timeout_s=60))
    with pytest.raises(ChildFailed, match=r"^repeat 3 of 3: .*killed \(SIGKILL\) while starting"):
        bench.run(request)
    assert len(loads(loads_file)) == 2


def test_the_zygote_keeps_what_run_child_gives(tiny_onnx, tmp_path):
    """Through a zygote: the child's output is captured, its RSS sampled, its memory limit set in the child."""
    path, _, _ = tiny_onnx()
    _, worker_request, _ = bench.prepare(bench.BenchRequest(str(path), settings=QUICK))
    log = tmp_path / "child.log"
    with Zygote(worker_request["runtime"]) as zygote:
        outcome = run_child(zygote.launcher(worker_request), ChildLimits(timeout_s=60, rss_interval_s=0.01),
                            log_path=log)
        limited = run_child(zygote.launcher(worker_request), ChildLimits(timeout_s=60, memory_bytes=2**30))
        assert outcome.pid != limited.pid and zygote.pid not in (outcome.pid, limited.pid)
    assert outcome.rss_samples and outcome.result["timing"]["measured"]["runs"] >= 20
    assert limited.result["memory"]["rss_after_load_bytes"] > 0
    assert zygote.proc.returncode == 0  # closing the socket ends it


def test_native_harness_repeats_are_one_exec_each(models):
    if find_binary() is None:
        pytest.skip("the native harness is not built: run `make native`")
    report = bench.run(bench.BenchRequest(str(models["sine_float.tflite"]), runtime="native", settings=QUICK,
                                          repeats=2))
    jsonschema.validate(report, V2)
    assert len({r["pid"] for r in report["repeats"]}) == 2
    assert report["stats"]["count"] == sum(len(r["samples"]["latency_ns"]) for r in report["repeats"])


def test_cooldown_before_each_repeat(models, tmp_path):
    """The board heats up in every repeat (the plugin writes a hot zone 0 inside measured run 5) and the bench
    waits before each repeat until it is cool again: this test cools it whenever the bench says it is waiting."""
    jetson = tmp_path / "jetson"
    shutil.copytree(BOARDS / "jetson-orin-nano", jetson)
    env = cli_env({"EDGEBENCH_TEST_WRITE_FILE": str(jetson / ZONE0), "EDGEBENCH_TEST_WRITE_TEXT": "45000\n",
                   "EDGEBENCH_TEST_WRITE_AT": "6"})
    proc = subprocess.Popen(cli_argv("bench", models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192", "--runtime",
                                     "tests.plugins:WritesFileAtCall", "--warmup-runs", "0", "--warmup-duration",
                                     "0", "--min-runs", "20", "--min-duration", "0", "--repeats", "3",
                                     "--sensors-root", jetson, "--idle-baseline", "0", "--max-start-temp", "40",
                                     "--cooldown-timeout", "30", "--progress", "json", "--json",
                                     tmp_path / "r.json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    phases = []
    for text in proc.stderr:
        phase = json.loads(text)["phase"]
        if phase == "cooldown" and (not phases or phases[-1] != "cooldown"):
            for zone in jetson.glob("sys/class/thermal/thermal_zone*/temp"):
                zone.write_text("38000\n")
        phases.append(phase)
    # The report goes to a file: on stdout, a report larger than the pipe's buffer would block the bench before it
    # closes stderr, which this loop reads to its end first.
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (phases, err)
    waits = [p for i, p in enumerate(phases) if p == "cooldown" and (i == 0 or phases[i - 1] != "cooldown")]
    assert len(waits) == 3 and phases[0] == "cooldown"  # one wait before each repeat, each followed by its load
    assert [p for i, p in enumerate(phases) if i and phases[i - 1] == "cooldown" and p != "cooldown"] == ["load"] * 3
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, V2)
    repeat_waits = [r["physics"]["wait"] for r in report["repeats"]]
    assert repeat_waits[0]["start_temp_c"] == pytest.approx(47.656)  # the tree as recorded
    assert [w["start_temp_c"] for w in repeat_waits[1:]] == [pytest.approx(45.0)] * 2  # heated by the repeat
    assert all(w["temp_at_start_c"] <= 40 and w["waited_s"] > 0 for w in repeat_waits)
    assert report["physics"]["wait"] == repeat_waits[0]
    # One sampler across the run: energy over every repeat's measured phase, and per repeat.
    energy = report["physics"]["energy"]
    assert energy["inferences"] == report["timing"]["measured"]["runs"] == 60
    assert all(r["physics"]["energy"]["inferences"] == 20 for r in report["repeats"])
    assert energy["energy_j"] == pytest.approx(sum(r["physics"]["energy"]["energy_j"] for r in report["repeats"]))


def test_a_zygote_that_dies_while_starting_is_named():
    """Its death, named as a worker's would be, from its exit status and its own output."""
    zygote = Zygote("litert")
    os.kill(zygote.pid, signal.SIGSEGV)  # long before it has imported numpy and the runtime
    try:
        with pytest.raises(ChildFailed, match=r"segmentation fault \(SIGSEGV\) while starting"):
            zygote.wait_ready(60)
    finally:
        zygote.close()
