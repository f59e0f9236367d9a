"""The protocol module, the outbox, the model cache and line protocol: fast checks without services."""

from __future__ import annotations

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgebench.agent.errors import ModelError
from edgebench.agent.fleet import protocol as p
from edgebench.agent.fleet.modelcache import ModelCache
from edgebench.agent.fleet.outbox import Outbox
from edgebench.agent.fleet.store import AgentStore
from edgebench.server import influx, schema
from edgebench.server import lineprotocol as lp

SHA = "a" * 64


def result_payload(device: str = "dev1", **stats) -> dict:
    summary = {"stats": {"count": 10, "p50_ms": 1.5, "p90_ms": 2.0, "p99_ms": 3.0, **stats},
               "model": {"name": "m.tflite", "sha256": SHA}, "runtime": {"runtime": "litert", "used": "xnnpack"}}
    return p.envelope(device, 1.7e9, event="result", job_id="j1", run_id="j1", summary=summary)


def encoded(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def test_topic_tree_round_trip():
    assert p.topic("dev1", p.STATUS) == "edgebench/v1/devices/dev1/status"
    assert p.parse_topic("edgebench/v1/devices/dev1/events") == ("dev1", "events")
    assert p.wildcard(p.TELEMETRY) == "edgebench/v1/devices/+/telemetry"
    for bad in ("edgebench/v2/devices/d/status", "edgebench/v1/devices/d/other", "edgebench/v1/devices/d/status/x",
                "edgebench/v1/devices/../status"):
        with pytest.raises(p.ProtocolError):
            p.parse_topic(bad)
    for bad_id in ("a/b", "+", "#", "", "x" * 65, "$SYS", ".."):
        with pytest.raises(p.ProtocolError):
            p.topic(bad_id, p.STATUS)


def test_valid_result_and_telemetry():
    msg = p.validate(p.topic("dev1", p.EVENTS), encoded(result_payload()))
    assert (msg.device, msg.kind) == ("dev1", "events")
    telemetry = p.envelope("dev1", 1.7e9, samples=[{"ts": 1.7e9, "readings": {"load1": 0.5, "temp_max_c": 41.0}}])
    assert p.validate(p.topic("dev1", p.TELEMETRY), encoded(telemetry)).payload["samples"]


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.update(device="dev2"), "does not match topic device"),
    (lambda d: d.update(v=2), "unsupported protocol version"),
    (lambda d: d["summary"]["stats"].update(p50_ms=-1.0), "below 0"),
    (lambda d: d["summary"]["stats"].update(count=0), "at least one measured run"),
    (lambda d: d["summary"]["stats"].update(p90_ms="fast"), "wrong type"),
    (lambda d: d.pop("run_id"), "missing field 'run_id'"),
    (lambda d: d.update(event="exploded"), "event must be one of"),
    (lambda d: d.update(job_id="../../etc"), "invalid value"),
    (lambda d: d.update(v=True), "unsupported protocol version"),  # True == 1 in Python: not a version
    (lambda d: d.update(v=1.0), "unsupported protocol version"),
    (lambda d: d.update(finished_ts=1e20), "above"),  # InfluxDB would refuse it; latest=1 would keep it forever
    (lambda d: d.update(ts=1e20), "above"),
    (lambda d: d.update(msg_id="no spaces allowed"), "invalid value"),
    (lambda d: d["summary"]["model"].update(name="m\nedgebench_gate,rule=x passed=true 1"), "invalid value"),
    (lambda d: d["summary"]["model"].update(format="tflite\\"), "invalid value"),
    (lambda d: d["summary"]["runtime"].update(used=["CPU", "x\ty"]), "runtime.used"),
    (lambda d: d["summary"]["runtime"].update(threads="4"), "wrong type"),
])
def test_invalid_results_are_refused_with_a_reason(mutate, reason):
    payload = result_payload()
    mutate(payload)
    with pytest.raises(p.ProtocolError, match=reason):
        p.validate(p.topic("dev1", p.EVENTS), encoded(payload))


def test_nan_oversize_and_garbage_are_refused():
    data = encoded(result_payload()).replace(b'"p50_ms": 1.5', b'"p50_ms": NaN')
    with pytest.raises(p.ProtocolError, match="not a valid number"):
        p.validate(p.topic("dev1", p.EVENTS), data)
    big = result_payload()
    big["summary"]["padding"] = "x" * (p.MAX_PAYLOAD[p.EVENTS] + 1)
    with pytest.raises(p.ProtocolError, match="limit"):
        p.validate(p.topic("dev1", p.EVENTS), encoded(big))
    with pytest.raises(p.ProtocolError, match="limit"):
        p.encode(p.EVENTS, big)  # the sender refuses it too
    with pytest.raises(p.ProtocolError, match="not JSON"):
        p.validate(p.topic("dev1", p.EVENTS), b"\xff\xfe not json")
    with pytest.raises(p.ProtocolError, match="not a JSON object"):
        p.validate(p.topic("dev1", p.EVENTS), b"[1, 2]")


def test_nesting_past_the_parser_is_a_protocol_error_on_both_parsers():
    import orjson

    nested = b'{"v":1,"device":"dev1","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    for loads in (None, orjson.loads):  # the agent's json, the collector's orjson (falling back to json)
        with pytest.raises(p.ProtocolError, match="nested too deeply|not JSON"):
            p.validate(p.topic("dev1", p.EVENTS), nested, loads)
    assert p.msg_id_of(nested) is None


