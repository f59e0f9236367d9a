"""The InfluxDB schema module is the one source of the storage names: docs/fleet.md describes exactly its
measurements, the writer's points have its fields and types, the dashboards query only what it declares, and the
gates' metrics are the same from a bench summary as from the point written from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgebench.agent.fleet import protocol as p
from edgebench.dashboards import queries
from edgebench.dashboards.build import DASHBOARDS, JSON_DIR
from edgebench.server import influx, result_metrics
from edgebench.server import schema as db
from edgebench.server.gates import rules as gates

REPO = Path(__file__).resolve().parents[1]
SHA = "ab" * 32


def _doc_section() -> str:
    text = (REPO / "docs" / "fleet.md").read_text()
    return text.split("## InfluxDB schema", 1)[1].split("\n## ", 1)[0]


def _doc_paragraphs() -> dict[str, str]:
    """Measurement name -> its paragraph (from its bold name to the next one)."""
    parts = re.split(r"\*\*`(edgebench_\w+)`\*\*", _doc_section())
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_doc_describes_exactly_the_schema_measurements():
    assert sorted(_doc_paragraphs()) == sorted(m.name for m in db.MEASUREMENTS)
    assert "server/schema.py" in _doc_section()


@pytest.mark.parametrize("measurement", db.MEASUREMENTS, ids=lambda m: m.name)
def test_the_doc_names_every_tag_and_field(measurement):
    paragraph = _doc_paragraphs()[measurement.name]
    if measurement is db.LATENCY:  # "the tags of the result's edgebench_result point"
        assert "edgebench_result" in paragraph
    else:
        missing = [tag for tag in measurement.tags if f"`{tag}`" not in paragraph]
        assert not missing, f"{measurement.name}: tags {missing} not in docs/fleet.md"
    if measurement.labels and measurement is not db.LATENCY:
        assert "`label_<key>`" in paragraph, measurement.name
    missing = [name for name in measurement.field_names() if f"`{name}`" not in paragraph]
    assert not missing, f"{measurement.name}: fields {missing} not in docs/fleet.md"


def test_schema_covers_the_protocol_stats_and_heartbeat_counters():
    fields = set(db.RESULT.field_names())
    assert set(p.STATS_KEYS) <= fields and set(p.HEARTBEAT_COUNTERS) <= set(db.DEVICE_STATE.field_names())
    assert db.MAX_SAMPLES_PER_RESULT == p.MAX_RESULT_SAMPLES
    with pytest.raises(KeyError, match="undeclared"):
        db.RESULT.values({"p50_ms": 1.0, "not_a_field": 1})


def _fields(line: str) -> dict[str, tuple[str, object]]:
    """Field name -> (InfluxDB type, value) of a line-protocol point (string fields here hold no commas or spaces)."""
    fields = {}
    for item in line.split(" ")[1].split(","):
        name, _, text = item.partition("=")
        if text.startswith('"'):
            fields[name] = (db.STRING, text.strip('"'))
        elif text in ("true", "false"):
            fields[name] = (db.BOOLEAN, text == "true")
        elif text.endswith("i"):
            fields[name] = (db.INTEGER, int(text[:-1]))
        else:
            fields[name] = (db.FLOAT, float(text))
    return fields


def _field_types(line: str) -> dict[str, str]:
    return {name: kind for name, (kind, _) in _fields(line).items()}


# A model of 8 nodes: XNNPACK took 6 in 2 partitions, 2 stayed on LiteRT's CPU kernels; and their profiled times.
NODES = [("conv1", "CONV_2D", "xnnpack", 0), ("conv2", "CONV_2D", "xnnpack", 0), ("add", "ADD", "xnnpack", 0),
         ("resize", "RESIZE_BILINEAR", "cpu", 1), ("conv3", "CONV_2D", "xnnpack", 2),
         ("conv4", "CONV_2D", "xnnpack", 2), ("pool", "AVERAGE_POOL_2D", "xnnpack", 2),
         ("softmax", "SOFTMAX", "cpu", 3)]


def placement_and_ops() -> dict:
    """A report's ``placement`` and ``ops`` sections, made by the engine's own code (agent/engine/ops.py) from a raw
    node list and per-node times, as a board's report has them."""
    from edgebench.agent.engine import ops

    raw = {"source": "litert-graph", "first_choice": "xnnpack",
           "nodes": [{"name": n, "op": op, "backend": b, "partition": part} for n, op, b, part in NODES]}
    profile = {"source": "tflite-profiler", "unavailable": None, "latency_ns": [1_100_000, 1_000_000, 1_200_000],
               "nodes": [{"name": n, "op": op, "backend": b, "duration_ns": [(i + 1) * 20_000] * 3}
                         for i, (n, op, b, _) in enumerate(NODES)]}
    return {"placement": ops.summarize_placement(raw), "ops": ops.summarize_ops([profile], 1.0)}


