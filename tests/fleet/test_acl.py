"""deploy/mosquitto: credentials, ACLs and client ids through the Dynamic Security plugin, on a real Mosquitto
started with the shipped mosquitto.conf's settings and a file made by deploy/mosquitto/fleet-auth.py, with a real
collector and real agents. Attackers are plain paho clients holding a device's own valid credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from localfleet import dynsec_plugin

from edgebench.agent.fleet import protocol as p

from .conftest import Fleet
from .services import REPO, Mosquitto, binary, wait_for
from .test_e2e import mqtt_publish

FLEET_AUTH = REPO / "deploy" / "mosquitto" / "fleet-auth.py"
DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
NOT_AUTHORIZED = 135
SHARE = "$share/edgebench-collectors/"
LIMIT = 262144  # the protocol's largest payloads: events and model-chunk (docs/protocol.md)


def fleet_auth(*args, check: bool = True) -> subprocess.CompletedProcess:
    """The script as a broker host runs it: a plain python3, no edgebench installed (standard library only)."""
    python = shutil.which("python3") or sys.executable
    result = subprocess.run([python, "-I", str(FLEET_AUTH), *map(str, args)], capture_output=True, text=True,
                            timeout=60, cwd="/")
    if check:
        assert result.returncode == 0, result.stderr
    return result


def deploy_settings(dynsec: Path) -> str:
    """deploy/mosquitto/mosquitto.conf without its listeners (the test's Mosquitto listens on a free port) and with
    this machine's plugin, the test's dynsec file and persistence folder."""
    plugin = dynsec_plugin()
    if not plugin:
        pytest.fail("Mosquitto's Dynamic Security plugin (mosquitto_dynamic_security.so) is not installed")
    out = []
    for line in DEPLOY_CONF.read_text().split("\nlistener ", 1)[0].splitlines():
        key = line.split(" ", 1)[0]
        if key == "plugin":
            line = f"plugin {plugin}"
        elif key == "plugin_opt_config_file":
            line = f"plugin_opt_config_file {dynsec}"
        elif key == "persistence_location":
            continue  # Mosquitto() set the test's
        out.append(line)
    text = "\n".join(out)
    for setting in ("allow_anonymous false", "max_queued_messages 20000", "max_queued_bytes 268435456",
                    "max_packet_size 300000", "persistence true"):
        assert f"\n{setting}\n" in text, setting
    settings = [line.split()[0] for line in out if line.strip() and not line.startswith("#")]
    assert "password_file" not in settings and "acl_file" not in settings
    return text


class Probe:
    """A paho client that records what the broker answers: CONNACK, SUBACKs, PUBACKs, messages, disconnections."""

    def __init__(self, port: int, user: str, password: str, client_id: str, v5: bool = True):
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        self.connacks, self.connack_properties, self.disconnects, self.messages = [], [], [], []
        self.subacks: dict[int, list] = {}
        self.pubacks: dict[int, object] = {}
        self.client.on_connect = lambda c, u, flags, reason, props: (self.connack_properties.append(props),
                                                                     self.connacks.append(reason))
        self.client.on_disconnect = lambda c, u, flags, reason, props: self.disconnects.append(reason)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.__setitem__(mid, codes)
        self.client.on_publish = lambda c, u, mid, reason, props: self.pubacks.__setitem__(mid, reason)
        self.client.on_message = lambda c, u, message: self.messages.append(message)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(lambda: self.connacks, 10, f"CONNACK for {client_id}")

    @property
    def connack(self):
        return self.connacks[0]

    def subscribe(self, topic: str):
        _, mid = self.client.subscribe(topic, qos=1)
        return wait_for(lambda: self.subacks.get(mid), 10, f"SUBACK for {topic}")[0]

    def publish(self, topic: str, payload: bytes) -> int:
        return self.client.publish(topic, payload, qos=1).mid

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Secured:
    """A broker with the deploy settings and dynsec, users made by fleet-auth.py (devices through add-device.sh):
    the collector (client id edgebench-collector), a second collector ``collector-b`` of the same share group, and
    devices dev1, dev2, dev3 (password: ``<user>-secret``)."""

    USERS = ("collector", "collector-b", "dev1", "dev2", "dev3")

    def __init__(self, root: Path, influxd):
        self.root = root
        self.dynsec = root / "dynamic-security.json"
        fleet_auth("init", self.dynsec, "--admin-password", "admin-secret")
        fleet_auth("add-collector", self.dynsec, "collector", "--client-id", "edgebench-collector",
                   "--password", "collector-secret")
        fleet_auth("add-collector", self.dynsec, "collector-b", "--client-id", "edgebench-collector-b",
                   "--password", "collector-b-secret")
        for device in ("dev1", "dev2", "dev3"):
            subprocess.run(["sh", str(REPO / "deploy/mosquitto/add-device.sh"), str(self.dynsec), device,
                            f"{device}-secret"], check=True, capture_output=True)
        for user in self.USERS:
            (root / f"{user}.pw").write_text(f"{user}-secret\n")
        self.broker = Mosquitto(root / "mosquitto", extra=deploy_settings(self.dynsec))
        self.broker.start()
        self.port = self.broker.port
        self.fleet = Fleet(root, self.broker, influxd)
        self.probes: list[Probe] = []

    def start_collector(self, extra: tuple = ()):
        return self.fleet.start_collector(extra=("--username", "collector", "--password-file",
                                                 str(self.root / "collector.pw"), "--client-id", "edgebench-collector",
                                                 *extra))

    def start_agent(self, device: str, extra: tuple = ()):
        return self.fleet.start_agent(device, extra=("--username", device, "--password-file",
                                                     str(self.root / f"{device}.pw"), *extra))

    def probe(self, user: str, client_id: str, v5: bool = True, password: str = "") -> Probe:
        probe = Probe(self.port, user, password or f"{user}-secret", client_id, v5)
        self.probes.append(probe)
        return probe

    def close(self) -> None:
        for probe in self.probes:
            probe.close()
        self.fleet.close()
        self.broker.stop()
        for service in (self.broker, *self.fleet.services):  # shown by pytest when the test failed
            print(f"---- {service.log_path}\n{service.log_text()[-3000:]}")


@pytest.fixture
def secured(tmp_path, influxd):
    instance = Secured(tmp_path, influxd)
    yield instance
    instance.close()


def collector_side(secured: Secured) -> Probe:
    """A collector as paho: collector-b's credentials (the collectors' role), the subscriptions the collector makes
    (server/collector.py), the only member of the share group: what it receives is what the collectors get."""
    probe = secured.probe("collector-b", "edgebench-collector-b")
    for kind in (p.EVENTS, p.TELEMETRY, p.HEARTBEAT, p.MODEL_REQUEST):
        assert not probe.subscribe(SHARE + p.wildcard(kind)).is_failure, kind
    for kind in (p.STATUS, p.INVENTORY):
        assert not probe.subscribe(p.wildcard(kind)).is_failure, kind
    return probe


def test_a_device_cannot_subscribe_outside_its_topics_nor_take_the_collectors_results(secured):
    """The attack of the issue: a device subscribed to the collectors' $share group got its turn of the fleet's
    messages, which the broker then dropped under the ACL (after the publisher's PUBACK). Now every subscription
    outside its own topics gets SUBACK "Not authorized", and all 50 results published while the attacker is
    connected reach the collectors' side, each once."""
    collector = collector_side(secured)
    attacker = secured.probe("dev2", "edgebench-agent-dev2")
    for topic in (SHARE + p.wildcard(p.EVENTS), SHARE + p.wildcard(p.TELEMETRY), SHARE + p.topic("dev3", p.EVENTS),
                  SHARE + p.topic("dev2", p.EVENTS), p.wildcard(p.JOBS), p.wildcard(p.EVENTS), "#",
                  "edgebench/#", p.topic("dev3", p.EVENTS), p.topic("dev1", p.JOBS), p.topic("dev1", p.MODEL_CHUNK),
                  "$share/g/" + p.topic("dev2", p.JOBS), "$SYS/#", "$CONTROL/dynamic-security/#"):
        code = attacker.subscribe(topic)
        assert code.is_failure and code.value == NOT_AUTHORIZED, (topic, code)
    for kind in (p.JOBS, p.CANCEL, p.MODEL_CHUNK, "acks"):  # its own topics: granted
        assert not attacker.subscribe(p.topic("dev2", kind)).is_failure, kind

    publisher = secured.probe("dev3", "edgebench-agent-dev3")
    mids = [publisher.publish(p.topic("dev3", p.EVENTS), f"result {i}".encode()) for i in range(50)]
    wait_for(lambda: all(mid in publisher.pubacks for mid in mids), 30, "50 PUBACKs")
    assert not any(publisher.pubacks[mid].is_failure for mid in mids)

    expected = sorted(f"result {i}" for i in range(50))
    wait_for(lambda: len(collector.messages) >= 50, 60, "the collectors to receive all 50 messages")
    assert sorted(m.payload.decode() for m in collector.messages) == expected  # by id: all, each once
    assert attacker.messages == [] and attacker.connacks[0] == 0 and not attacker.disconnects


def test_client_ids_are_bound_and_the_collector_role_runs_a_job_end_to_end(secured, sine_model):
    """A device with its own valid password cannot connect as the collector or as another board (their persistent
    sessions would be taken over); the real collector and agent stay connected and a real model pushed through the
    collector (delivered over MQTT: model-request, model-chunk) lands a result in InfluxDB."""
    collector = secured.start_collector()
    agent = secured.start_agent("dev1", extra=("--model-transport", "mqtt"))
    for user, client_id in (("dev2", "edgebench-collector"), ("dev2", "edgebench-agent-dev1"),
                            ("dev2", "edgebench-collector-b"), ("dev2", "dev2"), ("dev2", "anything"),
                            ("collector-b", "edgebench-collector"), ("collector", "edgebench-agent-dev1")):
        probe = secured.probe(user, client_id)
        assert probe.connack.value == NOT_AUTHORIZED, (user, client_id, probe.connack)
        probe.close()
    assert secured.probe("dev2", "edgebench-agent-dev2", password="wrong").connack.is_failure
    assert secured.probe("nobody", "edgebench-agent-nobody").connack.is_failure

    fleet = secured.fleet
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["dev1"]})
    [job] = fleet.wait_jobs(batch["batch_id"], timeout=120)
    assert job["state"] == "done", job
    [row] = fleet.wait_results(1)
    assert row["device"] == "dev1" and row["run_id"] == job["job_id"]
    assert collector.metric("edgebench_model_chunk_bytes_total") == model["size_bytes"]  # over MQTT
    assert collector.metric("edgebench_dead_letters_total") == 0
    # The job went through both sessions after the attempts: had one been taken over, its client would have been
    # disconnected (and logged it) before reconnecting to take the job, its model or its result.
    for service in (collector, agent):
        assert "disconnected from the broker" not in service.log_text(), service.log_text()
        assert "Not authorized" not in service.log_text(), service.log_text()


