"""Fixtures of the fleet tests: real Mosquitto and influxd processes, collector and agent processes, real models.

Mosquitto is started per test (fault tests kill it); influxd once per session, each test writing its own database.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path

import pytest

from .services import REPO, Agent, Collector, Influxd, Mosquitto, binary, wait_for

_db_names = itertools.count()
# Short fleet jobs from `edgebench push`: one repeat of a few runs (the tests check behaviour; bench/ measures speed).
FAST = ["--min-runs", "50", "--min-duration", "0.1", "--warmup-runs", "2", "--warmup-duration", "0.05",
        "--repeats", "1"]


def _require_binaries() -> None:
    if not binary("mosquitto") or not binary("influxd"):
        subprocess.run(["sh", str(REPO / "scripts" / "ensure_services.sh")], check=False)
    if not binary("mosquitto") or not binary("influxd"):
        pytest.fail("mosquitto and influxd are required: run scripts/ensure_services.sh")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    _require_binaries()
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path):
    _require_binaries()
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sine_model(models) -> Path:
    return models["sine_float.tflite"]  # microseconds per run: short jobs


@pytest.fixture
def slow_model(models) -> Path:
    return models["efficientnet_lite0_int8.tflite"]  # milliseconds per run: jobs that last a few seconds


class Fleet:
    """A collector and agents on one broker, writing to a database of their own; stops them all at the end."""

    def __init__(self, root: Path, broker: Mosquitto, influxd: Influxd, mqtt_url: str = "", mqtt_args: tuple = ()):
        """``mqtt_url``/``mqtt_args``: how collectors and agents reach the broker (e.g. mqtts:// and --tls-ca)."""
        self.root, self.broker, self.influxd = root, broker, influxd
        self.mqtt_url, self.mqtt_args = mqtt_url or broker.url, tuple(mqtt_args)
        self.db = f"fleet{next(_db_names)}_{int(time.time())}"
        self.services: list = []
        self.collector = None

    def start_collector(self, name: str = "collector", extra: tuple = (), **kwargs) -> Collector:
        """The first collector is ``self.collector``; more (``name`` = their directory) share its group."""
        collector = Collector(self.root / name, self.mqtt_url, self.influxd.url, self.db,
                              extra=(*self.mqtt_args, *extra), **kwargs)
        collector.start()
        self.services.append(collector)
        self.collector = self.collector or collector
        return collector

    def start_agent(self, device: str, labels: str = "class=x86", extra: tuple = ()) -> Agent:
        agent = Agent(self.root / f"agent-{device}", self.mqtt_url, device, labels, (*self.mqtt_args, *extra))
        agent.start()
        self.services.append(agent)
        self.wait_online(device)
        return agent

    def wait_online(self, device: str, timeout: float = 30) -> None:
        def online():
            devices = self.collector.get("/api/v1/devices")["devices"]
            return any(d["device_id"] == device and d["state"] == "online" and d["inventory"] for d in devices)

        wait_for(online, timeout, f"{device} online in the registry")

    # ---------------------------------------------------------------- HTTP API helpers

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> dict:
        return json.loads(self.collector.request("POST", path, body, content_type))

    def upload(self, path: Path, name: str = "") -> dict:
        return self.post(f"/api/v1/models?name={name or path.name}", path.read_bytes(), "application/octet-stream")

    def submit(self, shas: list[str], devices: dict, **options) -> dict:
        settings = options.pop("settings", {"min_runs": 50, "min_duration_s": 0.1, "warmup_runs": 2,
                                            "warmup_duration_s": 0.05})
        body = {"models": shas, "devices": devices, "options": {"settings": settings, "sensors": False, **options}}
        return self.post("/api/v1/jobs", json.dumps(body).encode())

    def jobs(self, batch: str) -> list[dict]:
        return self.collector.get(f"/api/v1/jobs?batch={batch}")["jobs"]

    def wait_jobs(self, batch: str, timeout: float = 90, states=("done", "failed", "cancelled", "rejected")):
        return wait_for(lambda: (lambda jobs: jobs if jobs and all(j["state"] in states for j in jobs) else None)(
            self.jobs(batch)), timeout, f"batch {batch} to finish")

    def results_in_influx(self) -> list[dict]:
        return self.influxd.rows(self.db, "SELECT * FROM edgebench_result")

    def wait_results(self, count: int, timeout: float = 60) -> list[dict]:
        """The result points, once ``count`` are there with their run id: a query may see a point being written
        before all of its fields (InfluxDB stores each field on its own), so a row without its run id yet is not
        counted."""
        def complete():
            rows = self.results_in_influx()
            return rows if len([row for row in rows if row.get("run_id")]) >= count else None

        return wait_for(complete, timeout, f"{count} result point(s) in InfluxDB")

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()


@pytest.fixture
def fleet(tmp_path, broker, influxd):
    instance = Fleet(tmp_path, broker, influxd)
    yield instance
    instance.close()


def assert_exactly_once(rows: list[dict], job_ids: list[str]) -> None:
    """Every job's result is in InfluxDB, once."""
    run_ids = sorted(row["run_id"] for row in rows)
    assert run_ids == sorted(job_ids), (run_ids, job_ids)


def make_ca(folder: Path) -> dict:
    """A CA and a server certificate for 127.0.0.1 and localhost (subjectAltName), made with openssl: the broker's
    and the collector's in the TLS tests. The key usages Python 3.13's strict verification asks of a CA are set."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext")}
    run = [("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgebench test CA",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", files["ca.key"], "-out", files["ca.crt"]),
           ("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", files["server.key"],
            "-out", files["server.csr"])]
    for args in run:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    files["ext"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier=keyid\n"
                            "extendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.crt"]),
                    "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-days", "2", "-out", str(files["server.crt"]),
                    "-extfile", str(files["ext"])], check=True, capture_output=True)
    return files


def tls_fleet(root: Path, influxd: Influxd) -> tuple[Mosquitto, Fleet, dict]:
    """A started TLS broker (anonymous, TLS 1.2, one test CA: ``make_ca``) and a Fleet whose collectors and agents
    verify it with that CA; returns (broker, fleet, the CA's files). The caller closes the fleet, then the broker."""
    pki = make_ca(root / "pki")
    broker = Mosquitto(root / "tls-broker", extra=f"allow_anonymous true\ncafile {pki['ca.crt']}\n"
                       f"certfile {pki['server.crt']}\nkeyfile {pki['server.key']}\ntls_version tlsv1.2")
    broker.start()
    return broker, Fleet(root, broker, influxd, mqtt_url=f"mqtts://127.0.0.1:{broker.port}",
                         mqtt_args=("--tls-ca", str(pki["ca.crt"]))), pki


def publish_many(port: int, messages: list[tuple[str, bytes]], client_id: str) -> list[int]:
    """Publish QoS 1 messages with one v5 client; returns the PUBACK reason codes in order."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    codes: dict[int, int] = {}
    client.on_publish = lambda c, u, mid, reason, props: codes.__setitem__(mid, reason.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        mids = [client.publish(topic, payload, qos=1).mid for topic, payload in messages]
        wait_for(lambda: len(codes) == len(mids), 60, "every PUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return [codes[mid] for mid in mids]
