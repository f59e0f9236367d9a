"""Fuzzing the fleet protocol's validators (issue 13): property-based, with hypothesis.

Every message family of docs/protocol.md (status, inventory, heartbeat, telemetry, the six job events, jobs,
cancel, model-request, model-chunk, acks) is generated valid from strategies and the protocol's own builders
(``envelope``, ``summarize_report``, ``result_samples``, ``Job.to_payload``; ``new_msg_id``'s form), then
mutated: a field deleted, retyped, replaced with huge, negative, non-finite, control-character, non-BMP or
lone-surrogate values, nested deeper, a key duplicated, raw number literals (``1e999``, 400-digit integers), the
payload oversized, its bytes damaged, or sent on another topic. The properties:

1. ``validate`` returns a message or raises ``ProtocolError`` with a one-line reason, never another exception,
   with the agent's ``json`` and the collector's ``orjson`` alike, and with the same outcome for both;
2. valid messages pass, and round-trip (``encode``, then ``validate``: the same payload);
3. whatever ``validate`` accepts is strict JSON in the documented grammar and becomes InfluxDB line protocol through
   the collector's own ``influx.points_for`` without error, in lines a strict parser reads back (measurement, tags,
   typed fields as the schema declares them, an int64 nanosecond timestamp), one point per line of the batch;
4. ``Job.from_payload`` of a payload ``check_job`` accepts raises nothing but ``ProtocolError``, and its
   ``to_payload`` validates again.

Deterministic: ``derandomize=True`` (a seed fixed per test), no example database, bounded ``max_examples``, no
deadline (no wall-clock thresholds). ``EDGEBENCH_FUZZ_SCALE=10`` multiplies the examples for a longer local run.
The counterexamples of the bugs these properties found are kept as explicit ``@example`` cases.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from edgebench.agent.fleet import protocol as p
from edgebench.server import influx
from edgebench.server import schema as db

LOADERS = (None, orjson.loads)  # the agent's json; the collector's orjson (what it refuses goes to json again)
SCALE = float(os.environ.get("EDGEBENCH_FUZZ_SCALE", "1"))
DEVICE_LABELS = {"class": "rpi5", "site": "lab2"}  # the registry's labels of the sending device
RECEIVED_TS = 1.7e9


def fuzz(examples: int):
    return settings(derandomize=True, database=None, deadline=None, max_examples=max(1, int(examples * SCALE)),
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no database to reuse; no explain
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- valid messages, per family

def rx(pattern: re.Pattern) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


DEVICES = rx(p.DEVICE_ID)
JOB_IDS = rx(p.JOB_ID)
MSG_IDS = st.one_of(rx(p.MSG_ID), st.binary(min_size=16, max_size=16).map(bytes.hex))  # new_msg_id's form
SHAS = rx(p.SHA256)
NAMES = rx(p.NAME)
TAG_TEXT = rx(p.TAG_TEXT)
TS = st.one_of(st.floats(min_value=0, max_value=p.MAX_TS), st.integers(0, int(p.MAX_TS)))
NUMBER = st.one_of(st.floats(min_value=0, allow_nan=False, allow_infinity=False), st.integers(0, 2**63 - 1))
COUNTER = st.one_of(st.floats(min_value=0, max_value=9.2e18), st.integers(0, p.MAX_INT))  # integer fields (int64)
SMALL = st.one_of(st.floats(min_value=0, max_value=1e9), st.integers(0, 10**9))
POSITIVE = st.floats(min_value=1e-9, max_value=1e12)
LABELS = st.dictionaries(rx(p.LABEL_KEY), rx(p.LABEL_VALUE), max_size=p.MAX_LABELS)
# Reading names as telemetry sources report them, the regex's own, and names of tags and envelope fields.
READING_NAMES = st.one_of(rx(p.LABEL_KEY), st.sampled_from(["load1", "temp_max_c", "power_w", "device", "v"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
                    st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                    max_leaves=10)
FACTS = st.dictionaries(st.text(max_size=12), st.one_of(SCALARS, st.lists(SCALARS, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), SCALARS, max_size=4)),
                        max_size=6)


def optional(**fields: st.SearchStrategy) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=fields)


STATUS = st.fixed_dictionaries({"state": st.sampled_from(p.STATES)},
                               optional={"agent_version": st.text(max_size=64), "labels": LABELS})
INVENTORY = st.fixed_dictionaries({"labels": LABELS, "device_facts": FACTS, "runtimes": st.lists(NAMES, max_size=4)},
                                  optional={"agent_version": st.text(max_size=64)})
HEARTBEAT = st.fixed_dictionaries(
    {"uptime_s": NUMBER, "outbox_depth": COUNTER, "telemetry_dropped": COUNTER, "job_id": st.none() | JOB_IDS},
    optional={**{key: COUNTER for key in p.HEARTBEAT_COUNTERS},
              "temp_max_c": st.floats(min_value=-273.15, max_value=1000, allow_nan=False)})
READINGS = st.dictionaries(READING_NAMES, st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                                    st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=6)
TELEMETRY = st.fixed_dictionaries({"msg_id": MSG_IDS, "samples": st.lists(
    st.fixed_dictionaries({"ts": TS, "readings": READINGS}), min_size=1, max_size=6)})
CANCEL = st.fixed_dictionaries({"job_id": JOB_IDS})
MODEL_REQUEST = st.fixed_dictionaries({"sha256": SHAS, "offset": st.integers(0, p.MAX_MODEL_BYTES),
                                       "length": st.integers(1, p.MODEL_WINDOW_BYTES)})
ACKS = st.fixed_dictionaries({"ids": st.lists(MSG_IDS, max_size=6)}, optional={"refused": st.lists(
    st.fixed_dictionaries({"id": MSG_IDS, "reason": st.text(min_size=1, max_size=100)}), max_size=3)})


@st.composite
def model_chunks(draw) -> dict:
    sha, offset = draw(SHAS), draw(st.integers(0, p.MAX_MODEL_BYTES - 64))
    if draw(st.booleans()):
        return {"sha256": sha, "offset": offset, "error": draw(st.text(min_size=1, max_size=500))}
    data = draw(st.binary(min_size=1, max_size=64))
    total = draw(st.integers(offset + len(data), p.MAX_MODEL_BYTES))
    return {"sha256": sha, "offset": offset, "total": total, "data": base64.b64encode(data).decode()}


def _pair() -> st.SearchStrategy[list]:
    return st.lists(POSITIVE, min_size=2, max_size=2).map(sorted)


@st.composite
def intervals(draw) -> dict:
    units = draw(st.integers(0, 5))
    interval = {"method": draw(st.sampled_from(p.INTERVAL_METHODS)), "units": units, **draw(optional(
        confidence=st.floats(0.5, 0.9999), drift_pct=st.floats(-100, 1e6), unit_spread_pct=SMALL))}
    entry = st.fixed_dictionaries(
        {"estimate": SMALL, "per_unit": st.lists(POSITIVE, min_size=units, max_size=units)},
        optional={"pooled": SMALL, "ci": st.none() | _pair(), "rerun": st.none() | _pair()})
    for key in p.INTERVAL_PERCENTILES:
        if draw(st.booleans()):
            interval[key] = draw(st.none() | entry)
    return interval


OP_NAMES = TAG_TEXT.filter(lambda s: len(s) <= 128)  # op types and backends: tags of the placement and op rows


@st.composite
def placement_and_ops(draw) -> dict:
    """A report's ``placement`` and ``ops`` made by the engine's own code (agent/engine/ops.py) from a raw node list
    and per-node times: the counts, coverage and shares agree as a board's report has them."""
    from edgebench.agent.engine import ops

    backends = draw(st.lists(OP_NAMES, min_size=1, max_size=3, unique=True))
    nodes = draw(st.lists(st.tuples(OP_NAMES, st.sampled_from(backends), st.integers(0, 3),
                                    st.lists(st.integers(0, 10**9), min_size=1, max_size=3)), max_size=30))
    named = [(f"n{i}", op, backend, part, times) for i, (op, backend, part, times) in enumerate(nodes)]
    raw = {"source": "litert-graph", "first_choice": backends[0],
           "nodes": [{"name": n, "op": op, "backend": b, "partition": part} for n, op, b, part, _ in named]}
    sections = {"placement": ops.summarize_placement(raw)}
    if draw(st.booleans()):
        sections["ops"] = {"source": None, "unavailable": draw(st.text(min_size=1, max_size=100)), "runs": 0}
    elif named:
        sections["ops"] = ops.summarize_ops([{"source": "onnxruntime-profiler", "unavailable": None,
                                              "latency_ns": draw(st.lists(st.integers(1, 10**9), min_size=1,
                                                                          max_size=5)),
                                              "nodes": [{"name": n, "op": op, "backend": b, "duration_ns": times}
                                                        for n, op, b, _, times in named]}],
                                            draw(st.none() | st.floats(1e-3, 1e3)))
    return sections


