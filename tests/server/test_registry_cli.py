"""`edgebench server --registry` and `--models-dir`: flags, config file and environment (docs/cli.md's convention),
what the collector is then built with, and a bad --registry refused in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgebench.agent.cli.main import build_parser, parse
from edgebench.agent.errors import UsageError
from edgebench.server import cli as server_cli
from edgebench.server.registry import open_registry


def settings(argv, monkeypatch, environ=None):
    for name, value in (environ or {}).items():
        monkeypatch.setenv(name, value)
    return server_cli.settings(parse(build_parser(), ["server", *argv]))


def test_defaults_are_the_data_dir(tmp_path, monkeypatch):
    built = settings(["--data-dir", str(tmp_path)], monkeypatch)
    assert built.registry == "" and built.collector.models_dir == tmp_path / "models"


def test_flags_environment_and_config_file(tmp_path, monkeypatch):
    url = "postgresql://edgebench@db.lab/edgebench"
    built = settings(["--registry", url, "--models-dir", str(tmp_path / "shared")], monkeypatch)
    assert built.registry == url and built.collector.models_dir == tmp_path / "shared"
    built = settings([], monkeypatch, {"EDGEBENCH_SERVER_REGISTRY": url, "EDGEBENCH_SERVER_MODELS_DIR": "~/m"})
    assert built.registry == url and built.collector.models_dir == Path("~/m").expanduser()
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nregistry = "{url}"\nmodels-dir = "/mnt/models"\n')
    monkeypatch.delenv("EDGEBENCH_SERVER_REGISTRY")
    monkeypatch.delenv("EDGEBENCH_SERVER_MODELS_DIR")
    built = settings(["--config", str(config)], monkeypatch)
    assert built.registry == url and built.collector.models_dir == Path("/mnt/models")


def test_a_bad_registry_is_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"--registry mysql://u:\*\*\*@h/db: expected a SQLite file or postgresql"):
        open_registry("mysql://u:pw@h/db", tmp_path)


def test_the_server_command_fails_in_one_line(cli, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = cli("server", "--data-dir", tmp_path, "--http", "127.0.0.1:0", "--registry",
               f"postgresql://edgebench:secret@127.0.0.1:{port}/edgebench", timeout=60)
    assert down.code == 1 and down.err.count("\n") == 1, down
    assert down.err.startswith(f"edgebench: error: registry postgresql://edgebench:***@127.0.0.1:{port}/edgebench: ")
    assert "secret" not in down.err
    bad = cli("server", "--data-dir", tmp_path, "--http", "127.0.0.1:0", "--registry", "mysql://h/db", timeout=60)
    assert bad.code == 2 and "--registry mysql://h/db: expected a SQLite file or postgresql://" in bad.err, bad