def test_devices_publish_only_under_their_own_subtree(secured):
    collector = secured.start_collector()
    secured.start_agent("dev1")
    port, pw = secured.port, "dev2-secret"

    def publish_as_dev2(topic: str, payload: dict) -> int:
        return mqtt_publish(port, topic, json.dumps(payload).encode(), username="dev2", password=pw,
                            client_id="edgebench-agent-dev2").value

    spoof = p.envelope("dev3", time.time(), event="error", job_id="x-1", reason="spoofed")
    assert publish_as_dev2(p.topic("dev3", p.EVENTS), spoof) == NOT_AUTHORIZED  # v5: the PUBACK says so
    assert publish_as_dev2(p.topic("dev1", p.STATUS), dict(spoof, state="offline")) == NOT_AUTHORIZED
    job = p.envelope("dev3", time.time(), job_id="j-1", model={"sha256": "a" * 64, "size_bytes": 1})
    for device in ("dev3", "dev2"):  # devices cannot send jobs, not even to themselves, nor acks or chunks
        for kind in (p.JOBS, p.CANCEL, p.MODEL_CHUNK, "acks"):
            assert publish_as_dev2(p.topic(device, kind), dict(job, device=device)) == NOT_AUTHORIZED, kind
    assert publish_as_dev2(p.topic("dev2", p.EVENTS), dict(spoof, device="dev2")) == 0  # its own subtree is fine
    request = p.envelope("dev3", time.time(), sha256="f" * 64, offset=0, length=10)
    assert publish_as_dev2(p.topic("dev3", p.MODEL_REQUEST), request) == NOT_AUTHORIZED

    # What a device reads: its own jobs, cancellations and chunks only. dev3's subscriptions are refused outright;
    # a collector (its role: publish to any device) sends to dev3 first, then to dev2: only dev2's arrive.
    reader = secured.probe("dev2", "edgebench-agent-dev2")
    kinds = (p.JOBS, p.CANCEL, p.MODEL_CHUNK, "acks")
    for kind in kinds:
        assert reader.subscribe(p.topic("dev3", kind)).value == NOT_AUTHORIZED
        assert not reader.subscribe(p.topic("dev2", kind)).is_failure
    sender = secured.probe("collector-b", "edgebench-collector-b")
    for device in ("dev3", "dev2"):
        for kind in kinds:
            mid = sender.publish(p.topic(device, kind), json.dumps(dict(job, device=device)).encode())
            wait_for(lambda mid=mid: mid in sender.pubacks, 10, "PUBACK")
            assert not sender.pubacks[mid].is_failure
    wait_for(lambda: len(reader.messages) >= len(kinds), 30, "dev2's messages")
    assert sorted(m.topic for m in reader.messages) == sorted(p.topic("dev2", kind) for kind in kinds)
    # Models over MQTT: a device asks on its own subtree (the collector answers it: the end-to-end test).
    mid = reader.publish(p.topic("dev2", p.MODEL_REQUEST), json.dumps(dict(request, device="dev2")).encode())
    wait_for(lambda: mid in reader.pubacks, 10, "PUBACK")
    assert not reader.pubacks[mid].is_failure

    import paho.mqtt.client as mqtt  # anonymous clients are refused

    anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
    reasons = []
    anonymous.on_connect = lambda c, u, f, reason, props: reasons.append(reason)
    anonymous.connect("127.0.0.1", port)
    anonymous.loop_start()
    try:
        wait_for(lambda: reasons, 10, "CONNACK")
    finally:
        anonymous.loop_stop()
    assert reasons[0].is_failure

    devices = {d["device_id"]: d for d in collector.get("/api/v1/devices")["devices"]}
    assert "dev3" not in devices and devices["dev1"]["state"] == "online"
    assert collector.metric("edgebench_dead_letters_total") == 0


