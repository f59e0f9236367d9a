"""deploy/compose, deploy/grafana and deploy/systemd: what can be checked without Docker, Grafana or a board.

The files parse; every path the compose file mounts exists; Grafana's provisioning points at the committed
dashboards and defines the datasource uid they default to; the collector's command line parses with edgebench's
own parser; setup.sh makes working secrets, and a real Mosquitto started with the compose broker config (paths
rewritten from the container's to the test's) lets a real agent in over TLS with the password and role
deploy/mosquitto/fleet-auth.py gave it in the Dynamic Security file, and the real collector in on the internal
listener; the agent unit passes ``systemd-analyze verify`` and the example agent
configs load through edgebench's config loader.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from localfleet import (
    Agent,
    Collector,
    Influxd,
    Service,
    binary,
    dynsec_plugin,
    free_port,
    port_open,
    wait_for,
)

from edgebench.dashboards.build import DASHBOARDS, JSON_DIR
from edgebench.dashboards.common import DATASOURCE_NAME, DATASOURCE_UID

from ..conftest import REPO

COMPOSE_DIR = REPO / "deploy" / "compose"
GRAFANA_DIR = REPO / "deploy" / "grafana" / "provisioning"
SYSTEMD_DIR = REPO / "deploy" / "systemd"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def binds(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes left out)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (COMPOSE_DIR / source).resolve()
    return out


def test_compose_services_and_mounts(compose):
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "collector", "grafana"}
    made_by_setup = COMPOSE_DIR / "secrets"
    for name, service in services.items():
        for target, source in binds(service).items():
            if made_by_setup in source.parents:
                continue
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    mosquitto = binds(services["mosquitto"])
    assert mosquitto["/mosquitto/config/mosquitto.conf"] == COMPOSE_DIR / "mosquitto" / "mosquitto.conf"
    # The Dynamic Security file setup.sh makes, in a folder the broker may write (it saves mosquitto_ctrl's changes).
    assert mosquitto["/mosquitto/dynsec"] == made_by_setup / "mosquitto"
    assert "./secrets/mosquitto:/mosquitto/dynsec" in services["mosquitto"]["volumes"]  # no :ro
    conf = (COMPOSE_DIR / "mosquitto" / "mosquitto.conf").read_text()
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert settings["plugin_opt_config_file"] == "/mosquitto/dynsec/dynamic-security.json"
    assert "password_file" not in settings and "acl_file" not in settings
    deploy = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for key in ("allow_anonymous", "per_listener_settings", "persistence", "max_queued_messages", "max_queued_bytes",
                "max_inflight_messages", "max_packet_size"):  # the same settings as the fleet's own broker config
        assert f"\n{key} {settings[key]}\n" in deploy, key
    assert "8883:8883" in services["mosquitto"]["ports"]
    assert binds(services["influxdb"])["/docker-entrypoint-initdb.d/10-edgebench.sh"].is_file()
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    build = services["collector"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).is_file()
    volumes = compose["volumes"]
    for service in services.values():
        for volume in service.get("volumes", []):
            if not volume.startswith("."):
                assert volume.split(":")[0] in volumes


def test_compose_secrets_come_from_env_example(compose):
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {line.split("=", 1)[0] for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert required and required <= example, required - example
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_collector_command_parses(compose):
    from edgebench.agent.cli.main import build_parser

    collector = compose["services"]["collector"]
    argv = [arg.replace("${EDGEBENCH_PUBLIC_URL:?run setup.sh}", "https://lab:8780")
            .replace("${EDGEBENCH_BROKER_URL:?run setup.sh}", "mqtts://lab:8883") for arg in collector["command"]]
    args = build_parser().parse_args(argv)
    assert args.command == "server" and args.mqtt == "mqtt://mosquitto:1883" and args.username == "collector"
    assert args.influx_url == "http://influxdb:8086" and args.http == ("0.0.0.0", 8780)
    # HTTPS with the certificate setup.sh makes, mounted where the flags say; the healthcheck verifies it
    mounts = binds(collector)
    for path in (args.http_tls_cert, args.http_tls_key, "/etc/edgebench/tls/ca.crt"):
        assert mounts[path] == COMPOSE_DIR / "secrets" / "tls" / Path(path).name, path
    assert "https://127.0.0.1:8780/healthz" in " ".join(collector["healthcheck"]["test"])
    env = compose["services"]["influxdb"]["environment"]
    assert args.influx_db == env["EDGEBENCH_INFLUX_DB"] and args.influx_username == env["INFLUX_COLLECTOR_USER"]
    assert set(collector["environment"]) == {"EDGEBENCH_MQTT_PASSWORD", "EDGEBENCH_INFLUX_PASSWORD",
                                             "EDGEBENCH_BROKER_ADMIN_PASSWORD"}
    # the broker's admin, which setup.sh makes with the password MQTT_ADMIN_PASSWORD: devices' credentials via the API
    assert args.broker_admin_user == "admin" and args.broker_device_url == "mqtts://lab:8883"
    assert "EDGEBENCH_BROKER_URL=mqtts://$host:8883" in (COMPOSE_DIR / "setup.sh").read_text()  # the broker's TLS port
    assert collector["environment"]["EDGEBENCH_BROKER_ADMIN_PASSWORD"] == "${MQTT_ADMIN_PASSWORD:?run setup.sh}"
    assert "--admin-password \"$(env_value MQTT_ADMIN_PASSWORD)\"" in (COMPOSE_DIR / "setup.sh").read_text()
    dockerfile = (COMPOSE_DIR / "collector.Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path


def test_influxdb_init_script(compose):
    script = COMPOSE_DIR / "influxdb" / "10-edgebench.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert "influx v1 dbrp create" in text and "--rp autogen" in text and "--default" in text
    assert text.count("influx v1 auth create") == 2 and "--write-bucket" in text


def test_grafana_provisioning_points_at_the_committed_dashboards(compose, committed):
    grafana = compose["services"]["grafana"]
    mounts = binds(grafana)
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_DIR
    provider = yaml.safe_load((GRAFANA_DIR / "dashboards" / "edgebench.yaml").read_text())["providers"]
    assert len(provider) == 1 and provider[0]["type"] == "file"
    folder = provider[0]["options"]["path"]
    assert mounts[folder] == JSON_DIR, "the provider's folder is not where the committed JSON is mounted"
    assert sorted(p.stem for p in mounts[folder].glob("*.json")) == sorted(DASHBOARDS)

    sources = yaml.safe_load((GRAFANA_DIR / "datasources" / "edgebench.yaml").read_text())["datasources"]
    assert len(sources) == 1
    source = sources[0]
    assert source["uid"] == DATASOURCE_UID and source["name"] == DATASOURCE_NAME and source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["dbName"] == compose["services"]["influxdb"]["environment"]["EDGEBENCH_INFLUX_DB"]
    assert source["url"] == "http://influxdb:8086"
    for variable in re.findall(r"\$\{?(\w+)", json.dumps(source)):
        assert variable in grafana["environment"], f"the datasource uses ${variable}, which Grafana is not given"
    assert grafana["environment"]["INFLUX_GRAFANA_USER"] == \
        compose["services"]["influxdb"]["environment"]["INFLUX_GRAFANA_USER"]
    for dash in committed.values():  # every dashboard defaults to the provisioned datasource
        variable = dash["templating"]["list"][0]
        assert variable["type"] == "datasource" and variable["current"]["value"] == DATASOURCE_UID


@pytest.fixture
def lab_secrets(tmp_path) -> Path:
    """deploy/compose copied and prepared by its own setup.sh (for the name broker.test and 127.0.0.1)."""
    if not shutil.which("openssl") or not shutil.which("python3"):
        pytest.skip("setup.sh needs openssl and python3")
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE_DIR, copy, ignore=shutil.ignore_patterns(".env", "secrets"))
    shutil.copytree(REPO / "deploy" / "mosquitto", tmp_path / "mosquitto")  # ../mosquitto/fleet-auth.py
    for _ in range(2):  # idempotent: the second run keeps everything
        result = subprocess.run(["sh", str(copy / "setup.sh"), "broker.test", "127.0.0.1"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in (copy / ".env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert all(env.values()) and env["EDGEBENCH_PUBLIC_URL"] == "https://broker.test:8780"
    return copy


def test_compose_broker_config_runs_with_tls_passwords_and_roles(tmp_path, lab_secrets):
    """The broker config of the compose file, on a real Mosquitto: a real agent logs in over TLS (verifying the
    certificate setup.sh made) with the password add-device.sh made, the real collector on the internal listener
    with the password from .env, serving HTTPS with setup.sh's collector certificate, and the device shows up online
    in the collector's registry (read over HTTPS, verified with setup.sh's CA)."""
    if not binary("mosquitto") or not binary("influxd") or not dynsec_plugin():
        pytest.skip("mosquitto (with its Dynamic Security plugin) and influxd are needed")
    secrets = lab_secrets / "secrets"
    env = dict(line.split("=", 1) for line in (lab_secrets / ".env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    subprocess.run(["sh", str(REPO / "deploy" / "mosquitto" / "add-device.sh"),
                    str(secrets / "mosquitto" / "dynamic-security.json"), "rpi5-lab", "device-secret"], check=True,
                   capture_output=True)
    tls_port, plain_port = free_port(), free_port()
    conf = (COMPOSE_DIR / "mosquitto" / "mosquitto.conf").read_text()
    for container, host in (("/usr/lib/mosquitto_dynamic_security.so", dynsec_plugin()),
                            ("/mosquitto/dynsec/", f"{secrets / 'mosquitto'}/"),
                            ("/mosquitto/certs/", f"{secrets / 'tls'}/"), ("/mosquitto/data/", f"{tmp_path}/")):
        assert str(container) in conf
        conf = conf.replace(str(container), str(host))
    conf = conf.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    conf = conf.replace("listener 1883\n", f"listener {plain_port} 127.0.0.1\n")
    (tmp_path / "mosquitto.conf").write_text("user root\n" + conf)  # root: the key files are root's here
    (tmp_path / "collector.pw").write_text(env["MQTT_COLLECTOR_PASSWORD"] + "\n")
    (tmp_path / "device.pw").write_text("device-secret\n")

    Service.cwd = REPO
    services: list[Service] = []
    try:
        broker = Service([binary("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")], tmp_path / "mosquitto.log")
        broker.start()
        services.append(broker)
        wait_for(lambda: (port_open(tls_port) and port_open(plain_port)) or not broker.alive(), 10, "mosquitto")
        assert broker.alive(), broker.log_text()
        influxd = Influxd(tmp_path / "influxd")
        influxd.start()
        services.append(influxd)
        tls = secrets / "tls"  # the collector's HTTPS certificate, verified with the lab CA
        collector = Collector(tmp_path / "collector", f"mqtt://127.0.0.1:{plain_port}", influxd.url, "edgebench",
                              extra=("--username", "collector", "--password-file", str(tmp_path / "collector.pw")),
                              https=(tls / "collector.crt", tls / "collector.key", tls / "ca.crt"))
        collector.start()
        services.append(collector)
        agent = Agent(tmp_path / "agent", f"mqtts://127.0.0.1:{tls_port}", "rpi5-lab", "class=rpi5",
                      extra=("--username", "rpi5-lab", "--password-file", str(tmp_path / "device.pw"),
                             "--tls-ca", str(secrets / "tls" / "ca.crt")))
        agent.start()
        services.append(agent)

        def online():
            return any(d["device_id"] == "rpi5-lab" and d["state"] == "online" and d["inventory"]
                       for d in collector.get("/api/v1/devices")["devices"])

        wait_for(online, 30, "the TLS agent online in the registry")
    finally:
        for service in reversed(services):
            service.stop()
    assert "Not authorized" not in (tmp_path / "agent" / "agent.log").read_text()


def test_systemd_unit_parses_and_verifies(tmp_path):
    unit = SYSTEMD_DIR / "edgebench-agent.service"
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[1:] == ["--config", "/etc/edgebench/agent.toml", "agent"]
    assert service["User"] == "edgebench" and service["StateDirectory"] == "edgebench"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed here")
    # The only change: ExecStart's install prefix, to an edgebench that exists on this machine (verify checks it).
    local = shutil.which("edgebench") or str(REPO / ".venv" / "bin" / "edgebench")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(exec_start[0], local))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and unit.name not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("board", ["agent-rpi.toml", "agent-jetson.toml"])
def test_agent_configs_load(board):
    from edgebench.agent.cli.config import apply_defaults
    from edgebench.agent.cli.main import build_parser

    parser = build_parser()
    agent_parser = parser.parse_known_args(["agent"])[0].subparsers["agent"]
    apply_defaults(agent_parser, "agent", str(SYSTEMD_DIR / board), environ={})
    args = parser.parse_args(["agent"])
    assert args.mqtt.startswith("mqtts://") and args.tls_ca == "/etc/edgebench/ca.crt"
    assert args.username == args.device_id  # the ACL's rule: the MQTT user name is the device id
    assert "class=" in args.labels and args.data_dir.startswith("/var/lib/edgebench")
    unit = (SYSTEMD_DIR / "edgebench-agent.service").read_text()
    assert "StateDirectory=edgebench" in unit  # systemd creates the data dir's parent for the service user