def test_acks_are_checked():
    topic = p.topic("dev1", p.ACKS)
    good = p.envelope("dev1", 1.7e9, ids=[p.new_msg_id()], refused=[{"id": p.new_msg_id(), "reason": "bad"}])
    assert p.validate(topic, encoded(good)).kind == p.ACKS
    for bad, reason in (({"ids": ["x"]}, "message ids"), ({"ids": [p.new_msg_id()] * (p.MAX_ACK_IDS + 1)}, "at most"),
                        ({"ids": [], "refused": [{"id": p.new_msg_id()}]}, "missing field 'reason'")):
        with pytest.raises(p.ProtocolError, match=reason):
            p.validate(topic, encoded(p.envelope("dev1", 1.7e9, **bad)))


def job(**fields) -> dict:
    return p.envelope("dev1", 1.7e9, job_id="b1-0001", model={"sha256": SHA, "size_bytes": 10, "name": "m.tflite",
                                                              "url": "http://127.0.0.1:1/x"}, **fields)


@pytest.mark.parametrize("fields, reason", [
    ({"runtime": "evil.module:Runtime"}, "plugins are not allowed"),
    ({"delegates": ["/tmp/libevil.so"]}, "not allowed in a job"),
    ({"input": ["x=/etc/passwd"]}, "may only use zeros"),
    ({"input": ["x=$(reboot)"]}, "may only use zeros"),
    ({"shape": ["x=1x3;rm -rf /"]}, "NAME=DIMS"),
    ({"settings": {"command": "sh"}}, "not a bench setting"),
    ({"settings": {"min_runs": -5}}, "below"),
    ({"timeout_s": float("inf")}, "not finite"),
    ({"group": ["b1-0002", "b1-0003"]}, "this job's among them"),
    ({"group": ["b1-0001", "../etc"]}, "group must list"),
    ({"group": [f"b1-{n:04d}" for n in range(1, 10)]}, "at most 8"),
    ({"group": "b1-0001"}, "wrong type"),
])
def test_jobs_are_declarative_data(fields, reason):
    with pytest.raises(p.ProtocolError, match=reason):
        p.check_job(job(**fields))


def test_a_good_job_passes():
    p.check_job(job(runtime="litert", delegates=["xnnpack"], threads=2, input=["x=random", "sr=16000"],
                    shape=["x=1x3x224x224"], settings={"min_runs": 10, "max_duration_s": 5.0}, timeout_s=60,
                    repeats=5, group=["b1-0001", "b1-0002"]))


def test_one_models_jobs_with_repeats_on_one_board_are_grouped_by_the_collector():
    """The collector groups the jobs of one model on one board (with repeats) for interleaving: per board, per
    model, at most MAX_JOB_GROUP; a job without repeats, or alone, gets no group."""
    from edgebench.server.api import interleave_groups

    def make(n: int, device: str, sha: str, repeats: int) -> p.Job:
        return p.Job(job_id=f"b1-{n:04d}", device=device, repeats=repeats,
                     model=p.JobModel(sha256=sha, size_bytes=10))

    other = "1" * 64
    jobs = [make(n, "a", SHA, 5) for n in range(10)] + [make(10, "b", SHA, 5), make(11, "b", SHA, 5),
                                                        make(12, "b", other, 5), make(13, "c", SHA, 1),
                                                        make(14, "c", SHA, 1)]
    interleave_groups(jobs)
    groups = [job.group for job in jobs]
    assert groups[:8] == [[f"b1-{n:04d}" for n in range(8)]] * 8
    assert groups[8:10] == [["b1-0008", "b1-0009"]] * 2
    assert groups[10:12] == [["b1-0010", "b1-0011"]] * 2
    assert groups[12:] == [[], [], []]
    for job in jobs:
        p.check_job(job.to_payload(1.7e9))


def test_labels():
    assert p.parse_labels("class=rpi5, site=lab2") == {"class": "rpi5", "site": "lab2"}
    for bad in ("class", "Class=x", "class=a b", ",".join(f"k{i}=v" for i in range(17))):
        with pytest.raises(p.ProtocolError):
            p.parse_labels(bad)


def test_summarize_report_drops_samples():
    report = {"schema": "edgebench.bench/1", "model": {"path": "/secret/path", "name": "m"}, "stats": {
        "count": 3, "p50_ms": 1.0, "percentile_ci_ms": {"p50": [0.9, 1.1]}}, "samples": {"latency_ns": [1, 2, 3]},
        "memory": {"rss_samples": [[0, 1]], "peak_steady_bytes": 5}, "runtime": {"runtime": "litert"}}
    summary = p.summarize_report(report)
    assert "samples" not in summary and "rss_samples" not in summary["memory"] and "path" not in summary["model"]
    assert summary["stats"] == {"count": 3, "p50_ms": 1.0}
    assert "repeats" not in summary and "interleave" not in summary


def repeats_report(repeats: int = 4) -> dict:
    """An edgebench.bench/2 report's parts a summary keeps: its interval from real per-repeat samples."""
    import numpy as np

    from edgebench.agent.engine import stats

    rng = np.random.default_rng(1)
    per_repeat = [[int(v) for v in rng.lognormal(np.log(2e6), 0.05, 60)] for _ in range(repeats)]
    summary = stats.summarize([x for r in per_repeat for x in r])
    summary["interval"] = stats.interval_summary(per_repeat)
    return {"schema": "edgebench.bench/2", "model": {"name": "m.tflite", "sha256": SHA},
            "runtime": {"runtime": "litert", "used": ["xnnpack"], "requested": ["xnnpack"], "threads": 2},
            "stats": summary, "samples": {"latency_ns": [x for r in per_repeat for x in r]},
            "repeats": [{"index": i, "stats": stats.summarize(r), "samples": {"latency_ns": r}}
                        for i, r in enumerate(per_repeat)], "interleave": {"group": "ab-7", "slot": 3}}