def _result_message(sections: bool = True, **extra) -> p.Message:
    summary = {"stats": {"count": 10, "p50_ms": 1.5, "p90_ms": 2, "p99_ms": 3.0, "std_ms": 0.2},
               "model": {"name": "m.tflite", "sha256": SHA, "format": "tflite", "size_bytes": 100},
               "runtime": {"runtime": "litert", "used": ["xnnpack"], "requested": ["xnnpack"], "threads": 2},
               "memory": {"peak_steady_bytes": 30e6, "peak_load_bytes": 4e7}, "timing": {"load_ms": 2},
               "physics": {"energy": {"energy_per_inference_mj": 2.5, "avg_w": 4}, "throttling": {"detected": False}},
               "validity": {"valid": True}}
    if sections:
        carried = p.summarize_report({**summary, **placement_and_ops()})
        summary.update(placement=carried["placement"], ops=carried["ops"])
    payload = p.envelope("dev1", 1.7e9, event="result", job_id="j1", run_id="r1", summary=summary,
                         samples={"latency_ns": [5, 6], "total": 2}, **extra)
    return p.validate(p.topic("dev1", p.EVENTS), json.dumps(payload).encode())


def test_written_points_have_the_declared_fields_and_types():
    drift = {"reference_sha": SHA, "max_abs_err": 0.1, "mean_abs_err": 0.01, "cosine_mean": 0.99, "samples": 8}
    result, *points = influx.points_for(_result_message(drift=drift), {"class": "rpi5"})
    latency = [line for line in points if line.startswith(db.LATENCY.name + ",")]
    declared = {f.name: f.type for f in db.RESULT.fields}
    assert all(declared[name] == kind for name, kind in _field_types(result).items())
    assert latency and all(_field_types(line) == {"latency_ns": db.INTEGER} for line in latency)
    heartbeat = p.Message("dev1", p.HEARTBEAT, {"ts": 1.7e9, "uptime_s": 5, "outbox_depth": 3, "telemetry_dropped": 0,
                                                "unacked": 1, "resent": 0, "refused": 0})
    status = p.Message("dev1", p.STATUS, {"state": "online", "agent_version": "0.1.0"})
    declared = {f.name: f.type for f in db.DEVICE_STATE.fields}
    for msg in (heartbeat, status):
        (line,) = influx.points_for(msg, {}, 1.7e9)
        assert line.startswith(db.DEVICE_STATE.name + ",")
        assert all(declared[name] == kind for name, kind in _field_types(line).items())


def test_gate_metrics_are_the_same_from_a_summary_and_from_its_point():
    """The gates read a report's summary or the edgebench_result point the collector wrote from one: the same
    derivation (edgebench.server.result_metrics) gives the same metrics."""
    msg = _result_message()
    from_summary = gates.result_from_report(dict(msg.payload["summary"]), "r", {}).metrics
    point = {name: value for name, (_, value) in _fields(influx.result_point(msg, {})).items()}
    assert result_metrics.gate_metrics(point) == from_summary
    assert from_summary["peak_rss_mb"] == 40.0
    # the placement's coverage (6 of 8 nodes on XNNPACK), and the old meaning (XNNPACK loaded) under its own name
    assert from_summary["delegate_coverage"] == 0.75 and from_summary["delegate_loaded"] == 1.0
    assert point["profile_overhead"] == pytest.approx(1.1) and 0 < point["ops_accounted"] < 1
    assert set(result_metrics.GATE_METRICS) == set(gates.METRICS)


