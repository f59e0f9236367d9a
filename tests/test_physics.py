"""Board physics in `edgebench bench`: sensors sampled beside the latencies, on recorded board trees that the
tests change while the run goes on (the way a real board's sysfs files change under load)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import jsonschema
import numpy as np
import pytest

from edgebench.agent.engine.physics import PhysicsSettings, Quantity, RunPhysics, sustained_plan, sustained_windows
from edgebench.agent.engine.report import SCHEMA_FILE
from edgebench.agent.errors import UsageError

from .conftest import FAST, REPO, cli_argv, cli_env

BOARDS = REPO / "tests" / "fixtures" / "boards"
CLS = ("--shape", "x=1x3x48x192")  # ppocr_cls: ~1 ms a run, so a few seconds make a small report
ZONE0 = "sys/class/thermal/thermal_zone0/temp"  # cpu-thermal on the Orin Nano tree, passive trip 99 °C


@pytest.fixture
def jetson(tmp_path):
    root = tmp_path / "jetson"
    shutil.copytree(BOARDS / "jetson-orin-nano", root)
    return root


def ina_file(root, suffix: str):
    """The VDD_IN channel's file of the INA3221 hwmon device in the tree (curr1_input, in1_input)."""
    for label in root.glob("sys/class/hwmon/hwmon*/in*_label"):
        if label.read_text().strip() == "VDD_IN":
            channel = label.name.split("_")[0][2:]
            return label.with_name(f"{suffix}{channel}_input")
    raise AssertionError("no VDD_IN rail in the fixture")


def test_report_has_temperature_clocks_and_power(cli, models, jetson):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--sensors-root", jetson, "--idle-baseline", "0.2",
                 "--json", "-")
    assert result.code == 0, result
    report = result.json()
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    physics = report["physics"]
    assert physics["window"]["thermal/cpu-thermal"]["max"] == pytest.approx(47.656)
    assert physics["window"]["cpufreq/policy0/cur"]["unit"] == "Hz"
    assert "cpufreq/policy0/max" not in physics["window"]  # limits are provenance, not samples
    volts = float(ina_file(jetson, "in").read_text()) / 1000
    amps = float(ina_file(jetson, "curr").read_text()) / 1000
    energy = physics["energy"]
    assert energy["source"] == "hwmon/ina3221/VDD_IN/power"
    assert energy["avg_w"] == pytest.approx(volts * amps) and energy["idle_w"] == pytest.approx(volts * amps)
    assert len(physics["samples"]) >= 2 and not physics["throttling"]["detected"]
    # Samples are on the latency samples' clock: some fall inside the measured window [0, duration].
    duration_ns = report["timing"]["measured"]["duration_s"] * 1e9
    assert any(0 <= offset <= duration_ns for offset, _ in physics["samples"])


def at_measured_run(run: int, path, text: str) -> dict:
    """Environment for tests.plugins:WritesFileAtCall: write ``text`` to ``path`` inside measured run ``run``
    (with --warmup-runs 0 --warmup-duration 0, call 1 is the first inference and call run + 1 measured run)."""
    return {"EDGEBENCH_TEST_WRITE_FILE": str(path), "EDGEBENCH_TEST_WRITE_TEXT": text,
            "EDGEBENCH_TEST_WRITE_AT": str(run + 1)}


# The event happens inside a known measured run, so these tests do not race the run's start; the sampler's last
# tick at stop() sees it even when the run ends right after it.
AT_RUN = ("--runtime", "tests.plugins:WritesFileAtCall", "--warmup-runs", "0", "--warmup-duration", "0",
          "--min-runs", "300", "--min-duration", "0")


def assert_onset_within_run(report: dict, onset_s: float) -> None:
    last_tick_s = report["physics"]["samples"][-1][0] / 1e9  # the stop() tick, after the last run
    assert 0 <= onset_s <= last_tick_s


def test_throttling_onset_is_detected_during_the_run(cli, models, jetson):
    """The CPU zone crosses its passive trip point (99 °C) in measured run 150 of 300."""
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, *AT_RUN, "--sensors-root", jetson, "--idle-baseline",
                 "0", "--json", "-", env=at_measured_run(150, jetson / ZONE0, "101500\n"))
    assert result.code == 0, result
    report = result.json()
    throttling = report["physics"]["throttling"]
    assert throttling["detected"]
    (event,) = [e for e in throttling["events"] if e["sensor"] == "thermal/cpu-thermal"]
    assert event["reason"] == "over_passive_trip" and event["value"] == pytest.approx(101.5)
    assert_onset_within_run(report, throttling["onset_s"])


def test_energy_per_inference_is_net_of_idle(jetson):
    """Idle at the fixture's draw, then one more ampere on VDD_IN while 'inferences' run for a second."""
    physics = RunPhysics(PhysicsSettings(rate_hz=50, root=str(jetson), idle_s=0.3))
    physics.measure_idle()
    volts = float(ina_file(jetson, "in").read_text()) / 1000
    idle_amps = float(ina_file(jetson, "curr").read_text()) / 1000
    ina_file(jetson, "curr").write_text(f"{int(idle_amps * 1000) + 1000}\n")
    physics.start()
    while not physics.sampler.series:  # the window starts after the sampler's first tick: it covers all of it
        time.sleep(0.001)
    origin = time.perf_counter_ns()
    time.sleep(1.0)
    wall = time.perf_counter_ns() - origin
    series = physics.stop()
    summary = physics.summarize(series, origin, wall, runs=1000)
    energy = summary["energy"]
    assert energy["idle_w"] == pytest.approx(volts * idle_amps)
    assert energy["avg_w"] == pytest.approx(volts * (idle_amps + 1), rel=1e-6)
    # (P - P_idle) = volts x 1 A over the sampled part of the window, shared by 1000 inferences.
    assert energy["energy_per_inference_mj"] == pytest.approx(volts * energy["window_s"], rel=1e-6)
    assert energy["window_s"] == pytest.approx(wall / 1e9)  # the stop() tick closes the window


