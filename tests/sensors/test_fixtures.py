"""Readings from every recorded board tree are right: values, units, roles and board facts."""

from __future__ import annotations

import json

import pytest

from edgebench.agent import sensors
from edgebench.agent.sensors import CLOCK_ROLES, KIND_UNITS, POWER_ROLES, THROTTLE_BITS_ROLE, raspberrypi, registry

from .conftest import BOARDS, BOARDS_DIR, read_board


@pytest.mark.parametrize("board", BOARDS)
def test_every_board_reads_cleanly(board):
    found = sensors.discover(BOARDS_DIR / board)
    readings = sensors.read_all(found)
    assert readings, board
    assert sensors.read_errors(found) == {}
    ids = [r.sensor for r in readings]
    assert len(ids) == len(set(ids)), "reading ids are unique"
    for r in readings:
        assert r.kind in KIND_UNITS and r.unit == KIND_UNITS[r.kind]
        assert isinstance(r.value, str) == (r.kind == "state")
        assert r.source
        assert r.plugin in registry.BUILTIN, "every reading names the plugin that read it"
        if r.kind == "power":  # callers pick by role; the JSON keeps a power reading's role among its labels
            assert r.role in POWER_ROLES and r.labels["role"] == r.role
        else:
            assert "role" not in r.labels
        if r.kind == "frequency":
            assert r.role in CLOCK_ROLES
    json.dumps([r.to_dict() for r in readings])  # plain records
    json.dumps(sensors.board_info(BOARDS_DIR / board))
    assert (BOARDS_DIR / board / "README.md").is_file()