def test_a_result_without_placement_has_no_coverage_but_says_whether_its_delegate_loaded():
    """An older agent's result (no placement, no ops): coverage is unknown (a gate on it is missing, never a pass),
    delegate_loaded keeps the old 0/1 meaning; no placement or op rows are written."""
    msg = _result_message(sections=False)
    metrics = gates.result_from_report(dict(msg.payload["summary"]), "r", {}).metrics
    assert metrics["delegate_coverage"] is None and metrics["delegate_loaded"] == 1.0
    lines = influx.points_for(msg, {})
    assert not [line for line in lines if line.startswith(tuple(m.name + "," for m in db.RESULT_ROWS))]
    assert "delegate_coverage" not in _fields(lines[0]) and _fields(lines[0])["delegate_loaded"] == (db.FLOAT, 1.0)


def _tags(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split(" ")[0].split(",")[1:])


def test_placement_and_op_type_rows_are_the_reports_rows_with_the_declared_fields():
    """One edgebench_placement point per backend, one edgebench_fallback_op point per op type off the first choice,
    one edgebench_op_type point per profiled op type: the result's tags plus the row's own, the schema's field
    types, the report's values (nothing computed again), at the result's time."""
    msg = _result_message()
    summary = msg.payload["summary"]
    lines = influx.points_for(msg, {"class": "rpi5"})
    result_tags, result_time = _tags(lines[0]), lines[0].rsplit(" ", 1)[1]
    for measurement in db.RESULT_ROWS:
        rows = [line for line in lines if line.startswith(measurement.name + ",")]
        declared = {f.name: f.type for f in measurement.fields}
        assert rows and all(declared[name] == kind for line in rows for name, kind in _field_types(line).items())
        own = [tag for tag in measurement.tags if tag not in db.RESULT_TAGS]
        for line in rows:
            tags = _tags(line)
            assert {k: v for k, v in tags.items() if k not in own} == {k: v for k, v in result_tags.items()
                                                                         if k != db.REFERENCE}
            assert set(own) <= set(tags) and tags["label_class"] == "rpi5" and line.endswith(" " + result_time)
    placement = {_tags(line)[db.BACKEND]: {k: v for k, (_, v) in _fields(line).items()} for line in lines
                 if line.startswith(db.PLACEMENT.name + ",")}
    assert placement == {"xnnpack": {"nodes": 6, "partitions": 2, "model_nodes": 8, "coverage": 0.75,
                                     "first_choice": True},
                         "cpu": {"nodes": 2, "partitions": 2, "model_nodes": 8, "coverage": 0.75,
                                 "first_choice": False}}
    fallback = {(_tags(line)[db.OP], _tags(line)[db.BACKEND]): _fields(line)["count"][1] for line in lines
                if line.startswith(db.FALLBACK_OP.name + ",")}
    assert fallback == {("RESIZE_BILINEAR", "cpu"): 1, ("SOFTMAX", "cpu"): 1}
    by_type = {(_tags(line)[db.OP], _tags(line)[db.BACKEND]): {k: v for k, (_, v) in _fields(line).items()}
               for line in lines if line.startswith(db.OP_TYPE.name + ",")}
    assert by_type == {(row["op"], row["backend"]): {"count": row["count"], "total_us": row["total_us"],
                                                     "share": row["share"]} for row in summary["ops"]["by_type"]}
    assert by_type[("CONV_2D", "xnnpack")]["count"] == 4