@st.composite
def reports(draw) -> dict:
    """A bench report (docs/report.md) as the engine writes it: what ``summarize_report`` gets on a board."""
    stats = {"count": draw(st.integers(1, p.MAX_INT) | st.floats(1, 9.2e18)), "p50_ms": draw(NUMBER),
             **draw(optional(**{key: NUMBER for key in p.STATS_KEYS if key not in ("count", "p50_ms")},
                             std_ms=NUMBER, interval=intervals(),
                             percentile_ci_ms=st.just({"p50": [1.0, 2.0]}), resolved=st.just({"x": 1})))}
    report = {
        "schema": draw(st.sampled_from(["edgebench.bench/1", "edgebench.bench/2"])),
        "created": draw(st.text(max_size=25)),
        "model": {"sha256": draw(SHAS), "path": "/cache/model.tflite", **draw(optional(
            name=TAG_TEXT, format=TAG_TEXT, size_bytes=st.integers(1, p.MAX_MODEL_BYTES)))},
        "runtime": draw(optional(runtime=TAG_TEXT, used=TAG_TEXT | st.lists(TAG_TEXT, max_size=3),
                                 requested=st.lists(NAMES, max_size=3), threads=st.integers(1, 1024))),
        "stats": stats, "settings": draw(optional(min_runs=st.integers(1, 1000))),
        "timing": draw(optional(load_ms=NUMBER, first_inference_ms=NUMBER)),
        "memory": draw(optional(peak_steady_bytes=NUMBER, peak_load_bytes=NUMBER,
                                rss_samples=st.lists(st.integers(0, 2**40), max_size=3))),
        "validity": draw(optional(valid=st.booleans())),
        "samples": {"latency_ns": draw(st.lists(st.integers(0, 2**63 - 1), max_size=30))},
        **draw(optional(
            physics=st.fixed_dictionaries({"energy": optional(energy_per_inference_mj=NUMBER, avg_w=NUMBER),
                                           "throttling": optional(detected=st.booleans(), checks=st.just([1]))}),
            repeats=st.lists(st.just({"stats": {}}), min_size=1, max_size=5),
            interleave=st.fixed_dictionaries({"group": rx(p.TAG_TEXT).filter(lambda s: len(s) <= 128),
                                              "slot": st.integers(0, 1_000_000) | rx(p.TAG_TEXT).filter(
                                                  lambda s: len(s) <= 64)}))),
        **draw(st.just({}) | placement_and_ops()),
    }
    return report


