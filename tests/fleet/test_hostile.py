"""A board with valid credentials may lie: injected tag text, another board's job ids, poison payloads. Every
attempt is refused (a counted dead letter), and no other board loses anything."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from edgebench.agent.fleet import protocol as p
from edgebench.server import lineprotocol as lp

from .conftest import Fleet, publish_many
from .services import wait_for


def result_event(device: str, run_id: str, **summary_changes) -> bytes:
    summary = {"model": {"name": "m.onnx", "format": "onnx", "sha256": "a" * 64},
               "runtime": {"runtime": "onnxruntime", "used": ["CPUExecutionProvider"], "threads": 1},
               "stats": {"count": 10, "p50_ms": 1.0}, "timing": {"load_ms": 3.0}}
    for path, value in summary_changes.items():
        section, key = path.split("__")
        summary[section][key] = value
    return p.encode(p.EVENTS, p.envelope(device, time.time(), msg_id=p.new_msg_id(), event="result",
                                         job_id=run_id, run_id=run_id, finished_ts=time.time(), summary=summary))


def influx_write(fleet: Fleet, text: str) -> None:
    request = urllib.request.Request(f"{fleet.influxd.url}/write?db={fleet.db}&precision=ns", data=text.encode())
    urllib.request.urlopen(request, timeout=10).read()


def test_line_protocol_carries_hostile_text_faithfully_or_not_at_all(fleet):
    """The one escaper, against the real influxd: every hostile string is one point, stored as written (tags: with
    control characters and backslashes made ``_``), and never a second line or measurement."""
    fleet.start_collector()  # creates the database
    hostile = ["a=b", "ends\\", "new\nline edgebench_gate,rule=x passed=true 1", "sp ace", "co,mma", 'q"uote',
               "tab\there", "ünï", "\\\\", "=", ","]
    lines = [lp.line("probe", {"t": text, "i": str(i)}, {"s": text, "n": i}, 1000 + i) for i, text in
             enumerate(hostile)]
    influx_write(fleet, "\n".join(lines))
    rows = fleet.influxd.rows(fleet.db, "SELECT * FROM probe")
    assert len(rows) == len(hostile)
    by_index = {int(row["i"]): row for row in rows}
    for i, text in enumerate(hostile):
        assert by_index[i]["s"] == text  # string fields: exactly what was written
        assert by_index[i]["t"] == lp.UNSAFE_IN_TAGS.sub("_", text)
    measurements = fleet.influxd.rows(fleet.db, "SHOW MEASUREMENTS")
    assert [m["name"] for m in measurements] == ["probe"]


def test_injected_tag_text_is_refused_and_others_lose_nothing(fleet, broker):
    collector = fleet.start_collector()
    events = p.topic("liar", p.EVENTS)
    forged = [
        result_event("liar", "inj-1", model__name="m\nedgebench_gate,rule=forged passed=true 1"),
        result_event("liar", "inj-2", runtime__used=["CPU\\"]),
        result_event("liar", "inj-3", model__format="onnx\r\nx"),
        result_event("liar", "inj-4", runtime__threads="4\nx"),
        result_event("liar", "inj-5", model__name={"nested": "object"}),
    ]
    honest = result_event("honest", "ok-1")
    typed = result_event("liar", "typed-1", timing__load_ms="fast")  # a string for a number: dropped field only
    assert publish_many(broker.port, [(events, data) for data in forged] + [(events, typed)], "liar") == [0] * 6
    assert publish_many(broker.port, [(p.topic("honest", p.EVENTS), honest)], "honest") == [0]
    wait_for(lambda: collector.metric("edgebench_messages_stored_total") >= 7, 60, "every message handled")
    assert collector.metric("edgebench_dead_letters_total") == len(forged)
    rows = fleet.results_in_influx()
    assert sorted(row["run_id"] for row in rows) == ["ok-1", "typed-1"]
    assert next(row for row in rows if row["run_id"] == "ok-1")["load_ms"] == 3.0
    assert next(row for row in rows if row["run_id"] == "typed-1")["load_ms"] is None
    assert not fleet.influxd.rows(fleet.db, "SELECT * FROM edgebench_gate")
    reasons = [d["reason"] for d in collector.get("/api/v1/dead-letters")["dead_letters"]]
    assert len(reasons) == len(forged) and all("summary" in r or "field" in r for r in reasons), reasons


def placement_event(device: str, run_id: str, nan: bool = False, **changes) -> bytes:
    """A result whose summary says where its nodes ran (60 of 64 on XNNPACK, as EfficientNet-Lite0 int8's) and its
    op types, with ``changes`` made to the placement (``coverage=7``) or to its ops (``ops__by_type=[...]``)."""
    placement = {"source": "litert-graph", "first_choice": "xnnpack", "nodes": 64, "coverage": 0.9375, "note": None,
                 "backends": [{"name": "xnnpack", "nodes": 60, "partitions": 2}, {"name": "cpu", "nodes": 4,
                                                                                  "partitions": 3}],
                 "fallback_ops": [{"op": "QUANTIZE", "backend": "cpu", "count": 2}], "fallback_types": 1}
    ops = {"source": "tflite-profiler", "unavailable": None, "runs": 10, "overhead": 1.2, "accounted": 0.95,
           "by_type": [{"op": "CONV_2D", "backend": "xnnpack", "count": 40, "total_us": 900.0, "share": 0.9}],
           "types": 1}
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (ops if section == "ops" else placement)[name] = value
    summary = {"model": {"name": "m.tflite", "format": "tflite", "sha256": "a" * 64},
               "runtime": {"runtime": "litert", "used": ["xnnpack"], "requested": ["xnnpack"], "threads": 1},
               "stats": {"count": 10, "p50_ms": 1.0}, "placement": placement, "ops": ops}
    payload = p.envelope(device, time.time(), msg_id=p.new_msg_id(), event="result", job_id=run_id, run_id=run_id,
                         finished_ts=time.time(), summary=summary)
    if nan:  # what json.dumps would not write: a board's own encoder might
        return json.dumps(payload).replace('"coverage": 0.9375', '"coverage": NaN').encode()
    return p.encode(p.EVENTS, payload)


def test_a_board_that_lies_about_placement_is_refused_and_counted(fleet, broker):
    """Release gates judge the coverage a result carries, and its rows become points: a coverage of 7, one its own
    backends deny, NaN, negative counts, rows beyond the bounds, tag injection in an op name are each a counted dead
    letter; an honest board's result and its placement and op-type points land."""
    collector = fleet.start_collector()
    events = p.topic("liar", p.EVENTS)
    forged = [
        placement_event("liar", "cov-7", coverage=7),
        placement_event("liar", "cov-claimed", coverage=1.0),  # its backends say 60 of 64
        placement_event("liar", "cov-nan", nan=True),
        placement_event("liar", "neg", backends=[{"name": "xnnpack", "nodes": -60, "partitions": 2}]),
        placement_event("liar", "rows", fallback_ops=[{"op": f"OP{i}", "backend": "cpu", "count": 1}
                                                      for i in range(21)]),
        placement_event("liar", "inject", ops__by_type=[{"op": "CONV\nedgebench_gate,rule=x passed=true 1",
                                                         "backend": "xnnpack", "count": 1, "total_us": 1.0,
                                                         "share": 0.5}]),
        placement_event("liar", "share", ops__by_type=[{"op": "CONV_2D", "backend": "xnnpack", "count": 1,
                                                        "total_us": 1.0, "share": 7.0}]),
    ]
    honest = placement_event("honest", "ok-placed")
    assert publish_many(broker.port, [(events, data) for data in forged], "liar") == [0] * len(forged)
    assert publish_many(broker.port, [(p.topic("honest", p.EVENTS), honest)], "honest") == [0]
    wait_for(lambda: collector.metric("edgebench_messages_stored_total") >= len(forged) + 1, 60,
             "every message handled")
    assert collector.metric("edgebench_dead_letters_total") == len(forged)
    reasons = [d["reason"] for d in collector.get("/api/v1/dead-letters")["dead_letters"]]
    assert len(reasons) == len(forged) and all("summary.placement" in r or "summary.ops" in r or "not a valid number"
                                               in r for r in reasons), reasons
    assert [row["run_id"] for row in fleet.results_in_influx()] == ["ok-placed"]
    assert fleet.results_in_influx()[0]["delegate_coverage"] == 0.9375
    placed = fleet.influxd.rows(fleet.db, 'SELECT "nodes", "device" FROM edgebench_placement GROUP BY "backend"')
    assert sorted((row["nodes"], row["device"]) for row in placed) == [(4, "honest"), (60, "honest")]
    typed = fleet.influxd.rows(fleet.db, 'SELECT "share", "device" FROM edgebench_op_type GROUP BY "op"')
    assert [(row["share"], row["device"]) for row in typed] == [(0.9, "honest")]
    assert not fleet.influxd.rows(fleet.db, "SELECT * FROM edgebench_gate")


def test_a_point_influxdb_refuses_is_a_counted_dead_letter(fleet, broker):
    """InfluxDB refuses a point (here: its field already has another type in the shard): that point becomes a
    dead letter, counted; the batch's other points are written and the messages acknowledged."""
    collector = fleet.start_collector()
    influx_write(fleet, f'edgebench_result,device=typo first_inference_ms="text" {int(time.time() * 1e9)}')
    messages = [(p.topic("typo", p.EVENTS), result_event("typo", "bad-1", timing__first_inference_ms=2.0)),
                (p.topic("fine", p.EVENTS), result_event("fine", "good-1"))]
    assert publish_many(broker.port, messages, "typo") == [0, 0]
    wait_for(lambda: collector.metric("edgebench_messages_stored_total") >= 2, 60, "both messages handled")
    assert collector.metric("edgebench_dead_letters_total") == 1
    assert [d["topic"] for d in collector.get("/api/v1/dead-letters")["dead_letters"]] == ["influx"]
    assert sorted(row["run_id"] for row in fleet.results_in_influx() if row["run_id"]) == ["good-1"]
    assert collector.health()["held"] == 0


def test_a_board_cannot_answer_for_another_boards_job(fleet, broker, sine_model):
    collector = fleet.start_collector()
    fleet.start_agent("victim")
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["victim"]})
    job_id = batch["jobs"][0]["job_id"]
    forged = result_event("thief", job_id, stats__p50_ms=999.0)
    assert publish_many(broker.port, [(p.topic("thief", p.EVENTS), forged)], "thief") == [0]
    jobs = fleet.wait_jobs(batch["batch_id"])
    assert jobs[0]["state"] == "done"
    wait_for(lambda: collector.metric("edgebench_dead_letters_total") >= 1, 30, "the forged result refused")
    results = collector.get(f"/api/v1/results?batch={batch['batch_id']}&latest=1")["results"]
    assert [(r["device_id"], r["summary"]["stats"]["p50_ms"] < 999) for r in results] == [("victim", True)]
    reasons = [d["reason"] for d in collector.get("/api/v1/dead-letters")["dead_letters"]]
    assert any("another device" in reason for reason in reasons)
    others = batch["jobs"][0]["job_id"].rsplit("-", 1)[0]
    assert not job_id.endswith("-0000") and others  # the random part makes a job id unguessable