def test_rpi4():
    r = read_board(BOARDS_DIR / "rpi4")
    assert r["thermal/cpu-thermal"].value == pytest.approx(52.582)
    assert r["thermal/cpu-thermal"].labels["trip_critical_c"] == "110.0"
    assert r["rpi/temp"].value == 52.6
    assert r["rpi/arm_clock"].value == 600117184
    assert r["rpi/core_volts"].value == 0.85
    throttled = r["rpi/throttled"]
    assert throttled.value == "0x50005"
    assert throttled.labels["now"] == "under_voltage,throttled"
    assert throttled.labels["since_boot"] == "under_voltage,throttled"
    assert (throttled.plugin, throttled.role) == ("raspberrypi", THROTTLE_BITS_ROLE)
    state = raspberrypi.throttle_state(throttled.value)
    assert (state.under_voltage, state.arm_freq_capped, state.throttled, state.soft_temp_limit) == (
        True, False, True, False)
    assert state.any_now and state.since_boot == ("under_voltage", "throttled")
    assert r["hwmon/rpi_volt/in0_lcrit_alarm"].value == "alarm"
    assert "hwmon/cpu_thermal/temp1" not in r, "the thermal zone's hwmon mirror is not read twice"
    assert r["cpufreq/policy0/cur"].value == 1.8e9
    assert r["cpufreq/policy0/cur"].labels["cpus"] == "0-3"
    assert r["cpufreq/policy0/governor"].value == "ondemand"
    roles = {k: v.role for k, v in r.items() if v.plugin == "cpufreq" and v.kind == "frequency"}
    assert roles == {"cpufreq/policy0/cur": "current", "cpufreq/policy0/max": "limit_max",
                     "cpufreq/policy0/min": "limit_min", "cpufreq/policy0/cpuinfo_max": "hw_max",
                     "cpufreq/policy0/cpuinfo_min": "hw_min"}
    assert (r["rpi/arm_clock"].plugin, r["rpi/arm_clock"].role) == ("raspberrypi", "current")
    assert not any(k.startswith("rpi/pmic") for k in r), "no PMIC on a Pi 4"
    assert sensors.pick_power(r.values()) is None

    info = sensors.board_info(BOARDS_DIR / "rpi4")
    assert info["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert info["soc"] == "brcm,bcm2711"
    assert info["raspberrypi"]["revision"] == "c03114"
    assert info["raspberrypi"]["throttled_at_start"]["now"] == ["under_voltage", "throttled"]
    assert info["raspberrypi"]["arm_freq_config_mhz"] == 1800
    assert info["cpufreq"]["policy0"] == {"cpus": "0-3", "governor": "ondemand", "cpuinfo_min_hz": 6e8,
                                          "cpuinfo_max_hz": 1.8e9, "scaling_min_hz": 6e8, "scaling_max_hz": 1.8e9}
    assert info["ram_bytes"] == 3880324 * 1024
    assert info["kernel"] == "6.6.31+rpt-rpi-v8"


def test_rpi5_pmic_board_power():
    r = read_board(BOARDS_DIR / "rpi5")
    rails = {k: v.value for k, v in r.items() if k.startswith("rpi/pmic/") and k.endswith("/power")
             and "total" not in k}
    assert len(rails) == 12
    assert rails["rpi/pmic/VDD_CORE/power"] == pytest.approx(1.896386 * 0.8818795)
    total = r["rpi/pmic/total/power"]
    assert total.value == pytest.approx(sum(rails.values()))
    assert total.value == pytest.approx(3.315, abs=0.01)
    assert total.labels["role"] == "board"
    assert r["rpi/pmic/EXT5V/voltage"].value == pytest.approx(5.11582)
    assert sensors.pick_power(r.values()).sensor == "rpi/pmic/total/power"
    assert r["rpi/throttled"].labels["now"] == "none"
    assert not raspberrypi.throttle_state(r["rpi/throttled"].value).any_now
    assert r["thermal/cpu-thermal"].value == pytest.approx(61.25)
    assert "trip_passive_c" not in r["thermal/cpu-thermal"].labels  # Pi 5 trips are fan (active) and critical
    assert r["hwmon/rp1_adc/temp1"].value == pytest.approx(55.174)
    assert not any(k.startswith("hwmon/pwmfan") for k in r)
    assert sensors.board_info(BOARDS_DIR / "rpi5")["thermal_trips_c"]["cpu-thermal"]["active"] == [50, 60, 67.5, 75]


def test_jetson_orin_nano_hwmon_rails():
    r = read_board(BOARDS_DIR / "jetson-orin-nano")
    vdd_in = r["hwmon/ina3221/VDD_IN/power"]
    assert vdd_in.value == pytest.approx(5.072 * 0.936)
    assert vdd_in.labels == {"rail": "VDD_IN", "role": "board_input", "derived": "V*I"}
    assert (vdd_in.plugin, vdd_in.role) == ("hwmon", "board_input")
    assert r["hwmon/ina3221/VDD_CPU_GPU_CV/power"].labels["role"] == "rail"
    assert r["hwmon/ina3221/VDD_SOC/current"].value == pytest.approx(0.284)
    assert not any("shunt" in k or k.endswith(("/in4", "/in7")) for k in r), "shunt channels are not rails"
    assert sensors.pick_power(r.values()).sensor == "hwmon/ina3221/VDD_IN/power"
    assert "thermal/cv0-thermal" not in r, "-256 C zones are absent blocks"
    assert r["thermal/cpu-thermal"].labels["trip_passive_c"] == "99.0"
    assert r["jetson/power_mode"].value == "15W"
    assert r["jetson/power_mode"].labels["id"] == "0"
    assert not any(k.startswith("tegrastats/") for k in r), "sysfs rails are readable: no tegrastats"
    assert r["cpufreq/policy4/cur"].labels["cpus"] == "4-5"

    info = sensors.board_info(BOARDS_DIR / "jetson-orin-nano")
    assert info["board"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["soc"] == "nvidia,tegra234"
    assert info["power_mode"] == "15W"
    assert info["jetson"]["l4t"] == "R36.3.0"
    assert info["jetson"]["power_modes"] == {"0": "15W", "1": "7W"}


def test_jetson_xavier_nx_iio_rails_and_status_file():
    r = read_board(BOARDS_DIR / "jetson-xavier-nx")
    vdd_in = r["ina3221x/VDD_IN/power"]
    assert vdd_in.value == pytest.approx(4.52)
    assert vdd_in.labels["role"] == "board_input" and "derived" not in vdd_in.labels
    assert r["ina3221x/VDD_IN/voltage"].value == pytest.approx(5.056)
    assert r["ina3221x/VDD_SOC/current"].value == pytest.approx(0.264)
    assert sensors.pick_power(r.values()).sensor == "ina3221x/VDD_IN/power"
    # No nvpmodel command recorded: the mode comes from /var/lib/nvpmodel/status and the names from the conf.
    mode = r["jetson/power_mode"]
    assert (mode.value, mode.labels["id"], mode.source) == ("MODE_20W_6CORE", "8", "/var/lib/nvpmodel/status")
    assert "thermal/PMIC-Die" not in r, "the constant 100 C placeholder is left out"
    assert r["thermal/CPU-therm"].labels["trip_passive_c"] == "95.5"
    assert r["cpufreq/policy2/max"].value == 1.4208e9
    assert r["cpufreq/policy2/cpuinfo_max"].value == 1.9072e9
    info = sensors.board_info(BOARDS_DIR / "jetson-xavier-nx")
    assert info["jetson"]["l4t"] == "R32.7.1"
    assert info["jetson"]["power_mode_default"] == 2


def test_android_phone():
    r = read_board(BOARDS_DIR / "android-phone")
    cur = r["android/battery/current"]
    assert cur.value == pytest.approx(0.43125)  # -431250 uA while discharging -> +0.431 A drawn
    assert cur.labels["raw_unit"] == "uA" and cur.labels["sign"] == "negative-discharging"
    assert r["android/battery/voltage"].value == pytest.approx(3.987)
    power = r["android/battery/power"]
    assert power.value == pytest.approx(3.987 * 0.43125)
    assert power.labels["role"] == "battery"
    assert sensors.pick_power(r.values()).sensor == "android/battery/power"
    assert r["android/battery/temp"].value == pytest.approx(31.2)
    assert r["android/battery/level"].value == 76
    assert r["android/battery/status"].value == "Discharging"
    assert r["android/thermal_status"].value == "NONE"
    assert r["android/hal/cpu7-gold-usr"].value == 39.8
    assert r["android/hal/cpu7-gold-usr"].labels["type"] == "CPU"
    assert r["android/hal/skin"].labels["type"] == "SKIN"
    assert not any(k.startswith("android/dumpsys_battery") for k in r), "sysfs battery readable: no fallback"
    assert r["cpufreq/policy7/max"].value == 2.4e9
    assert r["cpufreq/policy0/cur"].labels["cpus"] == "0-5"
    info = sensors.board_info(BOARDS_DIR / "android-phone")
    assert info["board"] == "Google Pixel 5"
    assert info["soc"] == "SM7250"
    assert info["android"]["board_platform"] == "lito"
    assert info["android"]["sdk"] == "34"


def test_x86_rapl():
    r = read_board(BOARDS_DIR / "x86-rapl")
    assert r["rapl/package-0/energy"].value == pytest.approx(48512.345678)
    assert r["rapl/package-0/energy"].labels["max_range_j"] == "262143.32885"
    assert r["rapl/package-0/core/energy"].labels["domain"] == "core"
    assert r["rapl/psys/energy"].value == pytest.approx(98765.4321)
    assert "rapl/psys/power" not in r, "power needs two reads"
    assert r["hwmon/coretemp/Package id 0"].value == 52.0
    assert r["hwmon/coretemp/Core 3"].value == 52.0
    assert "hwmon/acpitz/temp1" not in r and "hwmon/iwlwifi_1/temp1" not in r, "thermal-zone mirrors"
    assert "trip_passive_c" not in r["thermal/x86_pkg_temp"].labels, "a 0 trip is unset"
    assert r["battery/BAT0/power"].value == pytest.approx(7.325)
    assert r["cpufreq/policy3/cur"].value == pytest.approx(3.400212e9)
    assert len([k for k in r if k.endswith("/governor")]) == 8
    info = sensors.board_info(BOARDS_DIR / "x86-rapl")
    assert info["board"] == "LENOVO 20KHCTO1WW"
    assert info["cpu_model"] == "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz"


def test_rapl_power_from_two_reads(board_copy):
    root = board_copy("x86-rapl")
    found = sensors.discover(root, plugins=["rapl"])
    (rapl,) = found
    ticks = iter([1_000_000_000, 1_500_000_000])
    rapl._clock = lambda: next(ticks)
    rapl.read()
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    energy.write_text(str(48512345678 + 3_000_000) + "\n")  # +3 J in 0.5 s
    r = {x.sensor: x for x in rapl.read()}
    assert r["rapl/package-0/power"].value == pytest.approx(6.0)
    assert r["rapl/package-0/power"].labels["role"] == "package"
    assert r["rapl/psys/power"].value == 0.0
    assert r["rapl/psys/power"].labels["role"] == "platform"
    assert r["rapl/package-0/core/power"].labels["role"] == "rail"


def test_agent_telemetry_picks_clocks_by_role():
    """The fleet agent's between-jobs telemetry: the fastest running CPU clock and the highest clock allowed."""
    from edgebench.agent.fleet.daemon import Telemetry

    telemetry = Telemetry(str(BOARDS_DIR / "jetson-xavier-nx"))
    try:
        readings = telemetry.read()
    finally:
        sensors.close_all(telemetry.sensors)
    r = read_board(BOARDS_DIR / "jetson-xavier-nx")
    clocks = [v for v in r.values() if v.plugin == "cpufreq" and v.kind == "frequency"]
    assert readings["cpu_freq_hz"] == max(v.value for v in clocks if v.sensor.endswith("/cur"))
    assert readings["cpu_freq_max_hz"] == max(v.value for v in clocks if v.sensor.endswith("/max")) == 1.4208e9
    assert readings["power_w"] == pytest.approx(4.52)
