"""Models in chunks over MQTT (docs/protocol.md, "Model delivery"): boards that reach only the broker, resumed
transfers, verification, unknown models answered with an error, and the protocol's checks of both kinds."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time

import pytest

from edgebench.agent.fleet import protocol as p

from .services import wait_for
from .test_e2e import mqtt_publish

SHA = "ab" * 32


def _request(**fields) -> bytes:
    return json.dumps(p.envelope("dev1", time.time(), **{"sha256": SHA, "offset": 0, "length": 1024, **fields})
                      ).encode()


def _chunk(**fields) -> bytes:
    data = base64.b64encode(b"x" * 100).decode()
    return json.dumps(p.envelope("dev1", time.time(), **{"sha256": SHA, "offset": 0, "total": 100, "data": data,
                                                         **fields})).encode()


def test_protocol_checks_model_requests_and_chunks():
    request, chunk = p.topic("dev1", p.MODEL_REQUEST), p.topic("dev1", p.MODEL_CHUNK)
    assert p.validate(request, _request()).payload["length"] == 1024
    assert p.validate(request, _request(offset=5, length=p.MODEL_WINDOW_BYTES)).kind == p.MODEL_REQUEST
    for bad, reason in ((dict(sha256="AB" * 32), "sha256"), (dict(sha256="../x"), "sha256"),
                        (dict(offset=-1), "below 0"), (dict(length=0), "below 1"),
                        (dict(length=p.MODEL_WINDOW_BYTES + 1), "above"), (dict(offset=1.5), "integer"),
                        (dict(length=True), "boolean")):
        with pytest.raises(p.ProtocolError, match=reason):
            p.validate(request, _request(**bad))
    assert p.chunk_data(p.validate(chunk, _chunk()).payload) == b"x" * 100
    assert p.validate(chunk, json.dumps(p.envelope("dev1", 0, sha256=SHA, offset=0, error="no such model")).encode())
    for bad, reason in ((dict(data="!!not base64"), "base64"), (dict(total=99), "beyond"), (dict(data=""), "empty"),
                        (dict(offset=-3), "below 0"), (dict(data="A" * 200_000), "more than")):
        with pytest.raises(p.ProtocolError, match=reason):
            p.validate(chunk, _chunk(**bad))
    full = p.envelope("d" * 64, time.time(), sha256=SHA, offset=p.MAX_MODEL_BYTES - p.MODEL_CHUNK_BYTES,
                      total=p.MAX_MODEL_BYTES, data=base64.b64encode(b"\xff" * p.MODEL_CHUNK_BYTES).decode())
    assert len(p.encode(p.MODEL_CHUNK, full)) < p.MAX_PAYLOAD[p.MODEL_CHUNK]  # a full chunk fits its limit
    with pytest.raises(p.ProtocolError, match="unknown topic kind"):
        p.parse_topic("edgebench/v1/devices/dev1/model-chunks")


def _agent_jobs(fleet, device: str) -> dict:
    db = fleet.root / f"agent-{device}" / "data" / "agent.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())


def test_models_arrive_over_mqtt_when_http_is_unreachable(fleet, sine_model):
    """The collector's public URL points nowhere: auto falls back to MQTT, mqtt never tries HTTP, http fails."""
    collector = fleet.start_collector(extra=("--public-url", "http://127.0.0.1:9"))
    fleet.start_agent("board-auto")
    fleet.start_agent("board-mqtt", extra=("--model-transport", "mqtt"))
    fleet.start_agent("board-http", extra=("--model-transport", "http"))
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["board-auto", "board-mqtt", "board-http"]})
    jobs = {job["device_id"]: job for job in fleet.wait_jobs(batch["batch_id"])}
    assert jobs["board-auto"]["state"] == "done" and jobs["board-mqtt"]["state"] == "done", jobs
    assert jobs["board-http"]["state"] == "failed" and "cannot fetch model" in jobs["board-http"]["reason"]
    points = fleet.wait_results(2)
    assert sorted(pt["device"] for pt in points) == ["board-auto", "board-mqtt"]
    for device in ("board-auto", "board-mqtt"):
        cached = fleet.root / f"agent-{device}" / "data" / "models" / model["sha256"]
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == model["sha256"]
    assert collector.metric("edgebench_model_chunk_bytes_total") == 2 * model["size_bytes"]
    assert collector.metric("edgebench_dead_letters_total") == 0


