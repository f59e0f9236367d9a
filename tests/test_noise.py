"""The noise a bench report records (agent/engine/noise.py, docs/report.md "noise"): the /proc readers against a
recorded tree (tests/fixtures/proc/), the figures and warnings built from them, real runs whose report has the
section, --cpus pinning the benchmark process, and a fleet job's cpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest

from edgebench.agent.engine import noise
from edgebench.agent.engine.report import SCHEMA_FILE, render
from edgebench.agent.fleet import protocol as p

from .conftest import FAST, REPO

TREE = REPO / "tests" / "fixtures" / "proc" / "x86-vm"
PID = 28055  # the recorded process (tests/fixtures/proc/README.md)
RPI4 = REPO / "tests" / "fixtures" / "boards" / "rpi4"


# ---------------------------------------------------------------- readers on the recorded tree

def test_readers_read_the_recorded_tree():
    start, end = str(TREE / "start"), str(TREE / "end")
    cpu = noise.read_cpu_times(end)
    assert cpu == {"user": 493600, "nice": 0, "system": 87178, "idle": 920596, "iowait": 5773, "irq": 0,
                   "softirq": 3634, "steal": 316}
    assert noise.read_loadavg(start) == [1.2, 0.76, 0.84]
    assert noise.list_tasks(PID, end) == [28055, 28056]
    assert noise.read_stat(PID, None, start) == {"state": "R", "cpu_ticks": 29, "threads": 2, "processor": 0}
    assert noise.read_stat(PID, 28056, end) == {"state": "S", "cpu_ticks": 5, "threads": 2, "processor": 1}
    assert noise.read_switches(PID, 28055, end) == {"voluntary": 2678, "involuntary": 290}
    assert noise.read_migrations(PID, 28055, end) == 7 and noise.read_migrations(PID, 28056, end) == 5
    assert noise.read_stat(PID, 99999, end) is None and noise.read_switches(1, None, end) is None
    assert noise.read_cpu_times("/nonexistent") is None and noise.list_tasks(PID, "/nonexistent") == []


def test_stat_fields_count_after_the_command_name():
    """The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'."""
    line = (TREE / "end" / "proc" / str(PID) / "stat").read_text().replace("(python3)", "(a) b (c))")
    assert noise.parse_stat(line) == {"state": "S", "cpu_ticks": 80, "threads": 2, "processor": 1}
    assert noise.parse_stat("12 (cut short) R 1 2") is None


def test_cpufreq_is_the_sensor_plugins_reading():
    assert noise.read_cpufreq(str(RPI4)) == {"policy0": {"cpus": "0-3", "cur_hz": 1.8e9, "governor": "ondemand"}}
    assert noise.read_cpufreq(str(TREE / "start")) == {}


# ---------------------------------------------------------------- figures and warnings

def recorded_raw(root=TREE) -> dict:
    """A probe record made of the two recorded snapshots, 1 s apart, as the worker would carry them."""
    start = noise.snapshot(PID, str(root / "start"), clock=lambda: 0)
    end = noise.snapshot(PID, str(root / "end"), clock=lambda: 1_000_000_000)
    return {"pid": PID, "end_by": "phase", "ticks": [], "clock_ticks_per_s": 100, "tick_cost": None,
            "start": dict(start, self_cpu_s=0.0, cpufreq={}, read_by="child"),
            "end": dict(end, self_cpu_s=0.0, cpufreq={}, read_by="child")}