def test_summarize_report_keeps_the_interval_and_the_repeats_values():
    """The result event carries what release gates compare: stats.interval with each repeat's values, the number
    of repeats, the interleaved run; not the repeats' samples."""
    report = repeats_report()
    summary = p.summarize_report(report)
    assert summary["stats"]["interval"] == report["stats"]["interval"]
    assert len(summary["stats"]["interval"]["p90_ms"]["per_unit"]) == 4 and summary["repeats"] == 4
    assert summary["interleave"] == {"group": "ab-7", "slot": 3} and "percentile_ci_ms" not in summary["stats"]
    payload = p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="j1", summary=summary)
    assert p.validate(p.topic("dev1", p.EVENTS), encoded(payload)).payload["summary"]["stats"]["interval"]


def _interval_payload(mutate) -> dict:
    summary = p.summarize_report(repeats_report())
    mutate(summary)
    return p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="j1", summary=summary)


@pytest.mark.parametrize("mutate, reason", [
    (lambda s: s["stats"]["interval"]["p90_ms"]["per_unit"].__setitem__(0, -1.0), "finite positive"),
    (lambda s: s["stats"]["interval"]["p90_ms"]["per_unit"].__setitem__(0, 0), "finite positive"),
    (lambda s: s["stats"]["interval"]["p90_ms"]["per_unit"].__setitem__(0, True), "finite positive"),
    (lambda s: s["stats"]["interval"]["p90_ms"]["per_unit"].__setitem__(0, "2.0"), "finite positive"),
    (lambda s: s["stats"]["interval"]["p90_ms"]["per_unit"].append(2.0), "holds 5 values for 4 units"),
    (lambda s: s["stats"]["interval"].update(units=p.MAX_RESULT_UNITS + 1), "above"),
    (lambda s: s["stats"]["interval"].update(method="vibes"), "method must be one of"),
    (lambda s: s["stats"]["interval"]["p50_ms"].update(ci=[2.0, 1.0]), "low <= high"),
    (lambda s: s["stats"]["interval"]["p50_ms"].update(ci=[0.0, 1.0]), "positive"),
    (lambda s: s["stats"]["interval"]["p99_ms"].update(estimate=-1), "below 0"),
    (lambda s: s["stats"]["interval"].update(p90_ms=[1, 2]), "object or null"),
    (lambda s: s["stats"].update(interval="wide"), "wrong type"),
    (lambda s: s.update(repeats=0), "below 1"),
    (lambda s: s.update(repeats=2.5), "integer"),
    (lambda s: s.update(interleave={"group": "g\nx", "slot": 1}), "invalid value"),
    (lambda s: s.update(interleave={"group": "g", "slot": -1}), "interleave.slot"),
    # a board's run history widens release gates' intervals: a lying board must not narrow or break them
    (lambda s: s["stats"]["interval"].update(history=[1]), "history must be an object"),
    (lambda s: s["stats"]["interval"].update(history={"runs": 0, "between_run_sd": {}}), "history.runs"),
    (lambda s: s["stats"]["interval"].update(history={"runs": True, "between_run_sd": {}}), "history.runs"),
    (lambda s: s["stats"]["interval"].update(history={"runs": 3, "between_run_sd": {"p90_ms": -0.1}}),
     "between_run_sd"),
    (lambda s: s["stats"]["interval"].update(history={"runs": 3, "between_run_sd": {"p90_ms": "1"}}),
     "between_run_sd"),
    (lambda s: s["stats"]["interval"].update(history={"runs": 3, "between_run_sd": {"load": 0.1}}),
     "between_run_sd"),
])
def test_a_results_interval_and_repeats_are_checked(mutate, reason):
    with pytest.raises(p.ProtocolError, match=reason):
        p.validate(p.topic("dev1", p.EVENTS), encoded(_interval_payload(mutate)))


# ---------------------------------------------------------------- placement and per-op profile

def sections_report(fallback_types: int = 3, op_types: int = 3) -> dict:
    """A report with ``placement`` and ``ops`` made by the engine's own code (agent/engine/ops.py): a model whose
    first choice (XNNPACK) took all nodes but ``fallback_types`` op types' (one node each, on the CPU kernels), and
    ``op_types`` profiled op types."""
    from edgebench.agent.engine import ops

    nodes = [{"name": f"conv{i}", "op": "CONV_2D", "backend": "xnnpack", "partition": 0} for i in range(10)]
    nodes += [{"name": f"odd{i}", "op": f"CUSTOM_{i}", "backend": "cpu", "partition": i + 1}
              for i in range(fallback_types)]
    timed = [{"name": f"n{i}", "op": f"OP_{i}", "backend": "xnnpack", "duration_ns": [1000 * (i + 1)] * 2}
             for i in range(op_types)]
    report = repeats_report()
    report["placement"] = ops.summarize_placement({"source": "litert-graph", "first_choice": "xnnpack",
                                                   "nodes": nodes})
    report["ops"] = ops.summarize_ops([{"source": "tflite-profiler", "unavailable": None,
                                        "latency_ns": [2_000_000, 2_100_000], "nodes": timed}], 1.9)
    return report


def _sections_payload(mutate=lambda s: None, report: dict = None) -> dict:
    summary = p.summarize_report(report or sections_report())
    mutate(summary)
    return p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="j1", summary=summary)


def test_a_result_carries_placement_and_op_types_bounded():
    """Placement and the per-type summary travel in the result, without per-node rows; a model with hundreds of op
    types off the first choice or profiled still fits: the largest 20 rows are carried, and how many there were."""
    report = sections_report(fallback_types=300, op_types=500)
    summary = p.summarize_report(report)
    placement, profile = summary["placement"], summary["ops"]
    assert "per_node" not in placement and "nodes" not in profile and "top" not in profile
    assert placement["coverage"] == report["placement"]["coverage"] == 10 / 310
    assert placement["fallback_ops"] == report["placement"]["fallback_ops"][:p.MAX_RESULT_OP_ROWS]
    assert placement["fallback_types"] == 300 and profile["types"] == 500
    assert profile["by_type"] == report["ops"]["by_type"][:p.MAX_RESULT_OP_ROWS]
    assert profile["by_type"][0]["op"] == "OP_499"  # the slowest first
    assert profile["overhead"] == report["ops"]["overhead"] and profile["accounted"] == report["ops"]["accounted"]
    data = encoded(_sections_payload(report=report))
    assert len(data) < p.MAX_PAYLOAD[p.EVENTS] // 4
    assert p.validate(p.topic("dev1", p.EVENTS), data).payload["summary"]["placement"]["backends"]


