"""Devices' MQTT credentials through the collector's HTTP API (admin role): a real Mosquitto with the Dynamic Security
plugin and the deploy settings (test_acl.py's broker: users made by deploy/mosquitto/fleet-auth.py, the admin
``admin``), a real collector given the broker's admin account, real agents and paho probes. The device the API makes
is the one fleet-auth.py add-device makes: both are planned by server/dynsec.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from edgebench.agent.fleet import protocol as p
from edgebench.server import dynsec

from .services import wait_for
from .test_acl import NOT_AUTHORIZED, SHARE, Secured

OWN_READS = (p.JOBS, p.CANCEL, p.MODEL_CHUNK, "acks")


@pytest.fixture
def secured(tmp_path, influxd):
    instance = Secured(tmp_path, influxd)
    (tmp_path / "admin.pw").write_text("admin-secret\n")
    yield instance
    instance.close()


def admin_account(secured: Secured, user: str = "admin", password_file: str = "admin.pw") -> tuple:
    return ("--broker-admin-user", user, "--broker-admin-password-file", str(secured.root / password_file))


def call(collector, method: str, device: str, token: str | None = "") -> tuple[int, dict]:
    """``method`` /api/v1/devices/DEVICE/credentials: the status and the JSON answer. ``token`` "": the admin's."""
    token = collector.token if token == "" else token
    request = urllib.request.Request(f"{collector.url}/api/v1/devices/{device}/credentials", data=b"", method=method,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def role_acls(dynsec_file, role: str) -> set:
    """A role's ACLs in the broker's file (which it saves before it answers a change)."""
    data = json.loads(dynsec_file.read_text())
    found = next(r for r in data["roles"] if r["rolename"] == role)
    return {(a["acltype"], a["topic"], a.get("allow", False)) for a in found.get("acls", [])}


def test_the_protocols_device_ids_are_the_brokers_names():
    assert dynsec.NAME.pattern == p.DEVICE_ID.pattern.removeprefix("^")


@pytest.mark.parametrize("flags, says", [
    (["--broker-admin-user", "admin"], "--broker-admin-user needs its password: --broker-admin-password-file FILE "
                                       "or $EDGEBENCH_BROKER_ADMIN_PASSWORD"),
    (["--broker-admin-password-file", "admin.pw"], "--broker-admin-password-file needs --broker-admin-user"),
    (["--broker-admin-user", "admin", "--broker-admin-password-file", "missing.pw"],
     "--broker-admin-password-file missing.pw: No such file or directory"),
])
def test_a_broker_admin_account_needs_its_password(tmp_path, flags, says):
    env = {k: v for k, v in os.environ.items() if k != "EDGEBENCH_BROKER_ADMIN_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "server", "--data-dir", str(tmp_path),
                           *flags], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.startswith("edgebench: error: " + says), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_admin_makes_resets_and_revokes_a_devices_credentials(secured):
    """The answer's password lets a real agent in, with its own topics only and its client id bound; the role is
    fleet-auth.py add-device's (dev1's, made by it, with the id changed); a second POST resets the password (the old
    one is refused); DELETE disconnects the device and it can no longer connect."""
    collector = secured.start_collector(extra=admin_account(secured))
    status, made = call(collector, "POST", "dev9")
    assert status == 201, made
    assert (made["device"], made["username"], made["client_id"], made["reset"]) == \
        ("dev9", "dev9", "edgebench-agent-dev9", False)
    assert role_acls(secured.dynsec, "device-dev9") == {
        (kind, topic.replace("/dev1/", "/dev9/"), allow) for kind, topic, allow in role_acls(secured.dynsec,
                                                                                          "device-dev1")}
    saved = next(c for c in json.loads(secured.dynsec.read_text())["clients"] if c["username"] == "dev9")
    assert saved["clientid"] == "edgebench-agent-dev9" and [r["rolename"] for r in saved["roles"]] == ["device-dev9"]

    device = secured.probe("dev9", "edgebench-agent-dev9", password=made["password"])
    assert device.connack == 0
    for kind in OWN_READS:
        assert not device.subscribe(p.topic("dev9", kind)).is_failure, kind
    for topic in (p.topic("dev1", p.JOBS), p.topic("dev1", p.EVENTS), SHARE + p.wildcard(p.EVENTS),
                  p.wildcard(p.JOBS), "#"):
        assert device.subscribe(topic).value == NOT_AUTHORIZED, topic
    for topic, refused in ((p.topic("dev9", p.EVENTS), False), (p.topic("dev1", p.EVENTS), True),
                           (p.topic("dev9", p.JOBS), True)):
        mid = device.publish(topic, b"{}")
        wait_for(lambda mid=mid: mid in device.pubacks, 10, f"PUBACK of {topic}")
        assert device.pubacks[mid].is_failure == refused, topic
    assert secured.probe("dev9", "edgebench-agent-dev1", password=made["password"]).connack.value == NOT_AUTHORIZED

    (secured.root / "dev9.pw").write_text(made["password"] + "\n")  # a real agent with the answer's password
    secured.start_agent("dev9")
    wait_for(lambda: any(d["device_id"] == "dev9" and d["state"] == "online"
                         for d in collector.get("/api/v1/devices")["devices"]), 30, "dev9 online")

    status, again = call(collector, "POST", "dev9")
    assert status == 201 and again["reset"] is True and again["password"] != made["password"], again
    assert secured.probe("dev9", "edgebench-agent-dev9", password=made["password"]).connack.is_failure
    connected = secured.probe("dev9", "edgebench-agent-dev9", password=again["password"])
    assert connected.connack == 0

    status, revoked = call(collector, "DELETE", "dev9")
    assert (status, revoked) == (200, {"device": "dev9", "revoked": True})
    wait_for(lambda: connected.disconnects, 30, "the broker to disconnect the revoked device")
    assert secured.probe("dev9", "edgebench-agent-dev9", password=again["password"]).connack.is_failure
    data = json.loads(secured.dynsec.read_text())
    assert "dev9" not in {c["username"] for c in data["clients"]}
    assert "device-dev9" not in {r["rolename"] for r in data["roles"]}
    assert call(collector, "DELETE", "dev9")[0] == 404
    assert collector.metric("edgebench_device_credentials_total") == 3


def test_only_the_admin_role_valid_ids_and_device_users(secured):
    collector = secured.start_collector(extra=admin_account(secured))
    body = json.dumps({"name": "ci", "role": "submit"}).encode()
    submit = json.loads(collector.request("POST", "/api/v1/tokens", body))["token"]
    for method in ("POST", "DELETE"):
        status, answer = call(collector, method, "dev9", token=submit)
        assert status == 403 and answer["error"].endswith("has the submit role; this route needs admin"), answer
        assert call(collector, method, "dev9", token=None)[0] == 401
    assert collector.metric("edgebench_http_forbidden_total") == 2
    for bad in ("-dev", "dev%209", "a" * 65, "dev%2B"):
        status, answer = call(collector, "POST", bad)
        assert status == 400 and answer["error"].startswith("invalid device id"), (bad, answer)
    for method in ("POST", "DELETE"):  # not a device's user: left alone
        status, answer = call(collector, method, "collector")
        assert status == 409 and "is a collector user, not a device" in answer["error"], answer
    assert secured.probe("collector-b", "edgebench-collector-b").connack == 0
    status, answer = call(collector, "DELETE", "nobody")
    assert status == 404 and "no user 'nobody'" in answer["error"], answer
    assert collector.metric("edgebench_device_credentials_total") == 0


def test_the_devices_credentials_command(secured):
    """`edgebench devices credentials ID [--revoke]`: the agent's flags once (the broker as boards reach it, from
    --broker-device-url); a bad id is refused before asking."""
    collector = secured.start_collector(extra=(*admin_account(secured), "--broker-device-url",
                                               "mqtts://lab-server:8883"))

    def edgebench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "devices", "credentials", *args,
                               "--server", collector.url, "--token", collector.token], capture_output=True, text=True,
                              timeout=60)

    made = edgebench("dev8")
    assert made.returncode == 0, made.stderr
    first = made.stdout.splitlines()[0]
    assert first.startswith("device dev8: MQTT password ") and "shown once" in first, made.stdout
    assert "edgebench agent --mqtt mqtts://lab-server:8883 --device-id dev8 --username dev8 --password-file" \
        in made.stdout, made.stdout
    password = first.split()[4]
    assert secured.probe("dev8", "edgebench-agent-dev8", password=password).connack == 0
    revoked = edgebench("dev8", "--revoke")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert secured.probe("dev8", "edgebench-agent-dev8", password=password).connack.is_failure
    bad = edgebench("dev/8")
    assert bad.returncode == 2 and bad.stderr.startswith("edgebench: error: invalid device id"), bad.stderr
    assert len(bad.stderr.splitlines()) == 1


def test_without_an_admin_account_409_and_a_refused_one_502(secured):
    collector = secured.start_collector()
    status, answer = call(collector, "POST", "dev9")
    assert status == 409 and answer["error"].startswith("no broker admin account configured"), answer
    collector.stop()
    # collector-b's own account: not an admin (and bound to another client id), so the broker refuses it
    refused = secured.start_collector(extra=admin_account(secured, "collector-b", "collector-b.pw"))
    status, answer = call(refused, "POST", "dev9")
    assert status == 502 and "the admin account was refused" in answer["error"], answer
    assert refused.metric("edgebench_broker_admin_errors_total") == 1
    assert "Traceback" not in refused.log_text()