def test_transfer_resumes_from_the_partial_file_and_is_verified(fleet, slow_model, sine_model):
    collector = fleet.start_collector()
    data = slow_model.read_bytes()
    model = fleet.upload(slow_model)
    assert model["size_bytes"] > 4 * p.MODEL_WINDOW_BYTES  # several windows, many chunks
    seeded = 3 * p.MODEL_CHUNK_BYTES + 1000  # an earlier transfer stopped mid-chunk
    models_dir = fleet.root / "agent-board-r" / "data" / "models"
    models_dir.mkdir(parents=True)
    (models_dir / f"{model['sha256']}.part").write_bytes(data[:seeded])
    fleet.start_agent("board-r", extra=("--model-transport", "mqtt"))
    batch = fleet.submit([model["sha256"]], {"ids": ["board-r"]}, settings={"min_runs": 5, "warmup_runs": 1})
    [job] = fleet.wait_jobs(batch["batch_id"], timeout=120)
    assert job["state"] == "done", job
    sent = collector.metric("edgebench_model_chunk_bytes_total")
    assert sent == model["size_bytes"] - seeded  # resumed: the seeded bytes are not sent again
    cached = models_dir / model["sha256"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == model["sha256"]
    assert not (models_dir / f"{model['sha256']}.part").exists()
    assert [pt["run_id"] for pt in fleet.wait_results(1)] == [job["job_id"]]

    # A partial file that does not match (corrupted on disk): the completed file is refused, as over HTTP.
    small = fleet.upload(sine_model)
    (models_dir / f"{small['sha256']}.part").write_bytes(b"\0" * 100)
    batch = fleet.submit([small["sha256"]], {"ids": ["board-r"]})
    [job] = fleet.wait_jobs(batch["batch_id"])
    assert job["state"] == "failed" and "over MQTT: content has sha256" in job["reason"] and "refused" in job["reason"]
    assert not (models_dir / small["sha256"]).exists() and not (models_dir / f"{small['sha256']}.part").exists()
    batch = fleet.submit([small["sha256"]], {"ids": ["board-r"]})  # the next try starts over and succeeds
    assert [j["state"] for j in fleet.wait_jobs(batch["batch_id"])] == ["done"]


def go_online(fleet, broker, device: str) -> None:
    """What an agent does at connect: a status message saying online (model requests are served to online boards)."""
    mqtt_publish(broker.port, p.topic(device, p.STATUS),
                 json.dumps(p.envelope(device, time.time(), state="online")).encode(), client_id=f"status-{device}")
    wait_for(lambda: any(d["device_id"] == device and d["state"] == "online"
                         for d in fleet.collector.get("/api/v1/devices")["devices"]), 10, f"{device} online")


def test_model_requests_cost_a_bounded_amount(fleet, broker, slow_model):
    """100 model-requests (16.8 KB) used to make the collector publish 105 MB of chunks to a session nobody
    read. Now an offline board gets nothing, and an online one at most its byte budget (8 windows at once)."""
    from edgebench.server.collector import MODEL_BURST_BYTES

    collector = fleet.start_collector(extra=("--model-rate", "0"))  # the burst only: no refill to race with
    model = fleet.upload(slow_model)  # 5.4 MB: 6 windows
    request = json.dumps(p.envelope("flood", time.time(), sha256=model["sha256"], offset=0,
                                    length=p.MODEL_WINDOW_BYTES)).encode()
    from .conftest import publish_many

    publish_many(broker.port, [(p.topic("flood", p.MODEL_REQUEST), request)] * 100, "flood")
    wait_for(lambda: collector.metric("edgebench_model_requests_refused_total") == 100, 30, "refusals (offline)")
    assert collector.metric("edgebench_model_chunk_bytes_total") == 0
    go_online(fleet, broker, "flood")
    publish_many(broker.port, [(p.topic("flood", p.MODEL_REQUEST), request)] * 100, "flood")
    wait_for(lambda: collector.metric("edgebench_model_requests_total") + collector.metric(
        "edgebench_model_requests_refused_total") == 200, 60, "every request handled")
    assert collector.metric("edgebench_model_chunk_bytes_total") == MODEL_BURST_BYTES
    assert collector.metric("edgebench_model_requests_refused_total") == 200 - MODEL_BURST_BYTES // p.MODEL_WINDOW_BYTES


def test_unknown_model_gets_an_error_not_a_hang(fleet, broker):
    import paho.mqtt.client as mqtt

    collector = fleet.start_collector()
    got: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ghost", protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, message: got.append((message.topic, json.loads(message.payload)))
    granted: list = []
    client.on_subscribe = lambda c, u, mid, codes, props: granted.extend(codes)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.subscribe([(p.wildcard(p.MODEL_CHUNK), 1)])
        wait_for(lambda: granted, 10, "SUBACK")
        go_online(fleet, broker, "ghost")
        mqtt_publish(broker.port, p.topic("ghost", p.MODEL_REQUEST),
                     json.dumps(p.envelope("ghost", time.time(), sha256="f" * 64, offset=0, length=4096)).encode())
        wait_for(lambda: got, 10, "an answer")
        mqtt_publish(broker.port, p.topic("ghost", p.MODEL_REQUEST), json.dumps(p.envelope(
            "ghost", time.time(), sha256="f" * 64, offset=0, length=p.MODEL_WINDOW_BYTES + 1)).encode())
        wait_for(lambda: collector.metric("edgebench_dead_letters_total") == 1, 10, "a dead letter")
    finally:
        client.disconnect()
        client.loop_stop()
    [(topic_name, payload)] = got  # on the requesting device's topic only; the invalid request got no answer
    assert topic_name == p.topic("ghost", p.MODEL_CHUNK)
    assert payload["error"] == "no such model in the registry" and payload["sha256"] == "f" * 64
    p.validate(topic_name, json.dumps(payload).encode())

    # An agent asked for a model the collector does not have fails the job promptly, with the collector's reason.
    fleet.start_agent("board-x", extra=("--model-transport", "mqtt"))
    job = p.envelope("board-x", time.time(), job_id="unknown-1", model={"sha256": "e" * 64, "size_bytes": 1000})
    mqtt_publish(broker.port, p.topic("board-x", p.JOBS), json.dumps(job).encode())
    wait_for(lambda: _agent_jobs(fleet, "board-x").get("unknown-1") == "failed", 20, "the job to fail")


def test_fetch_chunks_retries_lost_windows_ignores_strays_and_gives_up(tmp_path):
    """No broker: a source that loses the first answer to each window and sends strays (duplicates, other offsets)."""
    from edgebench.agent.errors import ModelError
    from edgebench.agent.fleet.modelcache import ChunkSource, ModelCache, fetch_chunks

    data = bytes(range(256)) * 40  # 10240 bytes: windows of 4096, chunks of 1000
    sha = hashlib.sha256(data).hexdigest()
    asked: list = []

    def answer(sha256: str, offset: int, length: int) -> None:
        asked.append(offset)
        if asked.count(offset) == 1:
            return  # lost (a broker restart, a dropped connection): asked again after the timeout
        for start in range(offset, min(offset + length, len(data)), 1000):
            chunk = p.envelope("d", 0, sha256=sha256, offset=start, total=len(data),
                               data=base64.b64encode(data[start:min(start + 1000, offset + length)]).decode())
            source.offer(chunk)
            source.offer(chunk)  # a duplicate: ignored
        source.offer(p.envelope("d", 0, sha256="0" * 64, offset=0, total=5, data="AAAA"))  # another model: dropped

    source = ChunkSource(answer, window=4096)
    cache = ModelCache(tmp_path / "cache")
    (tmp_path / "cache" / f"{sha}.part").write_bytes(data[:1500])  # resumed from here
    path = cache.get(sha, len(data), None, chunks=source, chunk_timeout_s=0.2)
    assert path.read_bytes() == data and asked == [1500, 1500, 5596, 5596, 9692, 9692]

    silent = ChunkSource(lambda *args: None, window=4096)
    with pytest.raises(ModelError, match="no answer in 0.05s, 3 times; 0 of 100 bytes kept"):
        fetch_chunks(tmp_path / "x.part", "c" * 64, 100, 10**6, silent, 0.05, retries=2)
    with pytest.raises(ModelError, match="no download URL and no MQTT"):
        cache.get("d" * 64, 100, None)
    with pytest.raises(ModelError, match="no download URL$"):
        cache.get("d" * 64, 100, None, chunks=silent, transport="http")