def test_a_result_from_a_runtime_without_a_profiler_or_placement_is_accepted():
    """ops.unavailable (LiteRT from Python), placement null (a runtime that cannot say), and a result of an agent
    older than both sections: all accepted."""
    report = sections_report()
    report["ops"] = {"source": None, "unavailable": "no per-op profiler", "runs": 0}
    report["placement"] = None
    summary = p.summarize_report(report)
    assert "placement" not in summary and summary["ops"] == report["ops"]
    p.validate(p.topic("dev1", p.EVENTS), encoded(_sections_payload(report=report)))
    p.validate(p.topic("dev1", p.EVENTS), encoded(result_payload()))


def _set_row(section: str, rows: str, index: int, **values):
    return lambda s: s[section][rows][index].update(values)


@pytest.mark.parametrize("mutate, reason", [
    # a hostile board with valid credentials: the coverage gates judge, and rows that become tags and points
    (lambda s: s["placement"].update(coverage=7), "summary.placement: field 'coverage' = 7 is above 1"),
    (lambda s: s["placement"].update(coverage=1.0), "coverage 1.0 is not the first choice's 10 of 13 nodes"),
    (lambda s: s["placement"].update(coverage="all"), "wrong type"),
    (lambda s: s["placement"].update(nodes=-1), "below 0"),
    (lambda s: s["placement"].update(nodes=1.5), "must be an integer"),
    (lambda s: s["placement"].update(nodes=p.MAX_MODEL_NODES + 1), "above"),
    (lambda s: s["placement"].update(first_choice="x\nnpack"), "invalid value"),
    (lambda s: s["placement"].pop("first_choice"), "missing field 'first_choice'"),
    (_set_row("placement", "backends", 0, nodes=14), "field 'nodes' = 14 is above 13"),
    (_set_row("placement", "backends", 0, nodes=11), "backends hold more nodes than the model's 13"),
    (_set_row("placement", "backends", 0, nodes=-3), "below 0"),
    (_set_row("placement", "backends", 1, partitions=4), "above 3"),
    (_set_row("placement", "backends", 1, name="xnnpack"), "one backend twice"),
    (_set_row("placement", "backends", 1, name="cpu\n"), "invalid value"),
    (lambda s: s["placement"].update(backends=[{"name": f"b{i}", "nodes": 0, "partitions": 0} for i in range(17)]),
     "backends holds 17 rows; at most 16"),
    (lambda s: s["placement"].update(backends="cpu"), "wrong type"),
    (lambda s: s["placement"].update(fallback_ops=[{"op": f"OP{i}", "backend": "cpu", "count": 1}
                                                   for i in range(21)]), "fallback_ops holds 21 rows; at most 20"),
    (_set_row("placement", "fallback_ops", 0, count=-1), "below 1"),
    (_set_row("placement", "fallback_ops", 0, count=True), "boolean"),
    (_set_row("placement", "fallback_ops", 0, count=3), "count more nodes than the 3 off the first choice"),
    (_set_row("placement", "fallback_ops", 0, backend="xnnpack"), "fallback_ops name the first choice"),
    (_set_row("placement", "fallback_ops", 0, op="RESIZE\tX"), "invalid value"),
    (lambda s: s["placement"]["fallback_ops"].append(7), "rows must be objects"),
    (lambda s: s["placement"].update(fallback_types=1), "below 3"),
    (lambda s: s.update(placement=[1]), "wrong type"),
    (lambda s: s["ops"].update(overhead=-2.0), "summary.ops: field 'overhead' = -2.0 is below 0"),
    (lambda s: s["ops"].update(runs=-1), "below 0"),
    (lambda s: s["ops"].update(runs=2**63), "above"),
    (lambda s: s["ops"].update(accounted="most"), "wrong type"),
    (lambda s: s["ops"].update(by_type=[{"op": f"OP{i}", "backend": "cpu", "count": 1, "total_us": 1.0,
                                         "share": 0.0} for i in range(21)]), "by_type holds 21 rows; at most 20"),
    (lambda s: s["ops"].update(by_type=[{"op": f"OP{i}", "backend": "cpu", "count": 1, "total_us": 1.0,
                                         "share": 0.0} for i in range(10**6)]), "events payload is"),  # 10^6 types
    (_set_row("ops", "by_type", 0, share=1.5), "above 1"),
    (_set_row("ops", "by_type", 0, share=0.9), "shares add up to more than 1"),
    (_set_row("ops", "by_type", 0, total_us=-5), "below 0"),
    (_set_row("ops", "by_type", 0, count=0), "below 1"),
    (_set_row("ops", "by_type", 0, op="OP_0"), "one op type on one backend twice"),
    (_set_row("ops", "by_type", 0, backend="edgebench_gate,rule=x passed=true 1\n"), "invalid value"),
    (lambda s: s["ops"].update(unavailable="none here"), "by_type rows with no profiler"),
    (lambda s: s["ops"].update(types=2), "below 3"),
    (lambda s: s.update(ops="fast"), "wrong type"),
])
def test_a_results_placement_and_op_types_are_checked(mutate, reason):
    """A lying or broken board's placement and op types are refused with a reason (the collector then stores a
    dead letter and counts it, as for any bad result: tests/fleet/test_hostile.py)."""
    import re

    with pytest.raises(p.ProtocolError, match=re.escape(reason)):
        p.validate(p.topic("dev1", p.EVENTS), encoded(_sections_payload(mutate)))