def test_poison_payloads_do_not_stall_ingestion(fleet, broker):
    """Deeply nested JSON (past every parser's limit), invalid UTF-8 and oversize payloads from one board: each is
    a dead letter, acknowledged at once; dead letters are stored at a bounded rate per board; the honest board's
    results land and /healthz does not report a stall."""
    collector = fleet.start_collector(extra=("--receive-maximum", "20"))
    nested = b'{"v":1,"device":"poison","x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    poison = [nested, b"\xff\xfe not utf-8", b"{" + b" " * (p.MAX_PAYLOAD[p.EVENTS] + 1) + b"}"] * 40
    topic = p.topic("poison", p.EVENTS)
    assert publish_many(broker.port, [(topic, data) for data in poison], "poison") == [0] * len(poison)
    honest = [(p.topic("honest", p.EVENTS), result_event("honest", f"h-{i}")) for i in range(5)]
    assert publish_many(broker.port, honest, "honest") == [0] * 5
    wait_for(lambda: len(fleet.results_in_influx()) == 5, 60, "the honest board's results")
    wait_for(lambda: collector.metric("edgebench_dead_letters_total") == len(poison), 60, "every dead letter")
    stored = len(collector.get("/api/v1/dead-letters?limit=1000")["dead_letters"])
    assert stored < len(poison) and collector.metric("edgebench_dead_letters_suppressed_total") == len(poison) - stored
    health = collector.health()
    assert health["held"] == 0 and health["stalled"] is False


