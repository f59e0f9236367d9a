"""What real boards do to readers: missing files, permission denied, garbage, counters that wrap, phones
that report current in mA or with the other sign, rails sysfs will not give, broken plugins."""

from __future__ import annotations

import builtins
import errno
import os
import shutil

import pytest

from edgebench.agent import sensors
from edgebench.agent.sensors import android, registry
from edgebench.agent.sensors import fs as fsmod
from edgebench.agent.sensors.base import Sensor
from edgebench.agent.sensors.commands import CommandRunner
from edgebench.agent.sensors.rapl import counter_delta

from .conftest import read_board


def fail_open(monkeypatch, suffix: str, exc: OSError) -> None:
    """Make opening files whose path ends with ``suffix`` raise ``exc``. chmod 000 does not stop root
    (these tests may run as root), so permission problems are injected at open() instead."""
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith(suffix):
            raise exc
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(fsmod, "open", fake_open, raising=False)  # module global shadows the builtin


def errors_of(root) -> list:
    found = sensors.discover(root)
    sensors.read_all(found)
    return [e for errs in sensors.read_errors(found).values() for e in errs]


def test_missing_file_is_a_read_error_not_a_crash(board_copy):
    root = board_copy("rpi4")
    (root / "sys/class/thermal/thermal_zone0/temp").unlink()
    r = read_board(root)
    assert "thermal/cpu-thermal" not in r
    assert "rpi/temp" in r, "other sensors still read"
    assert errors_of(root) == ["/sys/class/thermal/thermal_zone0/temp: missing"]


