"""Command-output parsers on the formats the boards print."""

from __future__ import annotations

import pytest

from edgebench.agent.sensors import android, jetson, raspberrypi
from edgebench.agent.sensors.cpufreq import cpu_list, cpu_ranges

ORIN_JP6 = ("06-12-2024 10:15:32 RAM 2310/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
            "CPU [3%@729,1%@729,0%@729,2%@729,0%@729,1%@729] GR3D_FREQ 0% cpu@47.656C soc2@46.031C "
            "tj@47.656C VDD_IN 4747mW/4761mW VDD_CPU_GPU_CV 516mW/522mW VDD_SOC 1438mW/1434mW")
ORIN_JP5 = ("RAM 3105/7620MB (lfb 221x4MB) SWAP 0/3810MB (cached 0MB) CPU [12%@1510,8%@1510,off,off,5%@1510,3%@1510] "
            "EMC_FREQ 3%@2133 GR3D_FREQ 45%@[624] VIC_FREQ 115 APE 200 CV0@-256C CPU@49.5C SOC2@47.1C GPU@48.6C "
            "tj@49.5C VDD_IN 7393mW/6070mW VDD_CPU_GPU_CV 2454mW/1488mW VDD_SOC 1673mW/1553mW")
NANO_JP4 = ("RAM 1534/3964MB (lfb 457x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
            "CPU [9%@1479,3%@1479,2%@1479,5%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@34.5C "
            "CPU@37C PMIC@100C GPU@35C AO@42.5C thermal@36C POM_5V_IN 2345/2345 POM_5V_GPU 0/0 POM_5V_CPU 423/423")


def test_tegrastats_orin_jp6():
    ts = jetson.parse_tegrastats(ORIN_JP6)
    assert (ts.ram_used_mb, ts.ram_total_mb, ts.swap_total_mb) == (2310, 7620, 3810)
    assert ts.cpus == [(3, 729), (1, 729), (0, 729), (2, 729), (0, 729), (1, 729)]
    assert ts.gpu == (0, None)
    assert ts.temps == {"cpu": 47.656, "soc2": 46.031, "tj": 47.656}
    assert ts.rails == {"VDD_IN": (4747, 4761), "VDD_CPU_GPU_CV": (516, 522), "VDD_SOC": (1438, 1434)}


def test_tegrastats_orin_jp5_gpu_clock_and_absent_zone():
    ts = jetson.parse_tegrastats(ORIN_JP5)
    assert ts.cpus[2] is None and ts.cpus[0] == (12, 1510)
    assert ts.gpu == (45, 624) and ts.emc == (3, 2133)
    assert "CV0" not in ts.temps, "-256C is an absent zone"
    assert ts.temps["CPU"] == 49.5
    readings = {r.sensor: r for r in jetson.tegrastats_readings(ts, "tegrastats")}
    assert readings["tegrastats/gpu/cur"].value == 624e6
    assert readings["tegrastats/VDD_IN/power"].value == pytest.approx(7.393)
    assert readings["tegrastats/VDD_SOC/power"].labels["role"] == "rail"


def test_tegrastats_nano_pom_rails():
    ts = jetson.parse_tegrastats(NANO_JP4)
    assert ts.rails == {"POM_5V_IN": (2345, 2345), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (423, 423)}
    assert "PMIC" not in ts.temps and ts.temps["thermal"] == 36.0
    assert ts.gpu == (0, 76)
    power = {r.sensor: r for r in jetson.tegrastats_readings(ts, "t")}["tegrastats/POM_5V_IN/power"]
    assert power.labels["role"] == "board_input"


def test_tegrastats_garbage():
    ts = jetson.parse_tegrastats("tegrastats: command not found")
    assert jetson.tegrastats_readings(ts, "t") == []


def test_nvpmodel_query():
    assert jetson.parse_nvpmodel_query("NV Power Mode: 15W\n0\n") == ("15W", 0)
    text = "NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_20W_6CORE\n8\n"
    assert jetson.parse_nvpmodel_query(text) == ("MODE_20W_6CORE", 8)
    assert jetson.parse_nvpmodel_query("") == (None, None)


