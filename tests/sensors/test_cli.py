"""``edgebench sensors`` as a library call: table, JSON, recorded roots, and a phone over (stand-in) adb."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from edgebench.agent.cli import sensors as cli

from .conftest import BOARDS_DIR


def run(*argv: str):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = io.StringIO()
    code = cli.run(parser.parse_args(list(argv)), out=out)
    return code, out.getvalue()


def test_table_for_a_recorded_board():
    code, out = run("--root", str(BOARDS_DIR / "rpi4"))
    assert code == 0
    assert "board: Raspberry Pi 4 Model B Rev 1.4" in out
    assert "policy0: cpus 0-3, ondemand, 600-1800 MHz" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("thermal/", "rpi/", "cpufreq/"))}
    assert lines["thermal/cpu-thermal"].split()[2:4] == ["52.6", "C"]
    assert lines["rpi/arm_clock"].split()[2:4] == ["600", "MHz"]
    assert lines["rpi/throttled"].split()[2] == "0x50005"
    assert "cpufreq/policy0/cpuinfo_max" not in lines, "limits are in the header"
    assert "warning" not in out


def test_json_for_a_recorded_board():
    code, out = run("--root", str(BOARDS_DIR / "jetson-orin-nano"), "--json")
    assert code == 0
    doc = json.loads(out)
    readings = {r["sensor"]: r for r in doc["readings"]}
    assert readings["hwmon/ina3221/VDD_IN/power"]["unit"] == "W"
    assert readings["hwmon/ina3221/VDD_IN/power"]["labels"]["role"] == "board_input"
    assert doc["board"]["power_mode"] == "15W"
    assert doc["errors"] == {}
    assert "jetson/power_mode" in doc["sensors"]


def test_rapl_power_is_primed():
    code, out = run("--root", str(BOARDS_DIR / "x86-rapl"), "--json")
    readings = {r["sensor"]: r["value"] for r in json.loads(out)["readings"]}
    assert readings["rapl/psys/power"] == 0.0, "a recorded counter does not move, but power is there"


def test_warnings_are_printed(board_copy):
    root = board_copy("rpi5")
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("garbage\n")
    code, out = run("--root", str(root))
    assert code == 0
    assert "warning: thermal: /sys/class/thermal/thermal_zone0/temp: garbage value 'garbage'" in out


def test_empty_root(tmp_path):
    assert run("--root", str(tmp_path)) == (0, "\nno sensors found\n")


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A stand-in adb executable replaying the android-phone tree (no phone in CI)."""
    exe = tmp_path / "adb"
    exe.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_adb.py").read_text())
    exe.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_ROOT", str(BOARDS_DIR / "android-phone"))
    monkeypatch.setenv("FAKE_ADB_SERIAL", "R5CT90XYZ")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    return exe, log


def test_adb_sensors_through_a_stand_in_adb(fake_adb):
    exe, log = fake_adb
    code, out = run("--adb", "R5CT90XYZ", "--adb-exe", str(exe), "--json")
    assert code == 0, out
    doc = json.loads(out)
    readings = {r["sensor"]: r for r in doc["readings"]}
    assert readings["android/battery/current"]["value"] == pytest.approx(0.43125)
    assert readings["android/battery/current"]["source"] == "adb:R5CT90XYZ:/sys/class/power_supply/battery/current_now"
    assert readings["android/thermal_status"]["value"] == "NONE"
    assert readings["thermal/cpu-1-0-usr"]["value"] == pytest.approx(39.8)
    assert readings["cpufreq/policy7/cur"]["value"] == 2.4e9
    assert doc["board"]["board"] == "Google Pixel 5" and doc["board"]["soc"] == "SM7250"
    assert doc["board"]["cpufreq"]["policy6"]["cpus"] == "6"
    assert doc["errors"] == {}
    calls = log.read_text().splitlines()
    assert len(calls) < 60, f"files are read in batches, not one adb call each ({len(calls)} calls)"


def test_stand_in_matches_the_package():
    from edgebench.agent.sensors import commands, fs

    from . import fake_adb

    assert (fake_adb.MARK, fake_adb.FAIL) == (fs._MARK, fs._FAIL)
    argv = ["dumpsys", "battery", "/a/b"]
    assert fake_adb.replay_name(argv) == commands.replay_name(argv)


def test_adb_device_not_reachable(fake_adb, capsys):
    exe, _ = fake_adb
    code, out = run("--adb", "WRONG", "--adb-exe", str(exe))
    assert code == 1 and out == ""
    assert "not reachable" in capsys.readouterr().err


def test_edgebench_adb_sensors_command(fake_adb, tmp_path):
    """The top-level command `edgebench adb sensors --serial S`, as a user types it, against the stand-in adb
    (the same stand-in as above: no phone is reachable from CI)."""
    import json
    import subprocess

    exe, _ = fake_adb
    result = subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "adb", "sensors", "--serial", "R5CT90XYZ",
                             "--adb-exe", str(exe), "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["root"] == "adb:R5CT90XYZ"
    assert any(r["sensor"] == "android/battery/current" for r in document["readings"])
    result = subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "adb", "sensors"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "--serial" in result.stderr
