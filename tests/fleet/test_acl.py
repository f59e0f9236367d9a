"""deploy/mosquitto: per-device credentials and the ACL, on a real Mosquitto, with a real collector and agent."""

from __future__ import annotations

import json
import subprocess
import time

from edgebench.agent.fleet import protocol as p

from .conftest import Fleet
from .services import REPO, Mosquitto, wait_for
from .test_e2e import mqtt_publish

NOT_AUTHORIZED = 135


def add_device(passwd, user: str, password: str) -> None:
    subprocess.run(["sh", str(REPO / "deploy/mosquitto/add-device.sh"), str(passwd), user, password], check=True,
                   capture_output=True)


def received_by(port: int, user: str, password: str, topics: list[str], publish) -> list[str]:
    """Topics of the messages ``user`` receives on ``topics`` while ``publish()`` runs. Mosquitto 2.0 grants any
    subscription and applies the read ACL to each message delivered, so the check is on what arrives."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    granted, got = [], []
    client.on_subscribe = lambda c, u, mid, codes, props: granted.extend(codes)
    client.on_message = lambda c, u, message: got.append(message.topic)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe([(t, 1) for t in topics])
        wait_for(lambda: len(granted) == len(topics), 10, "SUBACK")
        publish()
        wait_for(lambda: got, 10, "a message")
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_devices_publish_only_under_their_own_subtree(tmp_path, influxd):
    passwd = tmp_path / "passwd"
    for user in ("collector", "dev1", "dev2"):
        add_device(passwd, user, f"{user}-secret")
    broker = Mosquitto(tmp_path / "mosquitto", extra=f"allow_anonymous false\npassword_file {passwd}\n"
                       f"acl_file {REPO / 'deploy/mosquitto/acl'}")
    broker.start()
    fleet = Fleet(tmp_path, broker, influxd)
    try:
        (tmp_path / "collector.pw").write_text("collector-secret\n")
        (tmp_path / "dev1.pw").write_text("dev1-secret\n")
        collector = fleet.start_collector(extra=("--username", "collector", "--password-file",
                                                 str(tmp_path / "collector.pw")))
        fleet.start_agent("dev1", extra=("--username", "dev1", "--password-file", str(tmp_path / "dev1.pw")))

        spoof = p.envelope("dev2", time.time(), event="error", job_id="x-1", reason="spoofed")
        code = mqtt_publish(broker.port, p.topic("dev2", p.EVENTS), json.dumps(spoof).encode(), username="dev1",
                            password="dev1-secret", client_id="dev1-spoof")
        assert code.value == NOT_AUTHORIZED  # v5: the PUBACK says so (v3.1.1 would drop it silently)
        job = p.envelope("dev2", time.time(), job_id="j-1", model={"sha256": "a" * 64, "size_bytes": 1})
        code = mqtt_publish(broker.port, p.topic("dev2", p.JOBS), json.dumps(job).encode(), username="dev1",
                            password="dev1-secret", client_id="dev1-jobs")
        assert code.value == NOT_AUTHORIZED  # devices cannot send jobs, not even to another device
        code = mqtt_publish(broker.port, p.topic("dev1", p.EVENTS), json.dumps(dict(spoof, device="dev1")).encode(),
                            username="dev1", password="dev1-secret", client_id="dev1-own")
        assert code.value == 0  # its own subtree is fine

        def collector_publishes():  # dev2's job first: had dev1 been allowed to read it, it would arrive first
            for device in ("dev2", "dev1"):
                payload = json.dumps(dict(job, device=device, job_id=f"{device}-cancel")).encode()
                mqtt_publish(broker.port, p.topic(device, p.CANCEL), payload, username="collector",
                             password="collector-secret", client_id="collector-test")

        got = received_by(broker.port, "dev1", "dev1-secret", [p.topic("dev2", p.CANCEL), p.topic("dev1", p.CANCEL)],
                          collector_publishes)
        assert got == [p.topic("dev1", p.CANCEL)]

        # Models over MQTT: a device asks under its own subtree only and reads only its own chunks.
        request = p.envelope("dev2", time.time(), sha256="f" * 64, offset=0, length=10)
        code = mqtt_publish(broker.port, p.topic("dev2", p.MODEL_REQUEST), json.dumps(request).encode(),
                            username="dev1", password="dev1-secret", client_id="dev1-req2")
        assert code.value == NOT_AUTHORIZED

        def dev2_chunk_then_dev1_request():
            chunk = p.envelope("dev2", time.time(), sha256="f" * 64, offset=0, error="test")
            mqtt_publish(broker.port, p.topic("dev2", p.MODEL_CHUNK), json.dumps(chunk).encode(),
                         username="collector", password="collector-secret", client_id="collector-test")
            code = mqtt_publish(broker.port, p.topic("dev1", p.MODEL_REQUEST),
                                json.dumps(dict(request, device="dev1")).encode(), username="dev1",
                                password="dev1-secret", client_id="dev1-req")
            assert code.value == 0  # the collector answers it (unknown model) on dev1's model-chunk topic

        chunk_topics = [p.topic("dev2", p.MODEL_CHUNK), p.topic("dev1", p.MODEL_CHUNK)]
        got = received_by(broker.port, "dev1", "dev1-secret", chunk_topics, dev2_chunk_then_dev1_request)
        assert got == [p.topic("dev1", p.MODEL_CHUNK)]

        import paho.mqtt.client as mqtt  # anonymous clients are refused

        anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
        reasons = []
        anonymous.on_connect = lambda c, u, f, reason, props: reasons.append(reason)
        anonymous.connect("127.0.0.1", broker.port)
        anonymous.loop_start()
        wait_for(lambda: reasons, 10, "CONNACK")
        anonymous.loop_stop()
        assert reasons[0].is_failure

        devices = {d["device_id"]: d for d in collector.get("/api/v1/devices")["devices"]}
        assert "dev2" not in devices and devices["dev1"]["state"] == "online"
        assert collector.metric("edgebench_dead_letters_total") == 0
    finally:
        fleet.close()
        broker.stop()
