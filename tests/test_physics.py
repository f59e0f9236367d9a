"""Board physics in `edgebench bench`: sensors sampled beside the latencies, on recorded board trees that the
tests change while the run goes on (the way a real board's sysfs files change under load)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import jsonschema
import pytest

from edgebench.agent.physics import PhysicsSettings, RunPhysics
from edgebench.agent.report import SCHEMA_FILE

from .conftest import FAST, REPO

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


def later(delay_s: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), action()), daemon=True)
    thread.start()
    return thread


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


def test_throttling_onset_is_detected_during_the_run(cli, models, jetson):
    """The CPU zone crosses its passive trip point (99 °C) while the model runs."""
    later(1.5, lambda: (jetson / ZONE0).write_text("101500\n"))
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, "--min-runs", "40", "--min-duration", "2.5",
                 "--sensors-root", jetson, "--idle-baseline", "0", "--json", "-")
    assert result.code == 0, result
    throttling = result.json()["physics"]["throttling"]
    assert throttling["detected"]
    (event,) = [e for e in throttling["events"] if e["sensor"] == "thermal/cpu-thermal"]
    assert event["reason"] == "over_passive_trip" and event["value"] == pytest.approx(101.5)
    assert 0 <= throttling["onset_s"] <= 2.5


def test_energy_per_inference_is_net_of_idle(jetson):
    """Idle at the fixture's draw, then one more ampere on VDD_IN while 'inferences' run for a second."""
    physics = RunPhysics(PhysicsSettings(rate_hz=50, root=str(jetson), idle_s=0.3))
    physics.measure_idle()
    volts = float(ina_file(jetson, "in").read_text()) / 1000
    idle_amps = float(ina_file(jetson, "curr").read_text()) / 1000
    ina_file(jetson, "curr").write_text(f"{int(idle_amps * 1000) + 1000}\n")
    physics.start()
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
    assert 0.9 <= energy["window_s"] <= wall / 1e9 + 1e-6


def test_wait_for_cool_board(cli, models, jetson):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--sensors-root", jetson, "--max-start-temp", "40",
                 "--cooldown-timeout", "1")
    assert result.code == 1 and "still at 47.7 °C" in result.err and "--max-start-temp 40" in result.err, result

    def cool_down():
        for zone in jetson.glob("sys/class/thermal/thermal_zone*/temp"):
            zone.write_text("38000\n")

    later(1.0, cool_down)
    result = cli("bench", models["sine_float.tflite"], *FAST, "--sensors-root", jetson, "--max-start-temp", "40",
                 "--cooldown-timeout", "30", "--json", "-")
    assert result.code == 0, result
    wait = result.json()["physics"]["wait"]
    assert wait["start_temp_c"] == pytest.approx(47.656) and wait["temp_at_start_c"] <= 40
    assert 0.8 <= wait["waited_s"] < 30


def test_pi_throttle_bits_during_the_run(cli, models, tmp_path):
    root = tmp_path / "rpi5"
    shutil.copytree(BOARDS / "rpi5", root)
    later(1.0, lambda: (root / "commands" / "vcgencmd_get_throttled").write_text("throttled=0x50005\n"))
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, "--min-runs", "40", "--min-duration", "3",
                 "--sensors-root", root, "--idle-baseline", "0", "--json", "-")
    assert result.code == 0, result
    reasons = {e["reason"] for e in result.json()["physics"]["throttling"]["events"]}
    assert {"pi_under_voltage", "pi_throttled"} <= reasons


def test_sustained_mode_reports_windows(cli, models, jetson):
    result = cli("bench", models["ppocr_cls.onnx"], *CLS, "--sustained", "2s", "--window", "0.5",
                 "--sensors-root", jetson,
                 "--idle-baseline", "0", "--json", "-")
    assert result.code == 0, result
    report = result.json()
    sustained = report["sustained"]
    assert 3 <= len(sustained["windows"]) <= 5
    assert sum(w["runs"] for w in sustained["windows"]) == report["stats"]["count"]
    assert sustained["cold_p90_ms"] > 0 and sustained["steady_p90_ms"] > 0
    assert 1.9 <= report["timing"]["measured"]["duration_s"] <= 2.5
    assert "thermal/cpu-thermal" in sustained["windows"][0]


def test_no_sensors_and_bad_rate(cli, models):
    result = cli("bench", models["sine_float.tflite"], *FAST, "--no-sensors", "--json", "-")
    assert result.code == 0 and "physics" not in result.json()
    result = cli("bench", models["sine_float.tflite"], "--sensor-rate", "0")
    assert result.code == 2 and "--sensor-rate" in result.err
