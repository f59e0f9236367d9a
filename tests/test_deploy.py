"""deploy/termux: the install script run against a stand-in Termux prefix (no phone is reachable here).
`pkg` and `pip` are stubs that record their arguments; everything else the script does is real."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import REPO

TERMUX = REPO / "deploy" / "termux"


def test_scripts_parse():
    for script in (TERMUX / "install.sh", TERMUX / "service" / "edgebench-agent" / "run"):
        shell = "bash" if script.name.endswith(".sh") else "sh"
        subprocess.run([shell, "-n", str(script)], check=True)


@pytest.fixture
def termux(tmp_path):
    prefix, home, stubs = tmp_path / "usr", tmp_path / "home", tmp_path / "stubs"
    for folder in (prefix / "share" / "termux-services", home, stubs):
        folder.mkdir(parents=True)
    (prefix / "share" / "termux-services" / "svlogger").write_text("#!/bin/sh\n")
    log = tmp_path / "calls.log"
    for tool in ("pkg", "pip"):
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        stub.chmod(0o755)
    env = dict(os.environ, PREFIX=str(prefix), HOME=str(home), PATH=f"{stubs}:{os.environ['PATH']}")
    return prefix, home, log, env


def test_install_into_a_termux_prefix(termux):
    prefix, home, log, env = termux
    subprocess.run(["bash", str(TERMUX / "install.sh"), "--source", "/sdcard/edgebench", "--mqtt",
                    "mqtt://lab:1883", "--labels", "class=pixel7"], check=True, env=env, capture_output=True)
    calls = log.read_text().splitlines()
    assert calls[0].startswith("pkg install -y python python-numpy")
    assert calls[1] == "pip install --upgrade /sdcard/edgebench"
    config = (home / ".config" / "edgebench" / "config.toml").read_text()
    assert 'mqtt = "mqtt://lab:1883"' in config and 'labels = "class=pixel7"' in config
    run = prefix / "var" / "service" / "edgebench-agent" / "run"
    assert os.access(run, os.X_OK) and "exec edgebench agent" in run.read_text()
    # A second install keeps the user's edited config.
    (home / ".config" / "edgebench" / "config.toml").write_text("[agent]\nlabels = \"mine\"\n")
    subprocess.run(["bash", str(TERMUX / "install.sh"), "--no-service"], check=True, env=env, capture_output=True)
    assert "mine" in (home / ".config" / "edgebench" / "config.toml").read_text()


def test_refuses_outside_termux(termux, tmp_path):
    _, _, _, env = termux
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "sed", "dirname", "mkdir"):
        os.symlink(shutil.which(tool), bare / tool)
    env["PATH"] = str(bare)
    result = subprocess.run([str(bare / "bash"), str(TERMUX / "install.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "runs inside Termux" in result.stderr