def test_packets_are_bounded_just_above_the_protocols_largest_payload(secured):
    """max_packet_size: a payload of the protocol's limit passes both ways (device -> collector on events,
    collector -> device on model-chunk); a bigger packet gets its sender disconnected, without a PUBACK."""
    collector = collector_side(secured)
    device = secured.probe("dev2", "edgebench-agent-dev2", v5=False)  # v3.1.1: nobody told it the limit
    assert not device.subscribe(p.topic("dev2", p.MODEL_CHUNK)).is_failure
    mid = device.publish(p.topic("dev2", p.EVENTS), b"e" * LIMIT)
    wait_for(lambda: mid in device.pubacks, 30, "PUBACK at the limit")
    wait_for(lambda: collector.messages, 30, "the collector to receive the payload at the limit")
    assert device.pubacks[mid] == 0 and len(collector.messages[0].payload) == LIMIT
    mid = collector.publish(p.topic("dev2", p.MODEL_CHUNK), b"c" * LIMIT)
    wait_for(lambda: device.messages, 30, "the chunk at the limit")
    # the device may hold the chunk before the collector's client has handled the broker's PUBACK: wait for it
    wait_for(lambda: mid in collector.pubacks, 30, "the broker's PUBACK of the chunk at the limit")
    assert len(device.messages[0].payload) == LIMIT and not collector.pubacks[mid].is_failure

    for v5, size in ((False, 300_001), (True, 300_001), (True, 1_048_576)):  # the packet: payload + 20-odd bytes
        big = secured.probe("dev3", "edgebench-agent-dev3", v5=v5)
        if v5:
            assert big.connack_properties[0].MaximumPacketSize == 300000  # a v5 client is told the limit
        mid = big.publish(p.topic("dev3", p.EVENTS), b"x" * size)
        wait_for(lambda big=big: big.disconnects, 30, f"the broker to disconnect the sender of {size} bytes")
        assert mid not in big.pubacks, (v5, size)
        big.close()
    assert len(collector.messages) == 1 and not device.disconnects