def test_wait_for_cool_board(cli, models, jetson):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--sensors-root", jetson, "--max-start-temp", "40",
                 "--cooldown-timeout", "1")
    assert result.code == 1 and "still at 47.7 °C" in result.err and "--max-start-temp 40" in result.err, result

    # The board cools once the bench says it is waiting (its first progress event comes after a hot reading).
    proc = subprocess.Popen(cli_argv("bench", models["sine_float.tflite"], *FAST, "--sensors-root", jetson,
                                     "--max-start-temp", "40", "--cooldown-timeout", "300", "--progress", "json",
                                     "--json", "-"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env())
    phases = []
    for text in proc.stderr:
        phases.append(json.loads(text)["phase"])
        if phases[-1] == "cooldown":
            for zone in jetson.glob("sys/class/thermal/thermal_zone*/temp"):
                zone.write_text("38000\n")
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and phases == ["cooldown"], (phases, err)
    wait = json.loads(out)["physics"]["wait"]
    assert wait["start_temp_c"] == pytest.approx(47.656) and wait["temp_at_start_c"] <= 40
    assert 0 < wait["waited_s"] < 300
    assert [json.loads(line)["phase"] for line in err.splitlines()][:2] == ["load", "warmup"]


def test_pi_throttle_bits_during_the_run(cli, models, tmp_path):
    root = tmp_path / "rpi5"
    shutil.copytree(BOARDS / "rpi5", root)
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, *AT_RUN, "--sensors-root", root, "--idle-baseline", "0",
                 "--json", "-",
                 env=at_measured_run(150, root / "commands" / "vcgencmd_get_throttled", "throttled=0x50005\n"))
    assert result.code == 0, result
    report = result.json()
    throttling = report["physics"]["throttling"]
    assert {"pi_under_voltage", "pi_throttled"} <= {e["reason"] for e in throttling["events"]}
    assert_onset_within_run(report, throttling["onset_s"])


def test_sustained_mode_reports_windows(cli, models, jetson):
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, "--sustained", "2s", "--window", "0.5",
                 "--sensors-root", jetson,
                 "--idle-baseline", "0", "--json", "-")
    assert result.code == 0, result
    report = result.json()
    sustained, offsets = report["sustained"], report["samples"]["start_offset_ns"]
    # Each window holds exactly the runs that started in it; no wall-clock bound on how many runs that is.
    expected = {}
    for offset in offsets:
        expected[offset // 500_000_000] = expected.get(offset // 500_000_000, 0) + 1
    assert {round(w["start_s"] / 0.5): w["runs"] for w in sustained["windows"]} == expected
    assert sum(w["runs"] for w in sustained["windows"]) == report["stats"]["count"]
    assert sustained["cold_p90_ms"] > 0 and sustained["steady_p90_ms"] > 0
    assert report["timing"]["measured"]["duration_s"] >= 2.0  # a sustained run lasts at least what was asked
    assert "thermal/cpu-thermal" in sustained["windows"][0]


def test_no_sensors_and_bad_rate(cli, models):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--no-sensors", "--json", "-")
    assert result.code == 0 and "physics" not in result.json()
    result = cli("bench", models["sine_float.tflite"], "--sensor-rate", "0")
    assert result.code == 2 and "--sensor-rate" in result.err


def test_sustained_plan():
    """--sustained D: one measured phase of exactly D, windows of D/20 but at least 1 s, or --window W."""
    assert sustained_plan(None) == ({}, None)
    settings, window = sustained_plan(600)
    assert settings == {"min_runs": 1, "min_duration_s": 600, "max_duration_s": 600} and window == 30
    assert sustained_plan(10).window_s == 1.0, "never under a second"
    assert sustained_plan(2, 0.5).window_s == 0.5
    for args, needle in [((None, 5), "give --sustained too"), ((2, 5), "longer than --sustained"),
                         ((2, None, False), "--no-sensors")]:
        with pytest.raises(UsageError, match=needle):
            sustained_plan(*args)


def test_sustained_windows_use_the_stats_percentiles():
    """Per-window p50/p90 are exactly numpy's linear-interpolation percentiles (engine.stats); clock limits are
    not summarised per window."""
    rng = np.random.default_rng(0)
    offsets = np.sort(rng.integers(0, 3_000_000_000, 997)).tolist()
    latency = rng.lognormal(14, 0.3, 997).astype(np.int64).tolist()
    series = [(t, {"clock": 1.5e9, "cap": 1.8e9}) for t in range(0, 3_000_000_000, 100_000_000)]
    units = {"clock": Quantity("frequency", "Hz", "current"), "cap": Quantity("frequency", "Hz", "limit_max")}
    windows = sustained_windows(latency, offsets, series, units, 1.0)
    lat, off = np.asarray(latency) / 1e6, np.asarray(offsets)
    for w in windows:
        mask = (off >= w["start_s"] * 1e9) & (off < (w["start_s"] + 1) * 1e9)
        assert (w["p50_ms"], w["p90_ms"]) == (float(np.percentile(lat[mask], 50)), float(np.percentile(lat[mask], 90)))
        assert w["clock"] == 1.5e9 and "cap" not in w
    assert sum(w["runs"] for w in windows) == 997
