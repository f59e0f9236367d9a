"""This machine's real root, real subprocesses, and the optional plugins (NVML, psutil) with stand-ins."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest

from edgebench.agent import sensors
from edgebench.agent.engine.physics.sampler import Sampler
from edgebench.agent.sensors import KIND_UNITS, LocalRunner, jetson, nvml, psutil_temps
from edgebench.agent.sensors.fs import LocalFS


def test_real_root_does_not_crash():
    """Whatever this machine has (a CI container may have no thermal zones, cpufreq or hwmon at all)."""
    found = sensors.discover("/")
    try:
        readings = sensors.read_all(found)
        for r in readings:
            assert r.unit == KIND_UNITS[r.kind]
        info = sensors.board_info("/")
        assert info.get("kernel") == os.uname().release
        assert info.get("ram_bytes", 0) > 0
        with Sampler(found, rate_hz=50) as sampler:
            time.sleep(0.05)
        assert sampler.series
    finally:
        sensors.close_all(found)


def test_local_runner():
    runner = LocalRunner()
    assert runner.run(["echo", "hi"]) == "hi\n"
    assert runner.available("sh") and not runner.available("edgebench-no-such-command")
    assert runner.run(["edgebench-no-such-command"]) is None
    assert runner.run(["sh", "-c", "echo partial; exit 3"]) is None
    start = time.monotonic()
    assert runner.run(["sleep", "5"], timeout=0.2) is None
    assert time.monotonic() - start < 3


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """A stand-in tegrastats on PATH that prints a line every 50 ms until killed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tegrastats"
    script.write_text(f"#!{sys.executable}\n" + """import sys, time
i = 0
while True:
    i += 1
    print(f"RAM {2000 + i}/7620MB CPU [5%@729,off] cpu@45.5C VDD_IN {4000 + i}mW/4000mW", flush=True)
    time.sleep(0.05)
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    return root


def test_tegrastats_stream_on_the_board(fake_tegrastats):
    runner = LocalRunner()
    assert runner.first_line(jetson.TEGRASTATS).startswith("RAM 2001/7620MB")
    (sensor,) = sensors.discover(fake_tegrastats, runner, plugins=["jetson"])
    try:
        first = {r.sensor: r.value for r in sensor.read()}
        assert first["tegrastats/temp/cpu"] == 45.5 and first["tegrastats/cpu0/cur"] == 729e6
        stream = sensor._stream
        assert stream is not None and stream.alive
        time.sleep(0.3)
        later = {r.sensor: r.value for r in sensor.read()}
        assert later["tegrastats/VDD_IN/power"] > first["tegrastats/VDD_IN/power"], "the latest line is read"
        assert sensor._stream is stream, "one process for the whole run"
    finally:
        sensor.close()
    assert not stream.alive


class FakeNvml(types.ModuleType):
    """Just enough of pynvml for the plugin: one GPU."""

    def __init__(self):
        super().__init__("pynvml")
        self.nvmlInit = lambda: None
        self.nvmlDeviceGetCount = lambda: 1
        self.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
        self.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
        self.nvmlDeviceGetTemperature = lambda h, sensor: 41
        self.nvmlDeviceGetPowerUsage = lambda h: 71234
        self.nvmlDeviceGetClockInfo = lambda h, clock: 1980
        self.nvmlDeviceGetMaxClockInfo = lambda h, clock: 1980
        self.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x1

    @staticmethod
    def nvmlDeviceGetTotalEnergyConsumption(handle):
        raise RuntimeError("Not Supported")


def test_nvml_plugin_with_a_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    assert nvml.NvmlSensor.discover(LocalFS("/nonexistent"), LocalRunner()) == [], "live root only"
    (gpu,) = nvml.NvmlSensor.discover(LocalFS("/"), LocalRunner())
    r = {x.sensor: x for x in gpu.read()}
    assert r["nvml/gpu0/temp"].value == 41.0
    assert r["nvml/gpu0/power"].value == pytest.approx(71.234)
    assert r["nvml/gpu0/power"].labels == {"role": "gpu", "model": "NVIDIA H100 80GB HBM3"}
    assert r["nvml/gpu0/sm_clock"].value == 1.98e9
    assert r["nvml/gpu0/clock_event_reasons"].value == "0x1"
    assert "nvml/gpu0/energy" not in r
    assert gpu.read_errors() == ["nvml energy: Not Supported"]


def test_nvml_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert nvml.NvmlSensor.discover(LocalFS("/"), LocalRunner()) == []


def test_psutil_temperatures_where_hwmon_has_none(tmp_path, monkeypatch):
    entry = types.SimpleNamespace(label="Package id 0", current=55.0, high=100.0, critical=100.0)
    monkeypatch.setattr(psutil_temps, "_temperatures", lambda: {"coretemp": [entry]})
    live = LocalFS(tmp_path)
    live.live = True  # a live system whose sysfs has no hwmon temperatures (FreeBSD, say)
    (sensor,) = psutil_temps.PsutilTempSensor.discover(live, LocalRunner())
    (reading,) = sensor.read()
    assert (reading.sensor, reading.value, reading.labels["critical_c"]) == ("psutil/coretemp/Package id 0", 55.0,
                                                                             "100.0")
    assert psutil_temps.PsutilTempSensor.discover(LocalFS(tmp_path), LocalRunner()) == [], "recorded trees: no"