def test_a_results_interval_and_units_are_the_same_from_a_summary_and_from_its_points():
    """A summary with repeats: the edgebench_result point (estimates, intervals, method) and its edgebench_repeat
    points (one per repeat) give the gates the same estimate, interval and units as the summary itself."""
    import numpy as np

    from edgebench.agent.engine import stats

    rng = np.random.default_rng(4)
    per_repeat = [[int(v) for v in rng.lognormal(np.log(3e6), 0.1, 80)] for _ in range(5)]
    msg = _result_message()
    msg.payload["summary"]["stats"]["interval"] = stats.interval_summary(per_repeat)
    result, *points = influx.points_for(msg, {})
    repeats = [line for line in points if line.startswith(db.REPEAT.name + ",")]
    declared = {f.name: f.type for f in db.RESULT.fields}
    assert all(declared[name] == kind for name, kind in _field_types(result).items())
    assert len(repeats) == 5 and all(_field_types(line) == {f: db.FLOAT for f in db.REPEAT.field_names()}
                                     for line in repeats)
    fields = {name: value for name, (_, value) in _fields(result).items()}
    units = [{name: value for name, (_, value) in _fields(line).items()} for line in repeats]
    from_points = gates.result_from_fields(fields, units, model="m", labels={}, runtime="", delegate="",
                                           variant=None, created="")
    from_summary = gates.result_from_report(dict(msg.payload["summary"]), "r", {})
    assert from_points.intervals == from_summary.intervals and from_points.metrics == from_summary.metrics
    assert from_summary.units("p90_ms") == msg.payload["summary"]["stats"]["interval"]["p90_ms"]["per_unit"]
    assert from_points.interval_method == "between-repeats" and fields["repeats"] == 5


def test_a_language_models_tokens_per_second_are_the_same_from_a_summary_and_from_its_point():
    """A GGUF result's generation (tests/fleet/test_llm_protocol.py makes one with the engine's code): its point has
    the declared fields and types, and gives the gates the same metrics, intervals and configuration as the summary
    itself; a result of any other model has none of them."""
    from .fleet.test_llm_protocol import generation_report

    summary = p.summarize_report(generation_report())
    msg = p.validate(p.topic("dev1", p.EVENTS), json.dumps(p.envelope(
        "dev1", 1.7e9, event="result", job_id="j1", run_id="r1", summary=summary)).encode())
    line = influx.result_point(msg, {})
    declared = {f.name: f.type for f in db.RESULT.fields}
    fields = {name: value for name, (_, value) in _fields(line).items()}
    assert all(declared[name] == kind for name, kind in _field_types(line).items())
    generation = summary["generation"]
    for metric in p.GENERATION_METRICS:
        assert fields[metric] == generation[metric]["estimate"]
        assert [fields[db.ci_field(metric, "low")], fields[db.ci_field(metric, "high")]] == generation[metric]["ci"]
    assert (fields["prompt_tokens"], fields["gen_tokens"], fields["kv_cache_bytes"]) == (32, 8, 5_898_240)
    assert _field_types(line)["prompt_tokens"] == db.INTEGER and "energy_per_token_mj" not in fields  # no sensor
    from_point = gates.result_from_fields(fields, [], model="m", labels={}, runtime="llamacpp", delegate="cpu",
                                          variant=None, created="")
    from_summary = gates.result_from_report(dict(summary), "r", {})
    assert from_point.metrics == from_summary.metrics  # (latency units: the repeat points, tested above)
    assert all(from_point.intervals[m] == from_summary.intervals[m] for m in p.GENERATION_METRICS)
    assert from_point.workload == from_summary.workload == "prompt 32 + 8 tokens"
    plain = influx.result_point(_result_message(), {})
    assert not set(_fields(plain)) & {"decode_tok_s", "prompt_tokens", "decode_ci_low_tok_s"}


def test_the_writer_does_not_import_the_gates():
    for path in ("server/influx.py", "server/result_metrics.py", "server/schema.py", "server/lineprotocol.py"):
        assert "gates" not in "".join(re.findall(r"^(?:from|import) .*$", (REPO / path).read_text(), re.M)), path


# Quoted names in the dashboards' InfluxQL that are not a measurement, a tag or a field: aliases follow AS.
_QUOTED = re.compile(r'(?<!AS )"(\w+)"')


def test_dashboards_query_only_declared_names():
    declared = {name for m in db.MEASUREMENTS for name in (m.name, *m.tags, *m.field_names())}
    unknown = set()
    for name in DASHBOARDS:
        dash = json.loads((JSON_DIR / f"{name}.json").read_text())
        texts = [q.text for q in queries.panel_queries(dash)] + [v["query"] for v in queries.query_variables(dash)]
        unknown |= {word for text in texts for word in _QUOTED.findall(text)
                    if word not in declared and not word.startswith(db.LABEL_PREFIX) and word not in db.PROPOSED}
    assert not unknown, f"the dashboards query names edgebench.server.schema does not declare: {sorted(unknown)}"
