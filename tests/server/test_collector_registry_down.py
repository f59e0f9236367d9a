"""A registry that does not answer (PostgreSQL down or restarting: RegistryUnavailable) is waited for, as InfluxDB
is: no message is dead-lettered, acknowledged or taken for a duplicate because of it, and a job's state is not
dropped; the collector stopping meanwhile acknowledges nothing."""

from __future__ import annotations

import threading
import time

import pytest

from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.mqtt import MqttSettings
from edgebench.server import collector as collector_module
from edgebench.server.collector import Collector, CollectorConfig, Incoming
from edgebench.server.metrics import Metrics
from edgebench.server.registry_backends import RegistryUnavailable

MSG_ID = "msg-00000001"


class FlakyRegistry:
    """Answers after ``failures`` RegistryUnavailable on each method named in ``flaky``; records what it did."""

    def __init__(self, failures: int, flaky: tuple):
        self.failures, self.flaky, self.calls, self.done = failures, flaky, {}, []

    def __getattr__(self, name):
        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.flaky and self.calls[name] <= self.failures:
                raise RegistryUnavailable("registry postgresql://db/x: connection refused")
            self.done.append(name)
            return {"labels_of": {}, "delivered_among": set(), "job_devices": {}}.get(name)
        return call


class Client:
    def __init__(self):
        self.acked, self.published = [], []

    def ack(self, mid, qos):
        self.acked.append(mid)

    def publish(self, topic, payload, qos=0, **kwargs):
        self.published.append(topic)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(collector_module, "REGISTRY_RETRY_S", 0.01)


def collector_with(registry, tmp_path) -> Collector:
    collector = Collector(CollectorConfig(MqttSettings(), "http://127.0.0.1:9", "db", tmp_path), registry, Metrics())
    collector.client = Client()
    return collector


def heartbeat() -> Incoming:
    payload = p.envelope("dev1", time.time(), msg_id=MSG_ID, uptime_s=5.0, outbox_depth=0, telemetry_dropped=0)
    return Incoming(p.topic("dev1", p.HEARTBEAT), p.encode(p.HEARTBEAT, payload), mid=1, qos=1, received=time.time())


def test_a_message_waits_for_the_registry_and_is_no_duplicate_then(tmp_path):
    registry = FlakyRegistry(3, ("devices_seen",))
    collector = collector_with(registry, tmp_path)
    item = heartbeat()
    [points] = collector._apply_safely([item])
    assert points and not item.duplicate and not item.refused, item  # applied, once the registry answered
    assert registry.calls["devices_seen"] == 4 and "dead_letter" not in registry.calls
    assert collector.registry_ok
    assert collector._pending_ids == {MSG_ID}


def test_a_job_state_and_the_msg_ids_wait_for_the_registry_before_any_ack(tmp_path):
    registry = FlakyRegistry(2, ("record_stored",))
    collector = collector_with(registry, tmp_path)
    item = heartbeat()
    item.device, item.msg_id = "dev1", MSG_ID
    item.job_event = ("dev1", {"event": "result", "job_id": "job-1"}, {})
    collector._store([item], [])
    assert registry.done == ["record_stored"] and registry.calls["record_stored"] == 3
    assert collector.client.acked == [1] and collector.client.published == [p.topic("dev1", p.ACKS)]


def test_stopping_while_the_registry_is_away_acknowledges_nothing(tmp_path):
    registry = FlakyRegistry(10**9, ("record_stored",))
    collector = collector_with(registry, tmp_path)
    item = heartbeat()
    item.device, item.msg_id = "dev1", MSG_ID
    threading.Timer(0.2, collector.stop.set).start()
    with pytest.raises(collector_module._Stopping):
        collector._store([item], [])
    assert collector.client.acked == [] and not collector.registry_ok