def test_nan_in_placement_is_refused():
    data = encoded(_sections_payload()).replace(b'"coverage":', b'"coverage":NaN,"was":')
    with pytest.raises(p.ProtocolError, match="not a valid number"):
        p.validate(p.topic("dev1", p.EVENTS), data)


def test_a_job_may_ask_for_the_per_op_profile_within_bounds():
    from edgebench.agent.fleet.jobrunner import build_request

    job = p.Job(job_id="j1", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10),
                settings={"min_runs": 5, "profile_runs": 7})
    payload = job.to_payload(1.7e9)
    assert p.Job.from_payload(payload).settings["profile_runs"] == 7
    request = build_request(p.Job.from_payload(payload), "/cache/m.tflite")
    assert request.settings.profile_runs == 7 and request.settings.min_runs == 5
    for value, reason in ((-1, "below 0"), (100_001, "above"), ("20", "wrong type")):
        payload["settings"]["profile_runs"] = value
        with pytest.raises(p.ProtocolError, match=reason):
            p.check_job(payload)


# ---------------------------------------------------------------- outbox

def test_outbox_drops_telemetry_oldest_first_never_results(tmp_path):
    store = AgentStore(tmp_path / "a.sqlite3", max_telemetry=3)
    store.enqueue("t/result", b"r", "result", "result-id")
    for n in range(6):
        store.enqueue("t/telemetry", str(n).encode(), "telemetry", f"telemetry-{n}")
    rows = store.due(set(), 100, now=0.0)
    assert [payload for _, _, payload in rows] == [b"r", b"3", b"4", b"5"]
    assert store.counter("telemetry_dropped") == 3
    assert store.acknowledged(["result-id", "unknown-id"]) == 1
    assert store.depth() == 3


def test_job_dedup_and_final_state_with_result(tmp_path):
    store = AgentStore(tmp_path / "a.sqlite3")
    assert store.add_job("j1", "{}") and not store.add_job("j1", "{}")
    assert store.next_job()[0] == "j1"
    store.start_job("j1")
    assert store.next_job() == ("j1", "{}", 1)  # a job left 'running' (agent killed) runs again
    store.finish_job("j1", "done", "t/events", b"result", "result", "msg-00000001")
    assert store.next_job() is None and store.job_state("j1") == "done" and store.depth() == 1
    store.close()
    reopened = AgentStore(tmp_path / "a.sqlite3")  # survives a restart
    assert reopened.depth() == 1 and not reopened.add_job("j1", "{}")


class Reason:
    def __init__(self, value: int):
        self.value = value


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outbox_with(tmp_path, **kwargs):
    """An Outbox on a real store whose publish records (topic, payload) and returns paho-like mids."""
    sent: list = []
    clock = Clock()

    def publish(topic_name, payload):
        sent.append(payload)
        return len(sent)

    store = AgentStore(tmp_path / "a.sqlite3")
    return Outbox(store, publish, clock=clock, wall=clock, **kwargs), store, sent, clock


def test_outbox_deletes_a_row_only_on_the_collectors_ack(tmp_path):
    outbox, store, sent, clock = outbox_with(tmp_path, ack_wait_s=30)
    store.enqueue("t/events", b"result", "result", "msg-aaaaaaaa")
    outbox.flush(connected=True)
    assert sent == [b"result"]
    outbox.on_puback(1, Reason(0))  # the broker took it: that alone deletes nothing
    outbox.flush(connected=True)
    assert store.depth() == 1 and store.outstanding() == 1 and sent == [b"result"]
    clock.now += 31  # no ack from the collector in time: published again, then waits twice as long
    outbox.flush(connected=True)
    assert sent == [b"result", b"result"]
    outbox.on_puback(2, Reason(0))
    outbox.flush(connected=True)
    clock.now += 31
    outbox.flush(connected=True)
    assert len(sent) == 2  # 60 s now
    assert store.counter("resent") == 1
    outbox.on_acks({"ids": ["msg-aaaaaaaa"]})
    assert store.depth() == 0 and outbox.counters() == {"unacked": 0, "resent": 1, "refused": 0}


def test_outbox_no_matching_subscribers_and_refusals(tmp_path):
    outbox, store, sent, clock = outbox_with(tmp_path, ack_wait_s=30)
    for n in range(3):
        store.enqueue("t/events", f"e{n}".encode(), "event", f"msg-0000000{n}")
    outbox.flush(connected=True)
    outbox.on_puback(1, Reason(0x10))  # PUBACK "no matching subscribers": nobody has it, publish again soon
    outbox.on_puback(2, Reason(0x87))  # not authorized: kept, not retried until a restart
    outbox.on_puback(3, Reason(0))
    outbox.flush(connected=True)
    clock.now += 2.5
    outbox.flush(connected=True)
    assert sent == [b"e0", b"e1", b"e2", b"e0"]
    outbox.on_acks({"ids": [], "refused": [{"id": "msg-00000002", "reason": "invalid"}]})
    assert store.depth() == 2 and outbox.counters()["refused"] == 1


def test_outbox_back_pressure_keeps_new_rows_on_disk(tmp_path):
    outbox, store, sent, clock = outbox_with(tmp_path, ack_wait_s=30, max_outstanding=2, window=10)
    for n in range(5):
        store.enqueue("t/telemetry", f"t{n}".encode(), "telemetry", f"msg-0000000{n}")
    outbox.flush(connected=True)
    assert len(sent) == 5  # nothing outstanding yet: the window alone bounds it
    for mid in range(1, 6):
        outbox.on_puback(mid, Reason(0))
    store.enqueue("t/telemetry", b"t5", "telemetry", "msg-00000005")
    outbox.flush(connected=True)
    assert len(sent) == 5  # 5 rows wait for the collector (limit 2): the new one waits on disk
    outbox.on_acks({"ids": [f"msg-0000000{n}" for n in range(4)]})
    outbox.flush(connected=True)
    assert sent[-1] == b"t5"
    outbox.flush(connected=False)  # disconnected: nothing is handed to paho
    assert len(sent) == 6