def test_fleet_auth_file_and_live_changes_with_mosquitto_ctrl(secured):
    """fleet-auth.py: a 0600 file replaced atomically; names checked; --print-ctrl leaves the file alone and its
    commands make the same change on the running broker, which then saves the file itself."""
    dynsec = secured.dynsec
    assert os.stat(dynsec).st_mode & 0o777 == 0o600
    assert [f.name for f in dynsec.parent.iterdir() if f.name.startswith(".fleet-auth-")] == []
    listing = fleet_auth("list", dynsec).stdout
    assert "edgebench-agent-dev1" in listing and "collector-edgebench-collectors" in listing
    data = json.loads(dynsec.read_text())
    assert data["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                        "subscribe": False, "unsubscribe": True}
    for bad in ("dev/1", "+", "#", "$x", "", "_dev", ".dev", "dev 1", "a" * 65):
        result = fleet_auth("add-device", dynsec, bad, check=False)
        assert result.returncode == 2 and "invalid device id" in result.stderr, bad
    assert fleet_auth("add-device", dynsec, "collector", check=False).returncode == 2  # a collector's name
    assert fleet_auth("add-collector", dynsec, "c9", "--client-id", "edgebench-agent-dev1",
                      check=False).returncode == 2  # an agent's client id
    assert fleet_auth("add-collector", dynsec, "c9", "--client-id", "edgebench-collector",
                      check=False).returncode == 2  # already bound to the collector

    if not binary("mosquitto_ctrl"):
        pytest.skip("mosquitto_ctrl is not installed")
    options = f"-p {secured.port} -u admin -P admin-secret"

    def live(*args) -> str:
        """fleet-auth.py ... --print-ctrl, its stdout piped to sh as the docs say; its stderr returned."""
        before = dynsec.read_bytes()
        printed = fleet_auth(*args, "--print-ctrl", "--ctrl-options", options)
        assert dynsec.read_bytes() == before  # --print-ctrl: the running broker owns the file
        commands = [line for line in printed.stdout.splitlines() if not line.startswith("#")]
        assert commands and all(line.startswith("mosquitto_ctrl ") for line in commands), printed.stdout
        result = subprocess.run(["sh", "-e"], input=printed.stdout, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "rror" not in result.stdout + result.stderr, result
        return printed.stderr

    assert "device dev4: password dev4-secret" in live("add-device", dynsec, "dev4", "--password", "dev4-secret")
    dev4 = secured.probe("dev4", "edgebench-agent-dev4")
    assert dev4.connack == 0 and not dev4.subscribe(p.topic("dev4", p.JOBS)).is_failure
    assert dev4.subscribe(SHARE + p.wildcard(p.EVENTS)).value == NOT_AUTHORIZED
    assert secured.probe("dev4", "edgebench-agent-dev1").connack.value == NOT_AUTHORIZED
    # A collector of another share group: a role of its own ($share/... quoted for the shell), its client id bound.
    live("add-collector", dynsec, "c2", "--client-id", "edgebench-collector-2", "--share-group", "grp2",
         "--password", "c2-secret")
    c2 = secured.probe("c2", "edgebench-collector-2")
    assert not c2.subscribe("$share/grp2/" + p.wildcard(p.EVENTS)).is_failure
    assert c2.subscribe(SHARE + p.wildcard(p.EVENTS)).value == NOT_AUTHORIZED
    assert secured.probe("c2", "edgebench-collector").connack.value == NOT_AUTHORIZED
    # The broker saved its file itself (mosquitto_ctrl's commands are answered once saved): the new users are in it.
    listing = fleet_auth("list", dynsec).stdout
    assert "edgebench-agent-dev4" in listing and "collector-grp2" in listing

    live("remove-device", dynsec, "dev4")
    wait_for(lambda: dev4.disconnects, 30, "the removed device to be disconnected")
    assert secured.probe("dev4", "edgebench-agent-dev4").connack.is_failure
    assert "device-dev4" not in dynsec.read_text() and "dev4" not in fleet_auth("list", dynsec).stdout