DRIFT = st.one_of(
    st.fixed_dictionaries({"reference_sha": SHAS, "max_abs_err": NUMBER, "mean_abs_err": NUMBER,
                           "cosine_mean": st.floats(-1, 1), "samples": st.integers(1, 1_000_000)},
                          optional={"top1_agreement": st.floats(0, 1)}),
    st.fixed_dictionaries({"reference_sha": SHAS, "error": st.text(max_size=2000)}))


@st.composite
def results(draw) -> dict:
    """A result event as the agent's ``_report`` builds it: the summary and samples from the protocol's builders."""
    report = draw(reports())
    fields = {"run_id": draw(JOB_IDS), "summary": p.summarize_report(report),
              **draw(optional(finished_ts=TS, labels=LABELS, drift=DRIFT))}
    if draw(st.booleans()):
        fields["samples"] = p.result_samples(report, draw(st.integers(1, 40)))
    return fields


EVENT_FIELDS = {
    "accepted": st.just({}),
    "rejected": st.fixed_dictionaries({"reason": st.text(max_size=2000)}),
    "error": st.fixed_dictionaries({"reason": st.text(max_size=2000)}, optional={"error_kind": st.text(max_size=40)}),
    "cancelled": optional(reason=st.text(max_size=200)),
    "progress": st.fixed_dictionaries({"phase": NAMES, "runs": NUMBER, "elapsed_s": NUMBER}),
    "result": results(),
}


@st.composite
def events(draw) -> dict:
    kind = draw(st.sampled_from(p.EVENT_KINDS))
    head = {"event": kind, "job_id": draw(JOB_IDS), **draw(optional(seq=st.integers(0, 2**40)))}
    if kind != "progress":  # progress goes straight out (QoS 0), everything else through the outbox
        head["msg_id"] = draw(MSG_IDS)
    return {**head, **draw(EVENT_FIELDS[kind])}


SHAPES = rx(p.SHAPE_ARG).filter(lambda s: len(s) <= 160)
INPUTS = st.builds(lambda name, source: f"{name}={source}", st.from_regex(r"[A-Za-z0-9_]{1,16}", fullmatch=True),
                   rx(p.INPUT_SOURCE).filter(lambda s: len(s) <= 60))
URLS = st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["http://", "https://"]), st.text(max_size=60))
SETTINGS = st.fixed_dictionaries({}, optional={
    key: (st.integers(int(low), int(high)) if isinstance(low, int) else st.floats(low, high))
    for key, (low, high) in p.SETTINGS_LIMITS.items()})


@st.composite
def jobs(draw, device: str) -> p.Job:
    job_id = draw(JOB_IDS)
    group = draw(st.lists(JOB_IDS, max_size=p.MAX_JOB_GROUP - 1))
    model = p.JobModel(sha256=draw(SHAS), size_bytes=draw(st.integers(1, p.MAX_MODEL_BYTES)),
                       name=draw(st.none() | NAMES), url=draw(st.none() | URLS))
    return p.Job(
        job_id=job_id, device=device, model=model, batch_id=draw(st.none() | st.text(max_size=40)),
        runtime=draw(st.none() | st.sampled_from(p.RUNTIMES)),
        delegates=draw(st.lists(st.sampled_from(p.DELEGATES), max_size=3)), providers=draw(st.lists(NAMES, max_size=2)),
        threads=draw(st.none() | st.integers(1, 1024)), cpus=draw(st.lists(st.integers(0, p.MAX_CPUS - 1), max_size=8)),
        repeats=draw(st.integers(1, p.MAX_JOB_REPEATS)), seed=draw(st.integers(0, 2**31)),
        shape=draw(st.lists(SHAPES, max_size=2)), input=draw(st.lists(INPUTS, max_size=2)), settings=draw(SETTINGS),
        timeout_s=draw(st.none() | st.floats(1, p.MAX_JOB_TIMEOUT_S)), sensors=draw(st.booleans()),
        labels=draw(LABELS), reference=draw(st.none() | SHAS), reference_url=draw(st.none() | URLS),
        group=[job_id, *group] if group else [])


FAMILIES = {
    p.STATUS: lambda device: STATUS, p.INVENTORY: lambda device: INVENTORY, p.HEARTBEAT: lambda device: HEARTBEAT,
    p.TELEMETRY: lambda device: TELEMETRY, p.EVENTS: lambda device: events(), p.CANCEL: lambda device: CANCEL,
    p.JOBS: lambda device: jobs(device).map(lambda job: {k: v for k, v in job.to_payload(0).items()
                                                         if k not in ("v", "device", "ts")}),
    p.MODEL_REQUEST: lambda device: MODEL_REQUEST, p.MODEL_CHUNK: lambda device: model_chunks(),
    p.ACKS: lambda device: ACKS,
}
assert set(FAMILIES) == set(p.DEVICE_TOPICS + p.SERVER_TOPICS) == set(p.VALIDATORS)  # every family is fuzzed