def test_outbox_of_an_older_agent_gets_message_ids(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                   "payload BLOB NOT NULL, kind TEXT NOT NULL, created REAL NOT NULL)")
        db.execute("INSERT INTO outbox (topic, payload, kind, created) VALUES ('t', ?, 'result', 0)",
                   (json.dumps({"v": 1, "device": "d"}).encode(),))
    store = AgentStore(path)
    ((_, _, payload),) = store.due(set(), 10, now=0.0)
    msg_id = json.loads(payload)["msg_id"]
    assert p.MSG_ID.match(msg_id) and store.acknowledged([msg_id]) == 1


# ---------------------------------------------------------------- model cache

@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_model_cache_verifies_and_refuses(tmp_path, http_dir):
    root, url = http_dir
    data = b"TFL3" * 100
    (root / "model.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    cache = ModelCache(tmp_path / "cache")
    path = cache.get(sha, len(data), f"{url}/model.bin")
    assert path == (tmp_path / "cache" / sha).resolve() and path.read_bytes() == data
    with pytest.raises(ModelError, match="refused"):
        cache.get("b" * 64, len(data), f"{url}/model.bin")  # content does not match the announced digest
    assert not list((tmp_path / "cache").glob("b*"))
    with pytest.raises(ModelError, match="truncated"):
        cache.get("c" * 64, len(data) + 10, f"{url}/model.bin")
    for escape in ("../../etc/passwd", "/etc/passwd", "a" * 63 + "/"):
        with pytest.raises(ModelError, match="not a sha256"):
            cache.path_for(escape)


def test_model_cache_lru_eviction(tmp_path):
    cache = ModelCache(tmp_path / "cache", quota_bytes=250)
    for n, name in enumerate(("a", "b", "c")):
        path = tmp_path / "cache" / (name * 64)
        path.write_bytes(b"x" * 100)
        import os

        os.utime(path, (1000 + n, 1000 + n))
    assert cache.evict(reserve=100) == ["a" * 64, "b" * 64]
    assert Path(tmp_path / "cache" / ("c" * 64)).exists()


# ---------------------------------------------------------------- line protocol

def test_line_protocol_escaping_and_idempotent_timestamps():
    text = lp.line("m", {"model": "a b,c=d", "empty": ""}, {"v": 1.5, "n": 3, "s": 'q"x', "nan": float("nan")}, 7)
    assert text == 'm,model=a\\ b\\,c\\=d v=1.5,n=3i,s="q\\"x" 7'
    assert schema.result_time_ns("run-1", 1.7e9) == schema.result_time_ns("run-1", 1.7e9)
    assert schema.result_time_ns("run-1", 1.7e9) != schema.result_time_ns("run-2", 1.7e9)
    msg = p.validate(p.topic("dev1", p.EVENTS), encoded(result_payload()))
    point = influx.result_point(msg, {"class": "rpi5"})
    assert point.startswith("edgebench_result,delegate=xnnpack,device=dev1,label_class=rpi5,model=m.tflite")
    assert 'run_id="j1"' in point and "p50_ms=1.5" in point


def test_result_samples_and_labels_are_checked():
    good = result_payload()
    good.update(labels={"release": "v1.5.0"}, samples={"latency_ns": [1000, 2000, 3000], "total": 3})
    msg = p.validate(p.topic("dev1", p.EVENTS), encoded(good))
    assert msg.payload["samples"]["latency_ns"] == [1000, 2000, 3000]
    for samples, reason in (({"latency_ns": [1, -2]}, "non-negative integers"),
                            ({"latency_ns": [1.5]}, "non-negative integers"),
                            ({"latency_ns": [True]}, "non-negative integers"),
                            ({"latency_ns": [1] * (p.MAX_RESULT_SAMPLES + 1)}, "at most"),
                            ({"latency_ns": [1, 2], "total": 1}, "below"),
                            ({}, "missing field 'latency_ns'")):
        with pytest.raises(p.ProtocolError, match=reason):
            p.validate(p.topic("dev1", p.EVENTS), encoded(dict(good, samples=samples)))
    with pytest.raises(p.ProtocolError, match="invalid label"):
        p.validate(p.topic("dev1", p.EVENTS), encoded(dict(good, labels={"release": "v 1"})))
    job = p.envelope("dev1", 1.7e9, job_id="j1", model={"sha256": SHA, "size_bytes": 10}, labels={"release": "v1"})
    p.check_job(job)
    with pytest.raises(p.ProtocolError, match="invalid label"):
        p.check_job(dict(job, labels={"Release": "v1"}))


def test_result_samples_subsample_uniformly_and_deterministically():
    report = {"samples": {"latency_ns": list(range(25000))}}
    first, second = p.result_samples(report, 10000), p.result_samples(report, 10000)
    assert first == second and first["total"] == 25000 and len(first["latency_ns"]) == 10000
    kept = first["latency_ns"]
    assert kept == sorted(kept) and len(set(kept)) == 10000  # run order, no repeats
    assert 11000 < kept[5000] < 14000  # uniform: the median stays near the middle
    assert p.result_samples({"samples": {"latency_ns": [5, 6]}}) == {"latency_ns": [5, 6], "total": 2}
    assert p.result_samples({}) == {"latency_ns": [], "total": 0}


def test_result_points_carry_the_interval_and_one_repeat_point_per_repeat():
    payload = p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="j1",
                         summary=p.summarize_report(repeats_report()))
    msg = p.validate(p.topic("dev1", p.EVENTS), encoded(payload))
    summary, *repeats = influx.points_for(msg, {"class": "rpi5"})
    interval = payload["summary"]["stats"]["interval"]
    low, high = interval["p90_ms"]["ci"]
    assert f"p90_ci_low_ms={low!r}" in summary and f"p90_ci_high_ms={high!r}" in summary
    assert "repeats=4i" in summary and 'interval_method="between-repeats"' in summary
    assert 'interleave_group="ab-7"' in summary and 'interleave_slot="3"' in summary
    assert 'delegate_requested="xnnpack"' in summary
    ts = int(summary.rpartition(" ")[2])
    assert len(repeats) == 4
    for index, line in enumerate(repeats):
        series = summary.split(" ")[0].replace("edgebench_result", "edgebench_repeat")
        assert line == (f"{series},unit={index} p50_ms={interval['p50_ms']['per_unit'][index]!r},"
                        f"p90_ms={interval['p90_ms']['per_unit'][index]!r},"
                        f"p99_ms={interval['p99_ms']['per_unit'][index]!r} {ts}")