def test_a_nested_job_does_not_kill_the_agent(fleet, broker, sine_model):
    """A job nested past the JSON parser's limit used to end paho's network thread: the board looked online and
    never took a job again. Now it is logged and dropped, and the next job runs."""
    fleet.start_collector()
    agent = fleet.start_agent("sturdy")
    nested = b'{"v":1,"device":"sturdy","job_id":"x","model":' + b"[" * 5000 + b"]" * 5000 + b"}"
    garbage = b"\xff" * 100
    codes = publish_many(broker.port, [(p.topic("sturdy", p.JOBS), nested), (p.topic("sturdy", p.JOBS), garbage),
                                       (p.topic("sturdy", p.ACKS), nested)], "attacker")
    assert codes == [0, 0, 0]
    model = fleet.upload(sine_model)
    batch = fleet.submit([model["sha256"]], {"ids": ["sturdy"]})
    assert fleet.wait_jobs(batch["batch_id"])[0]["state"] == "done"
    assert agent.alive()
    assert "nested too deeply" in agent.log_text()


def dead_letter_reasons(collector) -> list[str]:
    query = urllib.parse.urlencode({"limit": 1000})
    return [d["reason"] for d in json.loads(urllib.request.urlopen(f"{collector.url}/api/v1/dead-letters?{query}")
                                            .read())["dead_letters"]]