def a_run(runs: int = 1000, origin: int = 0, every_ns: int = 1_000_000) -> dict:
    """What section() reads of a run: its origin and samples (runs every ms, each 0.5 ms long)."""
    return {"timing": {"measured": {"origin_monotonic_ns": origin}},
            "samples": {"start_offset_ns": [i * every_ns for i in range(runs)], "latency_ns": [every_ns // 2] * runs}}


def test_section_from_the_recorded_snapshots():
    found = noise.section(recorded_raw(), a_run(), requested_cpus=None, runtime_threads=None)
    assert found["window"] == {"start_offset_ns": 0, "end_offset_ns": 1_000_000_000, "duration_s": 1.0,
                               "runs": 1000, "closed_by": "phase"}
    assert found["context_switches"] == {"voluntary": (2678 - 822) + (2533 - 809), "involuntary": 223,
                                         "main_thread_involuntary": 223, "involuntary_per_run": 0.223}
    assert found["migrations"] == {"count": 12, "source": "sched", "per_run": 0.012}
    cpu = found["cpu"]
    assert (cpu["total_ticks"], cpu["steal_ticks"], cpu["steal_fraction"]) == (190, 0, 0.0)
    assert cpu["machine_busy_s"] == pytest.approx(1.5) and cpu["child_cpu_s"] == pytest.approx(0.51)
    assert cpu["other_cores"] == pytest.approx(0.99)
    # Both threads running on CPU 0 at the start; at the end the main thread on 1, the other asleep (not counted).
    assert found["cores"] == [0, 1] and found["core_samples"] == {"0": 1, "1": 1}
    assert found["threads"] == {"start": 2, "end": 2, "min": 2, "max": 2, "runtime": None}
    assert found["loadavg"]["start"] == [1.2, 0.76, 0.84]
    assert found["warnings"] == ["involuntary context switches: 223 (22% of runs preempted)",
                                 "other processes used 1.0 cores during the run",
                                 "the child migrated between cores 12 times"]


def test_runs_outside_the_readings_are_not_counted():
    """Only runs wholly between the two readings count as the window's runs (every per-run rate's denominator)."""
    found = noise.section(recorded_raw(), a_run(runs=2000, origin=-500_000_000))
    assert found["window"]["start_offset_ns"] == 500_000_000
    assert found["window"]["runs"] == 1000


def test_migrations_without_the_sched_file_are_moves_seen(tmp_path):
    """Kernels without CONFIG_SCHED_DEBUG have no sched file: moves between samples are counted, a lower bound."""
    shutil.copytree(TREE, tmp_path / "tree")
    for path in (tmp_path / "tree").rglob("sched"):
        path.unlink()
    found = noise.section(recorded_raw(tmp_path / "tree"), a_run())
    assert found["migrations"] == {"count": 2, "source": "samples", "per_run": 0.002}
    assert "the child migrated" not in " ".join(found["warnings"])


def test_cpufreq_changes_come_from_the_physics_samples():
    raw = recorded_raw()
    policy = {"policy0": {"cpus": "0-1", "cur_hz": 1.8e9, "governor": "ondemand"},
              "policy4": {"cpus": "4-7", "cur_hz": 2.4e9, "governor": "performance"}}
    raw["start"]["cpufreq"] = raw["end"]["cpufreq"] = policy
    clocks = [1.8e9, 1.2e9, 1.2e9, 1.8e9, 0.6e9]  # 3 changes inside the window, counted from the one before it
    samples = [[-100_000_000, {"cpufreq/policy0/cur": 1.8e9, "cpufreq/policy4/cur": 1.0e9}]]
    samples += [[i * 200_000_000, {"cpufreq/policy0/cur": hz, "cpufreq/policy4/cur": 2.4e9}]
                for i, hz in enumerate(clocks)]
    physics = {"root": "/", "samples": samples}
    found = noise.section(raw, a_run(), physics=physics, physics_origin_ns=0)["cpufreq"]
    assert found["source"] == "sensors" and found["changes"] == 3 and found["governors"] == ["ondemand"]
    assert found["policies"]["policy4"]["child_ran_here"] is False  # its change is not the run's
    assert found["policies"]["policy4"]["changes"] == 1
    # A recorded board tree's clocks are not this machine's: only the two ends count then.
    found = noise.section(raw, a_run(), physics=dict(physics, root=str(RPI4)), physics_origin_ns=0)["cpufreq"]
    assert found["source"] == "boundaries" and found["changes"] == 0


def quiet(**changes) -> dict:
    section = noise._empty(None, None, None)
    section.update(window={"runs": 1000, "duration_s": 1.0}, cpu={"steal_fraction": 0.0, "other_cores": 0.1},
                   context_switches={"involuntary": 2, "voluntary": 0},
                   migrations={"count": 3, "source": "sched"},
                   cpufreq={"source": "sensors", "changes": 0, "governors": ["performance"]})
    section.update(changes)
    return section


@pytest.mark.parametrize(("changes", "warning"), [
    ({}, None),
    ({"cpu": {"steal_fraction": 0.08, "other_cores": 0.1}}, "steal time 8% of the run"),
    ({"cpu": {"steal_fraction": 0.025, "other_cores": 0.0}}, "steal time 2.5% of the run"),
    ({"cpu": {"steal_fraction": 0.0, "other_cores": 1.4}}, "other processes used 1.4 cores during the run"),
    ({"context_switches": {"involuntary": 1234}}, "involuntary context switches: 1,234 (100% of runs preempted)"),
    ({"context_switches": {"involuntary": 9}}, None),  # under 1% of 1000 runs
    ({"migrations": {"count": 57, "source": "sched"}}, "the child migrated between cores 57 times"),
    ({"migrations": {"count": 57, "source": "samples"}}, "the child migrated between cores at least 57 times"),
    ({"cpufreq": {"source": "sensors", "changes": 12, "governors": ["ondemand"]}},
     "cpufreq changed 12 times (governor ondemand)"),
    ({"cpufreq": {"source": "boundaries", "changes": 1, "governors": ["schedutil"]}},
     "cpufreq changed between the start and the end (governor schedutil)"),
    ({"threads": {"runtime": 4}, "affinity": {"requested": [0], "effective": [0]}},
     "the runtime runs 4 threads on 1 allowed core"),
])
def test_each_warning_and_its_threshold(changes, warning):
    found = noise.warnings(quiet(**changes))
    assert found == ([warning] if warning else [])


def test_the_table_prints_one_noise_line():
    assert noise.warning_line({"warnings": []}) is None
    found = ["steal time 8% of the run", "other processes used 1.4 cores during the run"]
    line = noise.warning_line({"warnings": found})
    assert line.startswith("NOISY     steal time 8% of the run; other processes used 1.4 cores") and "\n" not in line


def test_repeats_combine_into_the_runs_noise():
    one = noise.section(recorded_raw(), a_run())
    both = noise.combine([one, one])
    assert both["window"]["runs"] == 2000 and both["window"]["repeats"] == 2
    assert both["context_switches"]["involuntary"] == 446 and both["context_switches"]["involuntary_per_run"] == 0.223
    assert both["migrations"] == {"count": 24, "per_run": 0.012, "source": "sched"}
    assert both["cpu"]["other_cores"] == pytest.approx(0.99) and both["cpu"]["total_ticks"] == 380
    assert both["core_samples"] == {"0": 2, "1": 2} and both["samples"] == 4
    assert both["warnings"] == ["involuntary context switches: 446 (22% of runs preempted)",
                                "other processes used 1.0 cores during the run",
                                "the child migrated between cores 24 times"]


# ---------------------------------------------------------------- the probe on a live process

def test_the_probe_reads_a_live_process_itself_when_the_event_carries_nothing():
    """The native harness's way: a `measure` phase event without counters, then the result closes the window."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        probe = noise.NoiseProbe(child.pid)
        probe.observe({"type": "progress", "phase": "load", "runs": 0})
        assert probe.start is None
        probe.observe({"type": "phase", "phase": "measure"})
        probe.tick(probe.start["t_end_ns"] + 1)
        probe.observe({"type": "progress", "phase": "measure", "runs": 10})  # still measuring
        assert probe.end is None
        probe.observe({"type": "result", "result": {}})
        record = probe.record()
    finally:
        child.kill()
        child.wait()
    assert record["start"]["read_by"] == record["end"]["read_by"] == "supervisor" and record["end_by"] == "result"
    assert record["tick_cost"]["ticks"] == 1
    run = a_run(runs=0, origin=record["start"]["t_end_ns"])
    found = noise.section(record, run)
    assert found["threads"]["max"] >= 1 and found["cores"] and found["samples"] == 3
    assert found["affinity"]["effective"] == sorted(os.sched_getaffinity(0))  # inherited from this process


def test_the_workers_own_snapshot_is_preferred():
    """The Python worker reads its counters at the boundary itself and sends them with the phase event."""
    event = noise.phase_event("measure")
    assert event["noise"]["pid"] == os.getpid() and str(os.getpid()) in event["noise"]["tasks"]
    probe = noise.NoiseProbe(os.getpid())
    probe.observe(event)
    assert probe.start["read_by"] == "child" and probe.start["t_begin_ns"] == event["noise"]["t_begin_ns"]
    assert "self_cpu_s" in probe.start and "cpufreq" in probe.start
    other = noise.NoiseProbe(os.getpid() + 1)  # another process's counters are never taken for the child's
    other.observe(event)
    assert other.start is None or other.start["read_by"] == "supervisor"


# ---------------------------------------------------------------- real runs

def bench_json(cli, tmp_path, *args):
    result = cli("bench", *args, *FAST, "--no-sensors", "--json", tmp_path / "r.json")
    assert result.code == 0, result
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    return report, result


@pytest.mark.slow
def test_a_real_run_reports_its_noise(cli, models, tmp_path):
    """A model whose every run blocks once (tests.plugins:SleepsEachCall): the counters are the kernel's, so the
    window's runs bound the switches from below whatever else the machine does."""
    report, result = bench_json(cli, tmp_path, models["ppocr_cls.onnx"], "--shape", "x=1x3x48x192",
                                "--runtime", "tests.plugins:SleepsEachCall", "--threads", "1")
    found = report["noise"]
    runs = report["timing"]["measured"]["runs"]
    assert found["window"]["runs"] == runs and found["window"]["closed_by"] == "phase"
    switches = found["context_switches"]
    assert switches["voluntary"] + switches["involuntary"] >= runs > 0
    assert found["cores"] and set(found["cores"]) <= set(os.sched_getaffinity(0))
    assert found["threads"]["min"] >= 1 and found["threads"]["max"] >= found["threads"]["min"]
    assert found["threads"]["runtime"] == 1
    assert found["affinity"] == {"requested": None, "effective": sorted(os.sched_getaffinity(0))}
    assert found["cpu"]["child_cpu_s"] >= 0 and 0 <= found["cpu"]["steal_fraction"] <= 1
    assert found["migrations"]["source"] in ("sched", "samples") and found["loadavg"]["end"]
    assert ("NOISY" in result.out) == bool(found["warnings"])
    assert render(report).count("NOISY") == int(bool(found["warnings"]))


@pytest.mark.slow
def test_cpus_pins_the_benchmark_process(cli, models, tmp_path):
    report, _ = bench_json(cli, tmp_path, models["sine_float.tflite"], "--cpus", "0")
    found = report["noise"]
    assert found["cores"] == [0] and list(found["core_samples"]) == ["0"]
    assert found["affinity"] == {"requested": [0], "effective": [0]}
    assert found["migrations"]["count"] == 0


@pytest.mark.parametrize(("value", "says"), [
    ("99", "--cpus 99: CPU 99 is not available here (available: "),
    ("1-0", "argument --cpus: '1-0' is not a CPU list"),
    ("x", "argument --cpus: 'x' is not a CPU list"),
    ("5000", "names a CPU above 1023"),
])
def test_a_cpu_that_is_not_there_is_a_usage_error(cli, models, value, says):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--cpus", value)
    assert result.code == 2 and says in result.err and "Traceback" not in result.err, result
    assert len(result.err.strip().splitlines()) == 1, result


def test_the_native_harness_does_not_take_cpus():
    from edgebench.agent.errors import UsageError

    with pytest.raises(UsageError, match="taskset"):
        noise.check_cpus([0], "native")
    noise.check_cpus(None, "native")


# ---------------------------------------------------------------- the fleet job

SHA = "a" * 64


def test_a_job_with_cpus_round_trips():
    job = p.Job(job_id="b1-0001", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10), cpus=[0, 2, 3])
    payload = job.to_payload(1.7e9)
    assert payload["cpus"] == [0, 2, 3]
    assert p.Job.from_payload(json.loads(json.dumps(payload))) == job
    assert "cpus" not in p.Job(job_id="b1-0002", device="dev1", model=job.model).to_payload(1.7e9)


@pytest.mark.parametrize("cpus", [[-1], [True], [1024], [0.5], "0", [0] * 1025, {"0": 1}])
def test_a_job_refuses_cpus_that_are_not_cpu_ids(cpus):
    payload = p.Job(job_id="b1-0001", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10)).to_payload(1.7e9)
    with pytest.raises(p.ProtocolError, match="cpus"):
        p.check_job(dict(payload, cpus=cpus))


def test_the_job_runner_and_push_pass_cpus(tmp_path):
    from edgebench.agent.cli import push as push_cli
    from edgebench.agent.cli.main import build_parser
    from edgebench.agent.fleet.client import job_matrix
    from edgebench.agent.fleet.jobrunner import build_request

    job = p.Job(job_id="b1-0001", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10), cpus=[1])
    assert build_request(job, str(tmp_path / "m.onnx")).cpus == [1]
    assert build_request(p.Job(job_id="b1-2", device="dev1", model=job.model), "m.onnx").cpus is None
    args = build_parser().parse_args(["push", "m.onnx", "--cpus", "0-1,4"])
    assert job_matrix(push_cli.job_options(args), [])["options"]["cpus"] == [0, 1, 4]
    assert "cpus" not in job_matrix(push_cli.job_options(build_parser().parse_args(["push", "m.onnx"])), [])["options"]
    assert "cpus" in p.JOB_OPTIONS  # the collector's API takes it in a matrix's options