def test_result_points_carry_one_latency_point_per_sample():
    payload = result_payload()
    payload.update(labels={"release": "v2"}, samples={"latency_ns": [1500000, 1600000], "total": 40})
    msg = p.validate(p.topic("dev1", p.EVENTS), encoded(payload))
    summary, *latency = influx.points_for(msg, {"class": "rpi5", "release": "v2"})
    assert summary.startswith("edgebench_result,delegate=xnnpack,device=dev1,label_class=rpi5,label_release=v2,")
    # no placement in this summary: no coverage; the chain asked for nothing, so nothing "loaded" either
    assert "samples_total=40i" in summary and "delegate_loaded=0.0" in summary and "delegate_coverage" not in summary
    ts = int(summary.rpartition(" ")[2])
    series = summary.split(" ")[0].replace("edgebench_result", "edgebench_latency")
    assert latency == [f"{series} latency_ns=1500000i {ts}", f"{series} latency_ns=1600000i {ts + 1}"]


def test_the_job_is_one_typed_record_on_every_side():
    job = p.Job(job_id="b1-0001-ab", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10, name="m.onnx",
                                                                      url="http://c:8780/api/v1/models/x/content"),
                runtime="onnxruntime", threads=2, settings={"min_runs": 5}, labels={"release": "v1"},
                reference=SHA, reference_url="http://c:8780/api/v1/models/y/content")
    payload = job.to_payload(1.7e9)
    assert p.validate(p.topic("dev1", p.JOBS), encoded(payload)).payload == payload
    assert p.Job.from_payload(payload) == job
    assert "timeout_s" not in payload and payload["sensors"] is True  # unset fields stay out; defaults are explicit
    with pytest.raises(p.ProtocolError, match="plugins are not allowed"):
        p.Job(job_id="b1", device="dev1", model=job.model, runtime="evil:Class").to_payload(1.7e9)
    with pytest.raises(p.ProtocolError, match="reference_url must be http"):
        p.Job.from_payload(dict(payload, reference_url="file:///etc/passwd"))


def test_latest_results_keep_threads_and_the_requested_chain_apart(tmp_path):
    """``latest=N`` keeps the N newest results of each configuration: two thread counts, or two chains asked for
    that ran the same delegate (one fell back), are configurations of their own (the gates judge each)."""
    from edgebench.server.registry import Registry

    registry = Registry(tmp_path / "registry.db")

    def result(job: str, threads: int, requested: list, finished: float) -> None:
        summary = {"model": {"name": "m.tflite"}, "stats": {"count": 1, "p50_ms": 1.0},
                   "runtime": {"runtime": "litert", "requested": requested, "used": ["xnnpack"], "threads": threads}}
        registry.job_event("dev1", {"event": "result", "job_id": job, "run_id": job, "ts": finished,
                                    "finished_ts": finished, "summary": summary}, {"class": "rpi5"})

    result("old", 1, ["xnnpack"], 100.0)
    result("new", 1, ["xnnpack"], 200.0)
    result("four-threads", 4, ["xnnpack"], 150.0)
    result("fell-back", 1, ["gpu", "xnnpack"], 160.0)  # asked for the GPU, ran XNNPACK: not the xnnpack job's
    assert [r["job_id"] for r in registry.results(latest=1)] == ["four-threads", "fell-back", "new"]
    assert [r["job_id"] for r in registry.results(latest=True)] == ["four-threads", "fell-back", "new"]
    assert [r["job_id"] for r in registry.results(latest=2)] == ["old", "four-threads", "fell-back", "new"]
    assert len(registry.results()) == 4
    registry.close()


def test_a_puback_during_publish_job_neither_deadlocks_nor_is_lost(tmp_path):
    """paho calls on_publish holding its own message lock, and publish() needs that lock: publish_job must not
    hold the collector's job lock while it publishes (it did: the HTTP API hung under load). Here the fake
    client delivers the PUBACK from another thread while publish() "holds" paho's lock, as a fast broker can."""
    from edgebench.agent.fleet.mqtt import MqttSettings
    from edgebench.server.collector import Collector, CollectorConfig
    from edgebench.server.metrics import Metrics

    sent = []

    class Registry:
        def job_sent(self, job_id):
            sent.append(job_id)

    collector = Collector(CollectorConfig(MqttSettings(), "http://127.0.0.1:9", "db", tmp_path), Registry(), Metrics())

    class Reason:
        is_failure = False

    class Info:
        mid = 7

    class Client:
        def publish(self, *args, **kwargs):
            puback = threading.Thread(target=collector._on_publish, args=(self, None, 7, Reason(), None))
            puback.start()
            puback.join(timeout=5)  # paho: its lock is held until the callback returns
            assert not puback.is_alive(), "deadlock: on_publish waited for the job lock held by publish_job"
            return Info()

    collector.client = Client()
    job = p.Job(job_id="b1-0001-aa", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10)).to_payload(1.7e9)
    collector.publish_job(job)
    assert sent == ["b1-0001-aa"]  # the PUBACK that came first still marks the job sent