def test_permission_denied_injected(board_copy, monkeypatch):
    root = board_copy("jetson-orin-nano")
    fail_open(monkeypatch, "hwmon1/curr1_input", PermissionError(errno.EACCES, "Permission denied"))
    r = read_board(root)
    assert "hwmon/ina3221/VDD_IN/current" not in r and "hwmon/ina3221/VDD_IN/power" not in r
    assert r["hwmon/ina3221/VDD_IN/voltage"].value == pytest.approx(5.072)
    assert r["hwmon/ina3221/VDD_SOC/power"].value == pytest.approx(5.064 * 0.284)
    assert errors_of(root) == ["/sys/class/hwmon/hwmon1/curr1_input: permission denied"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway; see the injected test")
def test_permission_denied_chmod(board_copy):
    root = board_copy("rpi4")
    path = root / "sys/class/thermal/thermal_zone0/temp"
    path.chmod(0)
    try:
        assert "thermal/cpu-thermal" not in read_board(root)
        assert errors_of(root) == ["/sys/class/thermal/thermal_zone0/temp: permission denied"]
    finally:
        path.chmod(0o644)


def test_rapl_energy_root_only(board_copy, monkeypatch):
    """Linux >= 5.10 makes energy_uj root-only: the domains are still listed, their reads say why."""
    root = board_copy("x86-rapl")
    fail_open(monkeypatch, "energy_uj", PermissionError(errno.EACCES, "Permission denied"))
    found = sensors.discover(root, plugins=["rapl"])
    assert [s.name for s in found] == ["rapl"]
    assert found[0].read() == []
    assert len(found[0].read_errors()) == 5
    assert all(e.endswith("energy_uj: permission denied") for e in found[0].read_errors())


def test_path_that_is_a_directory(board_copy):
    root = board_copy("android-phone")
    path = root / "sys/devices/system/cpu/cpufreq/policy6/scaling_cur_freq"
    path.unlink()
    path.mkdir()
    r = read_board(root)
    assert "cpufreq/policy6/cur" not in r
    assert r["cpufreq/policy6/max"].value == 2.208e9 and r["cpufreq/policy7/cur"].value == 2.4e9
    assert errors_of(root) == ["/sys/devices/system/cpu/cpufreq/policy6/scaling_cur_freq: not a file"]


def test_no_data_errno(board_copy, monkeypatch):
    """A sensor that is not ready (some thermal drivers) fails its read with ENODATA or EAGAIN."""
    root = board_copy("jetson-xavier-nx")
    fail_open(monkeypatch, "thermal_zone1/temp", OSError(errno.ENODATA, "No data available"))
    assert "thermal/GPU-therm" not in read_board(root)
    assert errors_of(root) == ["/sys/class/thermal/thermal_zone1/temp: no data (ENODATA)"]


@pytest.mark.parametrize("garbage", [b"abc\n", b"\xff\xfe\x00", b"", b"nan\n", b"12 34\n"])
def test_garbage_values(board_copy, garbage):
    root = board_copy("jetson-orin-nano")
    (root / "sys/class/hwmon/hwmon1/in1_input").write_bytes(garbage)
    r = read_board(root)
    assert "hwmon/ina3221/VDD_IN/voltage" not in r
    assert "hwmon/ina3221/VDD_IN/power" not in r, "no V x I without V"
    assert r["hwmon/ina3221/VDD_IN/current"].value == pytest.approx(0.936)
    (err,) = errors_of(root)
    assert err.startswith("/sys/class/hwmon/hwmon1/in1_input: garbage value")


def test_garbage_command_output(board_copy):
    root = board_copy("rpi4")
    (root / "commands/vcgencmd_measure_temp").write_text("error=1 error_msg=\"Command not registered\"\n")
    r = read_board(root)
    assert "rpi/temp" not in r and r["rpi/throttled"].value == "0x50005"
    assert any("unexpected output" in e for e in errors_of(root))


def test_empty_root(tmp_path):
    assert sensors.discover(tmp_path) == []
    assert sensors.board_info(tmp_path) == {}


def test_thermal_quirks(tmp_path):
    for n, (ztype, temp) in enumerate([("battery", "45"), ("battery", "31200"), ("skin", "-40000")]):
        zone = tmp_path / f"sys/class/thermal/thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(ztype + "\n")
        (zone / "temp").write_text(temp + "\n")
    r = read_board(tmp_path)
    assert r["thermal/battery@thermal_zone0"].value == 45.0, "whole degrees from a quirky driver"
    assert r["thermal/battery@thermal_zone1"].value == 31.2
    assert r["thermal/skin"].value == -40.0


def test_ina219_and_duplicate_hwmon_names(tmp_path):
    for n in (0, 1):
        d = tmp_path / f"sys/class/hwmon/hwmon{n}"
        d.mkdir(parents=True)
        files = {"name": "ina219", "in0_input": "8", "in1_input": "5080", "curr1_input": "412",
                 "power1_input": "2093000"}
        for k, v in files.items():
            (d / k).write_text(v + "\n")
    r = read_board(tmp_path)
    power = r["hwmon/ina219@hwmon0/rail1/power"]
    assert power.value == pytest.approx(2.093) and "derived" not in power.labels
    assert r["hwmon/ina219@hwmon1/rail1/voltage"].value == pytest.approx(5.08)
    assert not any(k.endswith("/in0") for k in r), "ina2xx in0 is the shunt voltage"


def test_counter_wraps():
    top = 262143328850
    assert counter_delta(100, 250, top) == 150
    assert counter_delta(top - 1_000_000, 2_000_000, top) == 3_000_000
    assert counter_delta(500, 200, None) == 200, "without a range a drop is a reset"


def test_rapl_sensor_across_wrap(board_copy):
    root = board_copy("x86-rapl")
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    energy.write_text(str(262143328850 - 4_000_000) + "\n")
    (rapl,) = sensors.discover(root, plugins=["rapl"])
    ticks = iter([0, 1_000_000_000])
    rapl._clock = lambda: next(ticks)
    rapl.read()
    energy.write_text("6000000\n")  # wrapped: 4 J to the top, 6 J after
    power = {r.sensor: r.value for r in rapl.read()}["rapl/package-0/power"]
    assert power == pytest.approx(10.0)


@pytest.mark.parametrize("raw, status, amps, unit, sign", [
    (-431250, "Discharging", 0.43125, "uA", "negative-discharging"),  # kernel ABI, Pixel
    (431250, "Discharging", 0.43125, "uA", "positive-discharging"),  # vendor kernels with the other sign
    (-431, "Discharging", 0.431, "mA", "negative-discharging"),  # vendor kernels in mA
    (431, "Discharging", 0.431, "mA", "positive-discharging"),
    (1200000, "Charging", -1.2, "uA", "abi (negative-discharging) assumed"),  # charging: battery gains
    (500000, None, -0.5, "uA", "abi (negative-discharging) assumed"),
])
def test_android_current_units_and_sign(board_copy, raw, status, amps, unit, sign):
    root = board_copy("android-phone")
    bat = root / "sys/class/power_supply/battery"
    (bat / "current_now").write_text(f"{raw}\n")
    if status is None:
        (bat / "status").unlink()
    else:
        (bat / "status").write_text(status + "\n")
    r = read_board(root)
    cur = r["android/battery/current"]
    assert cur.value == pytest.approx(amps)
    assert (cur.labels["raw_unit"], cur.labels["sign"]) == (unit, sign)
    assert r["android/battery/power"].value == pytest.approx(3.987 * amps)
    picked = sensors.pick_power(r.values())
    assert (picked is not None) == (status == "Discharging"), "on the charger the battery is not the draw"


def test_android_unit_override(monkeypatch):
    assert android.current_amps(8000) == (8.0, "mA")
    monkeypatch.setenv(android.CURRENT_UNIT_ENV, "uA")
    assert android.current_amps(8000) == (0.008, "uA")


@pytest.mark.parametrize("raw, volts, unit", [(3987000, 3.987, "uV"), (3987, 3.987, "mV"), (4, 4.0, "V")])
def test_android_voltage_units(raw, volts, unit):
    assert android.voltage_volts(raw) == (pytest.approx(volts), unit)


def test_android_dumpsys_battery_fallback(board_copy):
    """Where SELinux hides the battery sysfs, dumpsys battery (voltage mV, temperature tenths) stands in."""
    root = board_copy("android-phone")
    shutil.rmtree(root / "sys/class/power_supply/battery")
    r = read_board(root)
    assert r["android/dumpsys_battery/voltage"].value == pytest.approx(3.987)
    assert r["android/dumpsys_battery/temp"].value == pytest.approx(31.2)
    assert r["android/dumpsys_battery/level"].value == 76
    assert r["android/dumpsys_battery/status"].value == "Discharging"


def test_tegrastats_when_rails_unreadable(board_copy):
    root = board_copy("jetson-orin-nano")
    shutil.rmtree(root / "sys/class/hwmon/hwmon1")
    r = read_board(root)
    vdd_in = r["tegrastats/VDD_IN/power"]
    assert vdd_in.value == pytest.approx(4.747)
    assert vdd_in.labels["role"] == "board_input" and vdd_in.labels["avg_w"] == "4.761"
    assert r["tegrastats/temp/tj"].value == pytest.approx(47.656)
    assert r["tegrastats/cpu5/cur"].value == 729e6
    assert r["tegrastats/ram_used"].value == 2310 * 2**20
    assert sensors.pick_power(r.values()).sensor == "tegrastats/VDD_IN/power"


def test_tegrastats_old_format_when_iio_unreadable(board_copy, monkeypatch):
    root = board_copy("jetson-xavier-nx")
    fail_open(monkeypatch, "in_power0_input", PermissionError(errno.EACCES, "Permission denied"))
    r = read_board(root)
    assert r["tegrastats/VDD_IN/power"].value == pytest.approx(4.52)
    assert r["tegrastats/temp/CPU"].value == 40.5
    assert "tegrastats/temp/PMIC" not in r
    assert "tegrastats/cpu4/cur" not in r, "offline cores have no clock"


def test_jetson_without_any_power_mode_source(board_copy):
    root = board_copy("jetson-xavier-nx")
    (root / "etc/nvpmodel.conf").unlink()
    assert not any(k.startswith("jetson/") for k in read_board(root))


def test_jetson_boot_default_mode(board_copy):
    root = board_copy("jetson-xavier-nx")
    (root / "var/lib/nvpmodel/status").unlink()
    mode = read_board(root)["jetson/power_mode"]
    assert mode.value == "MODE_15W_6CORE" and "boot default" in mode.source


class Exploding(Sensor):
    @classmethod
    def discover(cls, fs, runner):
        return [cls("exploding", fs, runner)]

    def _read(self):
        raise ZeroDivisionError("plugin bug")


class ExplodingDiscovery(Sensor):
    @classmethod
    def discover(cls, fs, runner):
        raise RuntimeError("discovery bug")


def test_broken_plugins_do_not_break_discovery(tmp_path, monkeypatch):
    import types

    module = types.ModuleType("edgebench_test_broken_plugin")
    module.SENSORS = (Exploding, ExplodingDiscovery)
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register("exploding", module.__name__)
    registry.register("missing", "edgebench_no_such_module")
    found = sensors.discover(tmp_path)
    assert [s.name for s in found] == ["exploding"]
    assert found[0].read() == []
    assert found[0].read_errors() == ["exploding: ZeroDivisionError: plugin bug"]


class DictRunner(CommandRunner):
    """Answers RemoteFS's batch command from a dict, counting calls."""

    def __init__(self, files):
        self.files, self.calls = files, 0

    def run(self, argv, timeout=3.0):
        self.calls += 1
        assert argv[:2] == ["sh", "-c"] and argv[3] == "sh"
        return "".join(f"{fsmod._MARK} {p}\n" + self.files.get(p, fsmod._FAIL + "\n") for p in argv[4:])


def test_remote_reads_are_batched_under_the_command_limit():
    files = {f"/sys/class/thermal/thermal_zone{i}/temp": f"{30000 + i}\n" for i in range(200)}
    runner = DictRunner(files)
    got = fsmod.RemoteFS(runner).read_many([*files, "/sys/missing"])
    assert runner.calls == 3, "200 paths of ~36 chars: three batches under 3000 chars"
    assert got["/sys/class/thermal/thermal_zone199/temp"] == "30199\n"
    assert isinstance(got["/sys/missing"], OSError)
    with pytest.raises(OSError):
        fsmod.RemoteFS(runner).read_text("/sys/missing")