@st.composite
def valid_messages(draw, kinds: tuple = tuple(FAMILIES)) -> tuple[str, str, dict]:
    """(kind, device, payload) built with ``envelope`` as the agent and the collector build theirs."""
    kind, device = draw(st.sampled_from(kinds)), draw(DEVICES)
    return kind, device, p.envelope(device, draw(TS), **draw(FAMILIES[kind](device)))


# ---------------------------------------------------------------- mutations

RAW_NUMBERS = ["1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity", "1" + "0" * 400, "-1" + "0" * 400,
               "1" + "0" * 5000, "18446744073709551616", "9223372036854775808", "-9223372036854775809", "-0",
               "0e0", "1e-400", "1.0", "01", "+1", ".5", "1.", "0x10", "tru", "'a'", "undefined", '"\\ud800"',
               '"\\udc00x"', '"a\\u0000b"', '"\\ud83d\\ude00"']
NASTY_NUMBERS = [-1, -1.0, -1e-300, 0, 0.0, -0.0, 0.5, 1, 1e308, -1e308, 5e-324, 2**31, 2**53 + 1, 2**63 - 1, 2**63,
                 2**64, 10**30, 10**400, -(10**400), 1e20, 1e19, 9.3e18, 9223372036.9, 32503680000.0, 1.7e9]
NASTY_TEXT = ["", " ", "\n", "a\n", "\r\n", "\x00", "\x1b[2J", "\x7f", "\x85", "\\", "a\\", '"', ",", "=", "a b",
              "a,b=c", "\u2028", "é", "😀", "\ud800", "\udfff", "x" * 300, "x" * 5000, "time", "_field", "#",
              "edgebench_gate,rule=x passed=true 1", "m\nedgebench_gate,rule=x passed=true 1", "1", "true",
              "http://x", "../../etc/passwd", "module:Class", "libdelegate.so", "A" * 64, "a" * 65]
AFFIXES = ["\n", "\r", "\x00", "\t", "\\", " ", ",", "=", '"', "\ud800", "\udc00", "😀", "\u2028", "\x85", "é"]
NASTY = st.one_of(st.sampled_from(NASTY_NUMBERS), st.sampled_from(NASTY_TEXT), JSON,
                  st.sampled_from([None, True, False, [], {}, [[]], {"": None}, [1, "a", None], {"v": 1}]))


class Raw:
    """A JSON text spliced into the serialized payload as is (number literals, duplicate keys, deep nesting)."""

    registry: dict = {}

    @classmethod
    def make(cls, text: str) -> str:
        token = f"@@raw{len(cls.registry)}@@"
        cls.registry[token] = text
        return token