def test_nvpmodel_conf_and_l4t():
    conf = "< POWER_MODEL ID=0 NAME=MAXN >\nx\n< POWER_MODEL ID=1 NAME=MODE_10W >\n< PM_CONFIG DEFAULT=1 >\n"
    assert jetson.parse_nvpmodel_conf(conf) == ({0: "MAXN", 1: "MODE_10W"}, 1)
    assert jetson.parse_l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref") == "R35.4.1"
    assert jetson.parse_l4t_release("garbage") is None


@pytest.mark.parametrize("bits, now, since", [
    (0x0, [], []),
    (0x50005, ["under_voltage", "throttled"], ["under_voltage", "throttled"]),
    (0x80008, ["soft_temp_limit"], ["soft_temp_limit"]),
    (0xE0000, [], ["arm_freq_capped", "throttled", "soft_temp_limit"]),
    (0xF000F, list(raspberrypi.THROTTLE_BITS.values()), list(raspberrypi.THROTTLE_BITS.values())),
])
def test_throttled_bits(bits, now, since):
    assert raspberrypi.decode_throttled(bits) == {"now": now, "since_boot": since}
    state = raspberrypi.throttle_state(hex(bits))  # as the reading and the sampled series hold it
    assert state == raspberrypi.throttle_state(bits)
    assert (list(state.now), list(state.since_boot), state.any_now) == (now, since, bool(now))
    assert [getattr(state, name) for name in raspberrypi.THROTTLE_BITS.values()] == [
        name in now for name in raspberrypi.THROTTLE_BITS.values()]


def test_throttle_state_of_garbage():
    assert raspberrypi.throttle_state("garbage") is None and raspberrypi.throttle_state(None) is None
    assert raspberrypi.throttle_state("5").throttled  # a decimal field is still the bits


def test_vcgencmd_fields():
    assert raspberrypi.parse_throttled("throttled=0x50005\n") == 0x50005
    assert raspberrypi.parse_throttled("VCHI initialization failed") is None
    assert raspberrypi.parse_temp("temp=48.3'C") == 48.3
    assert raspberrypi.parse_clock("frequency(48)=1800404352") == 1800404352
    assert raspberrypi.parse_volts("volt=0.8563V") == 0.8563


def test_pmic_pairs():
    text = ("  VDD_CORE_A current(7)=1.50000000A\n  VDD_CORE_V volt(15)=0.90000000V\n"
            "   1V8_SYS_A current(2)=0.20000000A\n   1V8_SYS_V volt(10)=1.80000000V\n"
            "     EXT5V_V volt(24)=5.10000000V\nnoise line\n")
    rails = raspberrypi.parse_pmic(text)
    assert rails["EXT5V"] == {"V": 5.1}
    assert raspberrypi.pmic_power(rails) == (pytest.approx(0.9 * 1.5 + 1.8 * 0.2), 2)


def test_thermalservice_prefers_hal_section():
    text = ("Thermal Status: 2\nCached temperatures:\n\tTemperature{mValue=50.0, mType=0, mName=cpu, mStatus=0}\n"
            "HAL Ready: true\nCurrent temperatures from HAL:\n"
            "\tTemperature{mValue=61.5, mType=0, mName=cpu, mStatus=2}\n"
            "\tTemperature{mValue=40.1, mType=3, mName=skin, mStatus=1}\n"
            "Current cooling devices from HAL:\n\tCoolingDevice{mValue=0, mType=2, mName=battery}\n")
    status, temps = android.parse_thermalservice(text)
    assert status == 2
    assert [(t.name, t.value, t.type, t.status) for t in temps] == [("cpu", 61.5, "CPU", 2), ("skin", 40.1, "SKIN", 1)]


def test_getprop_and_dumpsys_battery():
    props = android.parse_getprop("[ro.product.model]: [Pixel 8]\n[ro.soc.model]: [Tensor G3]\n[empty]: []\n")
    assert props == {"ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3", "empty": ""}
    fields = android.parse_dumpsys_battery("Current Battery Service state:\n  level: 55\n  voltage: 3850\n")
    assert fields == {"level": "55", "voltage": "3850"}


def test_cpu_lists():
    assert cpu_list("0 1 2 3") == [0, 1, 2, 3]
    assert cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    assert cpu_list("garbage") == []
    assert cpu_ranges([0, 1, 2, 3, 6]) == "0-3,6"
    assert cpu_ranges([7]) == "7"