def test_a_job_carries_only_its_runtimes_chain(tmp_path):
    """A matrix of a .tflite and an .onnx model, two delegate chains and providers: LiteRT's jobs take the delegate
    chains (and no providers), ONNX Runtime's one job per configuration takes the providers (and no delegates),
    which its runtime would refuse rather than ignore."""
    from edgebench.server.api import Api
    from edgebench.server.metrics import Metrics
    from edgebench.server.registry import Registry

    class Published:
        def __init__(self):
            self.jobs: list = []

        def publish_job(self, job: dict) -> None:
            self.jobs.append(job)

    registry = Registry(tmp_path / "registry.sqlite3")
    registry.device_status("board", "online", {"class": "rpi5"}, "1.0")
    tflite, onnx = registry.add_model("a" * 64, "m.tflite", 10, "tflite"), registry.add_model("b" * 64, "m.onnx", 10,
                                                                                          "onnx")
    published = Published()
    api = Api(registry, published, Metrics(), tmp_path / "models", "http://collector:8780", 1024, auth=False)
    api.submit({"models": [tflite["sha256"], onnx["sha256"]], "devices": {"ids": ["board"]},
                "delegates": [["xnnpack"], ["gpu", "xnnpack"]], "threads": [1, 2],
                "options": {"providers": ["CUDA", "CPU"], "sensors": False}})
    by_model = {}
    for job in published.jobs:
        by_model.setdefault(job["model"]["name"], []).append((job.get("delegates") or [], job.get("providers") or [],
                                                              job.get("threads")))
    chains = (["xnnpack"], ["gpu", "xnnpack"])
    assert sorted(by_model["m.tflite"]) == sorted([(chain, [], threads) for chain in chains for threads in (1, 2)])
    assert sorted(by_model["m.onnx"]) == [([], ["CUDA", "CPU"], 1), ([], ["CUDA", "CPU"], 2)]
    assert p.chain_option("ort", "tflite") == "providers" and p.chain_option(None, "onnx") == "providers"
    assert p.chain_option(None, "tflite") == "delegates" and p.chain_option(None, "pte") is None
    registry.close()


def test_a_boards_result_keeps_its_benchmark_when_a_section_would_be_refused(tmp_path):
    """The agent checks the placement and ops it summarized as the collector will: a runtime's odd op name (a
    control character) costs that section, never the result; a good section goes out as summarized."""
    from edgebench.agent.fleet.daemon import Agent, AgentConfig
    from edgebench.agent.fleet.mqtt import MqttSettings

    agent = Agent(AgentConfig(mqtt=MqttSettings(), device_id="dev1", data_dir=tmp_path))
    sent = {}
    agent._finish = lambda job_id, state, kind, **fields: sent.update(fields)
    job = p.Job(job_id="j1", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10, name="m.tflite"))
    report = sections_report()
    report["ops"]["by_type"][0]["op"] = "OP\x00"
    try:
        agent._report("j1", job, {"report": report})
    finally:
        agent.store.close()
    assert "ops" not in sent["summary"] and sent["summary"]["placement"] == p.summarize_report(report)["placement"]
    payload = p.envelope("dev1", 1.7e9, event="result", job_id="j1", **sent)
    assert p.validate(p.topic("dev1", p.EVENTS), encoded(payload)).payload["summary"]["stats"]["count"] >= 1


def test_push_asks_for_the_per_op_profile_only_when_told():
    """``push --profile-ops [--profile-runs N]`` puts profile_runs in every job's settings (the job runner hands it
    to the engine: test_a_job_may_ask_for_the_per_op_profile_within_bounds); without it the settings do not name
    it (an older agent would refuse the job); out-of-bounds counts are refused before any upload, and
    --require-delegate is no push option (a fleet gates on delegate_coverage)."""
    from edgebench.agent.cli import push as push_cli
    from edgebench.agent.cli.main import build_parser
    from edgebench.agent.errors import UsageError
    from edgebench.agent.fleet.client import job_matrix

    def settings(*flags: str) -> dict:
        return job_matrix(push_cli.job_options(build_parser().parse_args(["push", "m.onnx", *flags])),
                          [])["options"]["settings"]

    assert settings("--profile-ops")["profile_runs"] == 20
    assert settings("--profile-ops", "--profile-runs", "5")["profile_runs"] == 5
    assert "profile_runs" not in settings() and "profile_runs" not in settings("--profile-runs", "5")
    job = p.Job(job_id="j1", device="dev1", model=p.JobModel(sha256=SHA, size_bytes=10),
                settings=settings("--profile-ops", "--profile-runs", "5"))
    assert p.Job.from_payload(job.to_payload(1.7e9)).settings["profile_runs"] == 5
    with pytest.raises(UsageError, match="--profile-runs 200000: a fleet job allows 0 to 100000"):
        settings("--profile-ops", "--profile-runs", "200000")
    with pytest.raises(UsageError, match="--min-runs 2000000: a fleet job allows 1 to 1000000"):
        settings("--min-runs", "2000000")
    with pytest.raises(UsageError, match="--max-duration 100000: a fleet job allows 0.01 to 86400"):
        settings("--max-duration", "100000")
    push_options = {flag for action in build_parser()._subparsers._group_actions[0].choices["push"]._actions
                    for flag in action.option_strings}
    assert "--profile-ops" in push_options
    assert not push_options & {"--require-delegate", "--min-coverage", "--ops-csv"}