def _locations(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path in a JSON value: dict keys and list indices, all the way down."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append(path + (key,))
        found.extend(_locations(item, path + (key,)))
    return found[:4000]


def _get(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
        return True
    except UnicodeDecodeError:
        return False


def _retyped(value: Any) -> list:
    options = [str(value), _dumps(value), [value], {"x": value}, {"value": value}, None, True, False]
    if isinstance(value, bool):
        options += [int(value), float(value)]
    elif isinstance(value, int):
        options += [-value, value * 10**12, str(value)]
        if abs(value) < 2**1000:
            options.append(float(value))
    elif isinstance(value, float):
        options += [-value, value * 1e300, int(value) if math.isfinite(value) else 0]
    elif isinstance(value, str):
        options += [value * 50, value.upper(), len(value), value.encode("utf-8", "surrogatepass").hex()]
    elif isinstance(value, list):
        options += [value * 3, value[:1], {str(i): v for i, v in enumerate(value)}]
    elif isinstance(value, dict):
        options += [list(value.values()), list(value), {**value, **{k: None for k in value}}]
    return options


@st.composite
def mutated_messages(draw, kinds: tuple = tuple(FAMILIES), max_ops: int = 3) -> tuple[str, bytes]:
    """(topic, bytes): a valid message of one family, mutated once or more, serialized, perhaps damaged."""
    kind, device, payload = draw(valid_messages(kinds))
    payload = json.loads(json.dumps(payload))  # a private copy
    topic = p.topic(device, kind)
    Raw.registry = {}
    byte_ops, root_twins = [], []
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["delete", "replace", "retype", "string", "raw", "nest", "rename", "duplicate",
                                   "add", "oversize", "bytes", "topic"]))
        places = _locations(payload)
        if op in ("delete", "replace", "retype", "string", "raw", "nest") and places:
            path = draw(st.sampled_from(places))
            parent, key = _get(payload, path[:-1]), path[-1]
            value = parent[key]
            if op == "delete":
                del parent[key]
            elif op == "replace":
                parent[key] = draw(NASTY)
            elif op == "retype":
                parent[key] = draw(st.sampled_from(_retyped(value)))
            elif op == "string":
                text = value if isinstance(value, str) else _dumps(value)
                affix = draw(st.sampled_from(AFFIXES))
                parent[key] = draw(st.sampled_from([text + affix, affix + text, text[:1] + affix + text[1:]]))
            elif op == "raw":
                parent[key] = Raw.make(draw(st.sampled_from(RAW_NUMBERS)))
            else:
                depth = draw(st.sampled_from([1, 12, 13, 100, 1100, 5000]))
                parent[key] = Raw.make("[" * depth + _dumps(value) + "]" * depth if draw(st.booleans())
                                       else '{"a":' * depth + _dumps(value) + "}" * depth)
        elif op == "rename" and places:  # a key with an affix: names that become InfluxDB field and tag keys
            path = draw(st.sampled_from([path for path in places if isinstance(path[-1], str)] or [places[0]]))
            parent, key = _get(payload, path[:-1]), path[-1]
            if isinstance(parent, dict):
                affix = draw(st.sampled_from(AFFIXES))
                name = draw(st.sampled_from([key + affix, affix + key, key.upper(), "time", key[:1]]))
                parent[name] = parent.pop(key)
        elif op in ("duplicate", "add"):
            dicts = [()] + [path for path in places if isinstance(_get(payload, path), dict)]
            path = draw(st.sampled_from(dicts))
            target = _get(payload, path)
            if op == "add" or not target:
                target[draw(st.sampled_from([*FAMILY_KEYS, "", "x\n", "\ud800"]) | st.text(max_size=8))] = draw(NASTY)
                continue
            key = draw(st.sampled_from(sorted(target)))
            items = [f"{_dumps(k)}:{_dumps(v)}" for k, v in target.items()]
            twin = f"{_dumps(key)}:{_dumps(draw(NASTY))}"
            items.insert(draw(st.integers(0, len(items))), twin)
            raw = "{" + ",".join(items) + "}"
            if path:
                _get(payload, path[:-1])[path[-1]] = Raw.make(raw)
            else:
                root_twins.append((twin, draw(st.booleans())))
        elif op == "oversize":
            limit = p.MAX_PAYLOAD[kind]
            payload["zz_pad"] = "x" * draw(st.sampled_from([limit - 200, limit - 60, limit, limit + 1, 2 * limit]))
        elif op == "bytes":
            byte_ops.append(draw(st.sampled_from(["truncate", "flip", "insert", "bom", "utf16", "utf32", "trail",
                                                  "list", "latin1"])))
        elif op == "topic":
            topic = draw(st.sampled_from([
                p.topic(device, draw(st.sampled_from(list(FAMILIES)))), p.topic(draw(DEVICES), kind),
                f"{p.ROOT}/devices/{device}\n/{kind}", f"{p.ROOT}/devices/{device}/{kind}/x",
                f"{p.ROOT}/devices/+/{kind}", f"{p.ROOT}/devices/{device}/{kind}\n", "", "/", f"{p.ROOT}/devices",
                f"edgebench/v2/devices/{device}/{kind}"]))
            if draw(st.booleans()) and "\n/" in topic:  # the payload claims the same (newline-suffixed) device
                payload["device"] = device + "\n"
    ascii_only = draw(st.booleans())
    text = json.dumps(payload, ensure_ascii=ascii_only, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    for twin, first in root_twins:  # a top-level key twice: json and orjson keep the last one
        text = "{" + twin + "," + text[1:] if first else text[:-1] + "," + twin + "}"
    for token in sorted(Raw.registry, key=lambda t: -int(t[5:-2])):  # later tokens may hold earlier ones
        text = text.replace(f'"{token}"', Raw.registry[token])
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate as the bytes json.loads(bytes) lets through
    for op in byte_ops:
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            data = data[:at]
        elif op == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif op == "bom":
            data = b"\xef\xbb\xbf" + data
        elif op in ("utf16", "utf32", "latin1"):
            codec = {"utf16": "utf-16", "utf32": "utf-32", "latin1": "latin-1"}[op]
            data = data.decode("utf-8", "surrogatepass").encode(codec, "surrogatepass" if codec != "latin-1" else
                                                                "replace") if _utf8(data) else data
        elif op == "trail":
            data += draw(st.sampled_from([b" ", b"\n", b"\x00", b"{}", b"x", b"\xff"]))
        else:
            data = b"[" + data + b"]"
    return topic, data


FAMILY_KEYS = sorted({"v", "device", "ts", "msg_id", "state", "agent_version", "labels", "device_facts", "runtimes",
                      "uptime_s", "outbox_depth", "telemetry_dropped", *p.HEARTBEAT_COUNTERS, "temp_max_c", "job_id",
                      "samples",
                      "event", "run_id", "finished_ts", "summary", "drift", "reason", "error_kind", "phase", "runs",
                      "elapsed_s", "seq", "model", "runtime", "delegates", "providers", "threads", "cpus", "repeats",
                      "group", "seed", "shape", "input", "settings", "timeout_s", "sensors", "reference",
                      "reference_url", "sha256", "offset", "length", "total", "data", "error", "ids", "refused",
                      "stats", "interval", "interleave", "latency_ns", "readings", "name", "format", "used"})


# ---------------------------------------------------------------- a strict line-protocol reader

MEASUREMENTS = {m.name: m for m in db.MEASUREMENTS}
RESERVED_KEYS = {"time", "_measurement", "_field"}  # InfluxDB refuses these as tag or field keys
INT64 = (-(2**63), 2**63 - 1)
TIME_NS = (-(2**63) + 2, 2**63 - 2)  # InfluxDB's MinNanoTime, MaxNanoTime
MAX_KEY_BYTES = 65535  # a series key (measurement and tags) longer than this is refused
FLOAT_TEXT = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LineError(AssertionError):
    pass


def _expect(condition: bool, line: str, what: str) -> None:
    if not condition:
        raise LineError(f"{what}: {line[:400]!r}")


def _key(line: str, i: int) -> tuple[str, int]:
    """A measurement, tag key, tag value or field key: up to an unescaped comma, equals sign or space."""
    out = []
    while i < len(line) and line[i] not in ",= ":
        char = line[i]
        if char == "\\":
            _expect(i + 1 < len(line) and line[i + 1] in ",= ", line, f"a stray backslash at {i}")
            char, i = line[i + 1], i + 1
        else:
            _expect(not CONTROL.match(char), line, f"a control character {char!r} outside a string field")
        out.append(char)
        i += 1
    return "".join(out), i


def _field_value(line: str, i: int) -> tuple[str, Any, int]:
    if line.startswith('"', i):
        out, i = [], i + 1
        while True:
            _expect(i < len(line), line, "an unterminated string field")
            if line[i] == '"':
                return db.STRING, "".join(out), i + 1
            if line[i] == "\\":
                _expect(i + 1 < len(line) and line[i + 1] in '"\\', line, "a stray backslash in a string field")
                i += 1
            out.append(line[i])
            i += 1
    end = i
    while end < len(line) and line[end] not in ", ":
        end += 1
    text = line[i:end]
    if text in ("true", "false"):
        return db.BOOLEAN, text == "true", end
    if re.fullmatch(r"-?\d+i", text):
        _expect(INT64[0] <= int(text[:-1]) <= INT64[1], line, f"integer {text[:30]} outside int64")
        return db.INTEGER, int(text[:-1]), end
    _expect(bool(FLOAT_TEXT.fullmatch(text)) and math.isfinite(float(text)), line, f"field value {text[:40]!r}")
    return db.FLOAT, float(text), end


def parse_point(line: str) -> tuple[str, dict, dict, int]:
    """One line of InfluxDB line protocol, strictly: what InfluxDB would refuse, or read otherwise than meant,
    fails. Returns (measurement, tags, fields {key: (type, value)}, timestamp)."""
    _expect(isinstance(line, str) and bool(line), str(line), "an empty line")
    line.encode("utf-8")  # the writers send UTF-8: a lone surrogate cannot be sent at all
    measurement, i = _key(line, 0)
    _expect(measurement in MEASUREMENTS, line, f"unknown measurement {measurement!r}")
    schema = MEASUREMENTS[measurement]
    tags: dict = {}
    while line.startswith(",", i):
        key, i = _key(line, i + 1)
        _expect(line.startswith("=", i), line, "a tag without '='")
        value, i = _key(line, i + 1)
        _expect(bool(key) and bool(value) and key not in tags and key not in RESERVED_KEYS, line, f"tag {key!r}")
        _expect(key in schema.tags or (schema.labels and key.startswith(db.LABEL_PREFIX)), line, f"tag {key!r}")
        tags[key] = value
    _expect(len(line[:i].encode()) <= MAX_KEY_BYTES, line, "a series key over 64 KiB")
    _expect(line.startswith(" ", i), line, "no space after the tags")
    declared = {f.name: f.type for f in schema.fields}
    fields: dict = {}
    i += 1
    while True:
        key, i = _key(line, i)
        _expect(line.startswith("=", i), line, f"field {key!r} without '='")
        kind, value, i = _field_value(line, i + 1)
        _expect(bool(key) and key not in fields and key not in RESERVED_KEYS, line, f"field key {key!r}")
        _expect(declared.get(key, db.FLOAT if schema.open_fields else None) == kind, line,
                f"field {key!r} of type {kind}, declared {declared.get(key)}")
        fields[key] = (kind, value)
        if not line.startswith(",", i):
            break
        i += 1
    _expect(line.startswith(" ", i) and bool(re.fullmatch(r"-?\d+", line[i + 1:])), line, "a bad timestamp")
    ts = int(line[i + 1:])
    _expect(TIME_NS[0] <= ts <= TIME_NS[1], line, f"timestamp {ts} outside InfluxDB's range")
    return measurement, tags, fields, ts


def split_batch(body: str) -> list[str]:
    """A write body cut into lines as influxd cuts it (models.scanLine): at a newline outside a string field."""
    lines, start, i = [], 0, 0
    quoted = fields = False
    equals = commas = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 2 < len(body):
            i += 2
            continue
        if char == " ":
            fields = True
        if fields and not quoted and char in "=,":
            equals, commas = equals + (char == "="), commas + (char == ",")
        elif fields and char == '"' and equals > commas:
            quoted = not quoted
        elif char == "\n" and not quoted:
            lines.append(body[start:i])
            start, quoted, fields, equals, commas = i + 1, False, False, 0, 0
        i += 1
    lines.append(body[start:])
    return lines


def check_lines(lines: list) -> list[tuple]:
    points = [parse_point(line) for line in lines]
    if lines:
        assert split_batch("\n".join(lines)) == lines, "the batch does not split back into its lines"
    return points


# ---------------------------------------------------------------- the checks every outcome goes through

def _documented_grammar(msg: p.Message) -> None:
    """What validate accepted matches the grammar docs/protocol.md gives (fullmatch: no trailing newline)."""
    payload = msg.payload
    assert p.DEVICE_ID.fullmatch(msg.device) and payload["device"] == msg.device, f"device {msg.device!r} accepted"
    checks = [(p.MSG_ID, payload.get("msg_id"))]
    if msg.kind in (p.EVENTS, p.CANCEL, p.JOBS, p.HEARTBEAT):
        checks.append((p.JOB_ID, payload.get("job_id")))
    if msg.kind == p.EVENTS and payload["event"] == "result":
        checks.append((p.JOB_ID, payload["run_id"]))
    labels = payload.get("labels") if isinstance(payload.get("labels"), dict) else {}
    checks += [(p.LABEL_KEY, key) for key in labels] + [(p.LABEL_VALUE, value) for value in labels.values()]
    if msg.kind == p.TELEMETRY:
        checks += [(p.LABEL_KEY, name) for sample in payload["samples"] for name in sample["readings"]]
    for pattern, value in checks:
        assert value is None or pattern.fullmatch(value), f"{value!r} accepted, not {pattern.pattern}"


def check_accepted(msg: p.Message, topic_name: str) -> list[tuple]:
    assert (msg.device, msg.kind) == p.parse_topic(topic_name)
    _documented_grammar(msg)
    json.dumps(msg.payload, allow_nan=False)  # strict JSON: no NaN or Infinity got in (1e999 is one)
    labels = {**(msg.payload.get("labels") or {}), **DEVICE_LABELS} if msg.kind == p.EVENTS else \
        (msg.payload.get("labels") or DEVICE_LABELS)
    return check_lines(influx.points_for(msg, labels, RECEIVED_TS))


def outcome(topic_name: str, data: bytes) -> tuple:
    """Validate with both loaders: a message (checked) or a one-line ProtocolError; anything else propagates."""
    note(f"topic {topic_name!r}, payload {data[:3000]!r}")
    seen = []
    for loads in LOADERS:
        try:
            msg = p.validate(topic_name, data, loads)
        except p.ProtocolError as exc:
            reason = str(exc)
            assert reason and len(reason.splitlines()) == 1 and len(reason) <= 2000, f"reason {reason[:300]!r}"
            seen.append(("refused", reason))
        else:
            check_accepted(msg, topic_name)
            seen.append(("accepted", msg.payload))
    # orjson reads an integer beyond 64 bits as a float (json: as an int): the same outcome, perhaps not the same
    # reason text or value then (such values are refused wherever a number becomes a point)
    same = seen[0][0] == seen[1][0] if re.search(rb"\d{19}", data) else seen[0] == seen[1]
    assert same, f"json and orjson disagree: {seen[0]!r:.300} / {seen[1]!r:.300}"
    return seen[0]


# ---------------------------------------------------------------- the counterexamples the properties found

def _raw(kind: str, body: str, device: str = "dev1", topic_name: str = "", ts: str = "1.7e9") -> tuple[str, bytes]:
    payload = f'{{"v":1,"device":{json.dumps(device)},"ts":{ts},{body}}}'
    return topic_name or p.topic(device, kind), payload.encode()


HEARTBEAT_BODY = '"uptime_s":%s,"outbox_depth":%s,"telemetry_dropped":0'
RESULT_BODY = ('"event":"result","job_id":"j1","msg_id":"0123456789abcdef","run_id":"j1","summary":{"model":{},'
               '"runtime":%s,"stats":{"count":1,"p50_ms":1.0}%s}')
# validate raised something else than ProtocolError, accepted what the protocol refuses, or refused in two lines
FOUND_VALIDATING = [
    _raw(p.HEARTBEAT, HEARTBEAT_BODY % ("1" + "0" * 400, "0")),  # OverflowError (math.isfinite of a huge int)
    _raw(p.EVENTS, RESULT_BODY % ("{}", ',"x":1' + "0" * 5000)),  # ValueError: json's 4300-digit limit on int()
    _raw(p.HEARTBEAT, HEARTBEAT_BODY % ("0", "0") + ',"job_id\\n":1e999'),  # accepted: infinity (1e999) got in
    _raw(p.STATUS, '"state":"online","labels":{"a":"\\n0"}'),  # refused with a two-line reason
    _raw(p.STATUS, '"state":"online","labels":{"a":"0\\n"}'),  # accepted: "$" matched before the newline
    _raw(p.STATUS, '"state":"online"', "0\n", f"{p.ROOT}/devices/0\n/status"),  # a device id "0\n" accepted
    _raw(p.STATUS, '"state":"online","agent_version":"\\ud800"'),  # a lone surrogate, no UTF-8 to write it in
    _raw(p.INVENTORY, '"labels":{},"runtimes":[],"device_facts":{"\\r":1' + "0" * 400 + "}"),  # keys in reasons
    _raw(p.INVENTORY, '"labels":{},"runtimes":[],"device_facts":{"\\r":' + "[" * 15 + "]" * 15 + "}"),
    _raw(p.JOBS, '"job_id":"j1","model":{"sha256":"' + "0" * 64 + '","size_bytes":1},"settings":{"a\\n":1}'),
    _raw(p.EVENTS, '"event":"accepted","job_id":"j1","msg_id":"00000000","labels":-1'),  # TypeError in collector
]
# validated, then influx.points_for raised, or wrote lines InfluxDB refuses
FOUND_WRITING = [
    _raw(p.HEARTBEAT, HEARTBEAT_BODY % ("0", "0"), ts="9223372037.0"),  # a time past 2262: beyond int64 ns
    _raw(p.HEARTBEAT, HEARTBEAT_BODY % ("0", "9.223372036854776e+18")),  # an integer field past int64
    _raw(p.TELEMETRY, '"samples":[{"ts":1,"readings":{"time":1.0}}]'),  # field key "time": InfluxDB refuses it
    _raw(p.TELEMETRY, '"samples":[{"ts":1,"readings":{"a\\n":1.0}}]'),  # a newline in a field key: two lines
    _raw(p.EVENTS, RESULT_BODY % ("{}", ',"physics":-1')),  # AttributeError: 'int' object has no attribute 'get'
    _raw(p.EVENTS, RESULT_BODY % ("{}", ',"physics":{"energy":-1}')),
    _raw(p.EVENTS, RESULT_BODY % ("{}", ',"memory":"{}"')),
    _raw(p.EVENTS, RESULT_BODY % ('{"used":"x","requested":5}', "")),  # TypeError: 'int' is not subscriptable
]


def examples(cases: list):
    def add(test):
        for case in cases:
            test = example(case=case)(test)
        return test
    return add


# ---------------------------------------------------------------- 1. nothing but ProtocolError

TOPICS = st.builds(p.topic, DEVICES, st.sampled_from(list(FAMILIES)))


@fuzz(150)
@given(topic_name=TOPICS, data=st.binary(max_size=400))
def test_arbitrary_bytes_are_a_message_or_a_protocol_error(topic_name, data):
    outcome(topic_name, data)


@st.composite
def arbitrary_json(draw) -> tuple[str, bytes]:
    """Objects with the envelope (mostly right) and the protocol's own field names holding arbitrary JSON."""
    kind, device = draw(st.sampled_from(list(FAMILIES))), draw(DEVICES)
    payload = {"v": draw(st.just(1) | SCALARS), "device": draw(st.just(device) | st.text(max_size=8)),
               "ts": draw(TS | SCALARS),
               **draw(st.dictionaries(st.sampled_from(FAMILY_KEYS) | st.text(max_size=8), JSON, max_size=8))}
    return p.topic(device, kind), json.dumps(payload).encode()


@fuzz(200)
@given(case=arbitrary_json())
def test_arbitrary_json_is_a_message_or_a_protocol_error(case):
    outcome(*case)


@fuzz(500)
@examples(FOUND_VALIDATING)
@given(case=mutated_messages())
def test_mutated_messages_are_a_message_or_a_protocol_error(case):
    outcome(*case)


# ---------------------------------------------------------------- 2. valid messages pass and round-trip

@fuzz(300)
@given(message=valid_messages())
def test_valid_messages_of_every_family_pass_and_round_trip(message):
    kind, device, payload = message
    data = p.encode(kind, payload)
    for loads in LOADERS:
        msg = p.validate(p.topic(device, kind), data, loads)
        assert (msg.device, msg.kind) == (device, kind)
        assert msg.payload == payload
        assert p.encode(kind, msg.payload) == data
        check_accepted(msg, p.topic(device, kind))


# ---------------------------------------------------------------- 3. accepted means writable to InfluxDB

POINT_KINDS = (p.STATUS, p.HEARTBEAT, p.TELEMETRY, p.EVENTS)  # the families influx.points_for writes


@fuzz(400)
@examples(FOUND_WRITING)
@given(case=mutated_messages(POINT_KINDS, max_ops=2))
def test_whatever_validates_becomes_well_formed_line_protocol(case):
    topic_name, data = case
    result = outcome(topic_name, data)
    if result[0] == "accepted":
        msg = p.validate(topic_name, data)
        points = check_accepted(msg, topic_name)
        assert points or msg.kind not in (p.STATUS, p.HEARTBEAT, p.TELEMETRY), f"no point: {msg.payload!r:.500}"


# ---------------------------------------------------------------- 4. the typed job

@st.composite
def job_payloads(draw) -> dict:
    """Payloads of jobs topics (valid, mutated) as JSON gives them, and sometimes without the envelope."""
    topic_name, data = draw(mutated_messages((p.JOBS,), max_ops=2))
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    for key in draw(st.lists(st.sampled_from(["v", "device", "ts"]), max_size=2)):
        payload.pop(key, None)
    return payload


@fuzz(300)
@example(payload={"job_id": "j1", "model": {"sha256": "0" * 64, "size_bytes": 1}}, ts=0)  # TypeError: no device
@example(payload={"device": "d", "job_id": "j1", "model": {"sha256": "0" * 64, "size_bytes": 1}, "batch_id": math.inf},
         ts=0)  # p.encode raised ValueError (a NaN/Infinity job field check_job did not look at)
@given(payload=job_payloads(), ts=TS)
def test_a_job_that_check_job_accepts_is_built_and_validates_again(payload, ts):
    try:
        p.check_job(payload)
    except p.ProtocolError:
        return
    try:
        job = p.Job.from_payload(payload)
    except p.ProtocolError:
        return
    again = job.to_payload(ts)
    data = p.encode(p.JOBS, again)
    msg = p.validate(p.topic(job.device, p.JOBS), data)
    assert p.Job.from_payload(msg.payload) == job
