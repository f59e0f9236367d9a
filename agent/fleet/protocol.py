"""The fleet's MQTT protocol: one versioned topic tree and the JSON payloads on it (docs/protocol.md).

The agent owns this module; the collector imports it (never the reverse), so both ends validate with the same
rules. Standard library only: a board imports it at start-up.

Every payload is a JSON object with ``v`` (protocol version), ``device`` (must equal the device id in the topic)
and ``ts`` (sender's UTC time, seconds since the epoch). ``validate(topic, payload)`` checks size, JSON, schema,
the topic/payload device match and the numbers (finite, non-negative latencies) and returns a ``Message``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from math import isfinite
from typing import Any, Callable, Optional

from edgebench.agent.runtimes.names import ALIASES as RUNTIME_ALIASES
from edgebench.agent.runtimes.names import BUILTIN as BUILTIN_RUNTIMES
from edgebench.agent.runtimes.names import CHAIN_OPTION, DEFAULT_FOR_FORMAT, FORMATS, generates, no_runtime_reason

VERSION = 1
ROOT = f"edgebench/v{VERSION}"

# Topic kinds under ROOT/devices/{device}/...: who publishes, QoS, retained.
STATUS = "status"  # device -> all, retained, QoS 1; the last will sets it offline
INVENTORY = "inventory"  # device -> all, retained, QoS 1: board facts, runtimes, labels
HEARTBEAT = "heartbeat"  # device -> collector, QoS 0
TELEMETRY = "telemetry"  # device -> collector, QoS 1, from the outbox
EVENTS = "events"  # device -> collector, QoS 1, from the outbox: accepted, progress, result, error, ...
JOBS = "jobs"  # collector -> device, QoS 1 (queued in the device's persistent session)
CANCEL = "cancel"  # collector -> device, QoS 1
MODEL_REQUEST = "model-request"  # device -> collector, QoS 1: a window of a model's bytes (no HTTP to the collector)
MODEL_CHUNK = "model-chunk"  # collector -> device, QoS 1: one chunk of the window, or an error
ACKS = "acks"  # collector -> device, QoS 1: outbox messages stored (or refused), by msg_id
DEVICE_TOPICS = (STATUS, INVENTORY, HEARTBEAT, TELEMETRY, EVENTS, MODEL_REQUEST)
SERVER_TOPICS = (JOBS, CANCEL, MODEL_CHUNK, ACKS)

# Size limits (bytes of the encoded payload), checked by the sender and the receiver.
MAX_PAYLOAD = {
    STATUS: 4096, INVENTORY: 65536, HEARTBEAT: 4096, TELEMETRY: 65536, EVENTS: 262144, JOBS: 16384, CANCEL: 1024,
    MODEL_REQUEST: 1024, MODEL_CHUNK: 262144, ACKS: 32768,
}
MAX_ACK_IDS = 256  # msg ids one acks message carries at most (stored + refused)
MODEL_CHUNK_BYTES = 128 * 1024  # raw bytes per model-chunk (base64: ~175 KB, under the 256 KiB limit)
MODEL_WINDOW_BYTES = 8 * MODEL_CHUNK_BYTES  # a model-request's ``length`` is at most this (8 chunks answer it)
MAX_MODEL_BYTES = 8 * 1024**3
MAX_TELEMETRY_SAMPLES = 500
MAX_RESULT_SAMPLES = 10000  # raw latency samples a result event carries at most (a uniform subsample beyond)
MAX_RESULT_UNITS = 1000  # repeats (or batches) a result's interval is computed from, at most

# Identifiers end with \Z, not $: "$" also matches before a trailing newline ("dev1\n" would pass), and a newline in
# a name that becomes an InfluxDB key (a telemetry reading's) would break the line protocol.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
MSG_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}\Z")  # an outbox message's id: the unit of acknowledgement and dedup
MAX_TS = 9223372036.0  # 2262-04-11: InfluxDB's last time (int64 ns); a time beyond is a lie InfluxDB refuses
MAX_INT = 2**63 - 1  # what InfluxDB stores as an integer field (int64): counters, counts, sizes, latencies
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")  # model display names, runtimes, delegates
TAG_TEXT = re.compile(r"^[^\x00-\x1f\x7f\\]{1,256}\Z")  # what may become an InfluxDB tag value
MAX_LABELS = 16

EVENT_KINDS = ("accepted", "rejected", "progress", "result", "error", "cancelled")
STATES = ("online", "offline")
# Jobs are data: runtimes by name only (never a plugin module:Class), delegates by name only (never a .so path),
# inputs generated only (never a file path). Nothing in a job reaches a shell.
RUNTIMES = tuple(BUILTIN_RUNTIMES)


def job_runtime(runtime: Optional[str], model_format: str) -> Optional[str]:
    """The built-in runtime a job runs on: the one asked for (aliases resolved), else the one a board chooses for the
    model's format; None where no runtime runs that format (a torch.export program)."""
    return RUNTIME_ALIASES.get(runtime, runtime) if runtime else DEFAULT_FOR_FORMAT.get(model_format)


def runtime_problem(runtime: Optional[str], model_format: str) -> Optional[str]:
    """Why a job's runtime cannot run a model of this format, or None."""
    name = job_runtime(runtime, model_format)
    if name is None:
        return no_runtime_reason(model_format)
    if model_format not in FORMATS.get(name, ()):
        return f"runtime {name} cannot run {model_format} models (it runs: {', '.join(FORMATS.get(name, ()))})"
    return None


def chain_option(runtime: Optional[str], model_format: str) -> Optional[str]:
    """The chain a job's runtime takes ("delegates": LiteRT's, "providers": ONNX Runtime's; None: it takes none): the
    runtime asked for, else the one a board chooses for the model's format. A job carries only that chain."""
    return CHAIN_OPTION.get(job_runtime(runtime, model_format) or "")


def generation_problem(runtime: Optional[str], model_format: str) -> Optional[str]:
    """Why a job's generation settings do not apply to its model (one that is not a language model), or None."""
    name = job_runtime(runtime, model_format)
    if name is not None and generates(name):
        return None
    return (f"generation settings (--prompt-tokens, --gen-tokens) are for language models (GGUF); runtime {name} "
            f"runs a {model_format} model one inference at a time")


DELEGATES = ("xnnpack", "cpu", "ref", "gpu", "nnapi", "edgetpu", "hexagon", "armnn", "qnn")
INPUT_SOURCE = re.compile(r"^(zeros|ones|random|-?\d+(\.\d+)?([eE]-?\d+)?)\Z")
SHAPE_ARG = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}=(scalar|\d+(x\d+){0,7})\Z")
SETTINGS_LIMITS = {  # bench run-length options a job may set, with their allowed range
    "min_runs": (1, 1_000_000), "min_duration_s": (0.0, 3600.0), "max_duration_s": (0.01, 86400.0),
    "warmup_runs": (0, 100_000), "warmup_duration_s": (0.0, 3600.0),
    "profile_runs": (0, 100_000),  # bench --profile-ops: inferences under the runtime's per-op profiler (0: none)
}
MAX_JOB_TIMEOUT_S = 7 * 86400.0
DEFAULT_JOB_TIMEOUT_S = 3600.0  # a job that sets no timeout_s: the agent's --job-timeout default
DRIFT_NUMBERS = ("max_abs_err", "mean_abs_err", "cosine_mean", "top1_agreement", "samples")  # a result's drift
DRIFT_SAMPLES = 8  # input sets a job's drift is measured on
# A language model's generation (agent/engine/generate.py): what a job sets (never a prompt file: jobs carry no
# paths, so every board reads the prompt text shipped with edgebench), and the numbers its result carries
GENERATION_SETTINGS = ("prompt_tokens", "gen_tokens")
MAX_GENERATION_TOKENS = 1 << 20  # the engine's own bound (generate.MAX_TOKENS): beyond any model's context
GENERATION_METRICS = ("ttft_ms", "prefill_tok_s", "decode_tok_s")  # each {estimate, unit, per_repeat, ci, rerun}


class ProtocolError(ValueError):
    """A payload or topic that breaks the protocol; the message is the reason (stored with dead letters)."""


@dataclass
class Message:
    device: str
    kind: str  # one of DEVICE_TOPICS / SERVER_TOPICS
    payload: dict


# ---------------------------------------------------------------- topics

def topic(device: str, kind: str) -> str:
    check_device_id(device)
    if kind not in DEVICE_TOPICS + SERVER_TOPICS:
        raise ProtocolError(f"unknown topic kind {kind!r}")
    return f"{ROOT}/devices/{device}/{kind}"


def wildcard(kind: str) -> str:
    """Subscription filter for one kind from every device."""
    return f"{ROOT}/devices/+/{kind}"


def parse_topic(name: str) -> tuple[str, str]:
    """``edgebench/v1/devices/{device}/{kind}`` -> (device, kind)."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/devices":
        raise ProtocolError(f"topic {name!r} is not under {ROOT}/devices/{{device}}/{{kind}}")
    device, kind = parts[3], parts[4]
    check_device_id(device)
    if kind not in DEVICE_TOPICS + SERVER_TOPICS:
        raise ProtocolError(f"unknown topic kind {kind!r}")
    return device, kind


def check_device_id(device: object) -> str:
    if not isinstance(device, str) or not DEVICE_ID.match(device):
        raise ProtocolError(f"invalid device id {str(device)[:80]!r} (letters, digits, _.- ; at most 64)")
    return device


# ---------------------------------------------------------------- encode / decode

def encode(kind: str, payload: dict) -> bytes:
    """JSON bytes for a payload, refusing what the receiver would refuse (NaN, oversize)."""
    try:
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:  # NaN or Infinity (json says "Out of range float values are not JSON compliant")
        raise ProtocolError(f"{kind} payload: {exc}") from None
    limit = MAX_PAYLOAD[kind]
    if len(data) > limit:
        raise ProtocolError(f"{kind} payload is {len(data)} bytes; the limit is {limit}")
    return data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a valid number in a payload")


def _finite_float(text: str) -> float:
    """json's float parser, refusing what overflows to infinity (``1e999``; orjson refuses it as well)."""
    value = float(text)
    if not math.isfinite(value):
        _reject_constant(text[:40])
    return value


def decode(kind: str, data: bytes, loads: Optional[Callable[[bytes], Any]] = None) -> dict:
    """``loads``: a faster strict JSON parser (the collector passes orjson.loads when it is installed). Whatever it
    refuses is parsed again by the standard library, so the outcome and the reason are the same either way."""
    limit = MAX_PAYLOAD.get(kind, 4096)
    if len(data) > limit:
        raise ProtocolError(f"{kind} payload is {len(data)} bytes; the limit is {limit}")
    payload = None
    if loads is not None:
        try:
            payload = loads(data)
        except ValueError:
            payload = None
    if payload is None:
        try:  # strict UTF-8: json.loads(bytes) would take UTF-16/32 and the bytes of lone surrogates too
            text = data.decode() if isinstance(data, (bytes, bytearray)) else data
            payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
            if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # a lone "\ud800": no text UTF-8 can carry
                json.dumps(payload, ensure_ascii=False).encode()
        except ProtocolError:
            raise
        except ValueError as exc:  # not UTF-8 or JSON, a lone surrogate, an integer over int()'s 4300 digits
            raise ProtocolError(f"payload is not JSON: {exc}") from None
        except RecursionError:  # nesting deeper than the parser's stack: orjson stops at 1024 levels itself
            raise ProtocolError("payload is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ProtocolError("payload is not a JSON object")
    return payload


def validate(topic_name: str, data: bytes, loads: Optional[Callable[[bytes], Any]] = None) -> Message:
    """Decode and check one message against the topic it came on; raises ProtocolError with the reason."""
    device, kind = parse_topic(topic_name)
    payload = decode(kind, data, loads)
    version = payload.get("v")
    if type(version) is not int or version != VERSION:  # type(): true and 1.0 are not version 1
        raise ProtocolError(f"unsupported protocol version {str(version)[:20]!r} (expected {VERSION})")
    if payload.get("device") != device:
        raise ProtocolError(f"payload device {str(payload.get('device'))[:80]!r} does not match topic device "
                            f"{device!r}")
    _number(payload, "ts", minimum=0, maximum=MAX_TS)
    _text(payload, "msg_id", MSG_ID, required=False)
    VALIDATORS[kind](payload)
    return Message(device=device, kind=kind, payload=payload)


# ---------------------------------------------------------------- field checks

def _field(payload: dict, key: str, kind: type | tuple, required: bool = True) -> Any:
    value = payload.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"missing field {key!r}")
        return None
    if isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"field {key!r} must be {getattr(kind, '__name__', kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ProtocolError(f"field {key!r} has the wrong type {type(value).__name__}")
    return value


def _finite(value: float) -> bool:
    """Not NaN or infinite; an integer beyond a double's range counts as infinite (orjson reads it so, and it
    cannot be stored as a float): math.isfinite would raise OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(payload: dict, key: str, required: bool = True, minimum: Optional[float] = None,
            maximum: Optional[float] = None) -> Optional[float]:
    value = _field(payload, key, (int, float), required)
    if value is None:
        return None
    if not _finite(value):
        raise ProtocolError(f"field {key!r} is not finite")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"field {key!r} = {value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise ProtocolError(f"field {key!r} = {value} is above {maximum}")
    return value


def _text(payload: dict, key: str, pattern: Optional[re.Pattern] = None, required: bool = True,
          max_len: int = 256) -> Optional[str]:
    value = _field(payload, key, str, required)
    if value is None:
        return None
    if len(value) > max_len or (pattern is not None and not pattern.match(value)):
        raise ProtocolError(f"field {key!r} has an invalid value {value[:80]!r}")
    return value


def check_labels(labels: object) -> dict:
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ProtocolError(f"labels must be an object of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if not LABEL_KEY.match(key) or not isinstance(value, str) or not LABEL_VALUE.match(value):
            raise ProtocolError(f"invalid label {str(key)[:40]!r}={str(value)[:40]!r}")  # repr: one line
    return labels


def parse_labels(text: str) -> dict:
    """``class=rpi5,site=lab2`` -> dict, checked."""
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ProtocolError(f"label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return check_labels(labels)


def _where(path: str) -> str:
    """A path made of a payload's keys, for a reason: one line (ascii() escapes control characters), bounded."""
    return ascii(path)[1:-1][:200]


def _finite_tree(value: object, path: str, depth: int = 0) -> None:
    """No NaN/Infinity anywhere and bounded nesting (json.loads already refused NaN literals)."""
    if depth > 12:
        raise ProtocolError(f"{_where(path)} is nested too deeply")
    if isinstance(value, (float, int)) and not _finite(value):
        raise ProtocolError(f"{_where(path)} is not finite")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_tree(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _finite_tree(item, f"{path}[{index}]", depth + 1)


# ---------------------------------------------------------------- per-kind schemas

def _status(payload: dict) -> None:
    state = _text(payload, "state")
    if state not in STATES:
        raise ProtocolError(f"state must be one of {STATES}")
    _text(payload, "agent_version", required=False, max_len=64)
    if payload.get("labels") is not None:
        check_labels(payload["labels"])


def _inventory(payload: dict) -> None:
    check_labels(_field(payload, "labels", dict))
    _field(payload, "device_facts", dict)
    runtimes = _field(payload, "runtimes", list)
    if not all(isinstance(name, str) and NAME.match(name) for name in runtimes):
        raise ProtocolError("runtimes must be a list of names")
    _finite_tree(payload, "inventory")


HEARTBEAT_COUNTERS = ("unacked", "resent", "refused")  # the outbox's delivery state (agent/fleet/outbox.py)


def _heartbeat(payload: dict) -> None:
    _number(payload, "uptime_s", minimum=0)
    _number(payload, "outbox_depth", minimum=0, maximum=MAX_INT)
    _number(payload, "telemetry_dropped", minimum=0, maximum=MAX_INT)
    for key in HEARTBEAT_COUNTERS:
        _number(payload, key, required=False, minimum=0, maximum=MAX_INT)
    _text(payload, "job_id", JOB_ID, required=False)
    _number(payload, "temp_max_c", required=False, minimum=-273.15, maximum=1000)  # the board's hottest reading


_READING_NAMES: set = set()  # names already checked against LABEL_KEY (telemetry repeats the same few)


def _reading(key: object, value: object) -> None:
    if key not in _READING_NAMES:
        if not isinstance(key, str) or not LABEL_KEY.match(key) or key == "time":  # time: InfluxDB refuses it
            raise ProtocolError(f"invalid reading name {str(key)[:40]!r}")
        if len(_READING_NAMES) < 4096:
            _READING_NAMES.add(key)
    if type(value) not in (float, int) or not _finite(value):  # type(): booleans are not readings
        raise ProtocolError(f"reading {key!r} is not a finite number")


def _telemetry(payload: dict) -> None:
    # The collector's hot path (many samples per message): plain loops rather than the generic field checks.
    samples = _field(payload, "samples", list)
    if not samples or len(samples) > MAX_TELEMETRY_SAMPLES:
        raise ProtocolError(f"samples must hold 1 to {MAX_TELEMETRY_SAMPLES} entries")
    for sample in samples:
        if not isinstance(sample, dict):
            raise ProtocolError("each telemetry sample must be an object")
        ts, readings = sample.get("ts"), sample.get("readings")
        if type(ts) not in (float, int) or not 0 <= ts <= MAX_TS:  # NaN fails the comparison too
            raise ProtocolError("sample ts must be a number of seconds between 0 and the year 2262")
        if not isinstance(readings, dict) or not 0 < len(readings) <= 64:
            raise ProtocolError("readings must hold 1 to 64 values")
        if not readings.keys() <= _READING_NAMES:  # names seen before need no regex (a set operation in C)
            for key in readings:
                _reading(key, 0.0)
        try:
            for value in readings.values():
                if (type(value) is not float and type(value) is not int) or not isfinite(value):  # no booleans
                    raise ProtocolError(f"reading {next(k for k, v in readings.items() if v is value)!r} is not a "
                                        f"finite number")
        except OverflowError:  # an integer beyond a double's range (the hot path: no _finite call per reading)
            raise ProtocolError("a reading is not a finite number") from None


STATS_KEYS = ("count", "min_ms", "mean_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput_ips")


def _result(payload: dict) -> None:
    _text(payload, "run_id", JOB_ID)
    _number(payload, "finished_ts", required=False, minimum=0, maximum=MAX_TS)
    samples = _field(payload, "samples", dict, required=False)
    if samples is not None:
        latency = _field(samples, "latency_ns", list)
        if len(latency) > MAX_RESULT_SAMPLES:
            raise ProtocolError(f"samples.latency_ns holds {len(latency)} values; at most {MAX_RESULT_SAMPLES}")
        if not all(type(x) is int and 0 <= x <= MAX_INT for x in latency):  # type(): no booleans, no floats
            raise ProtocolError("samples.latency_ns must be non-negative integers (int64)")
        _number(samples, "total", required=False, minimum=len(latency), maximum=MAX_INT)
    summary = _field(payload, "summary", dict)
    stats = _field(summary, "stats", dict)
    for key in STATS_KEYS:
        _number(stats, key, required=key in ("count", "p50_ms"), minimum=0, maximum=MAX_INT if key == "count" else None)
    if stats["count"] < 1:
        raise ProtocolError("a result needs at least one measured run")
    _tag_fields(_field(summary, "model", dict), _field(summary, "runtime", dict))
    _number(summary["model"], "size_bytes", required=False, minimum=0, maximum=MAX_INT)
    for key in ("timing", "memory", "validity", "physics"):  # the sections the result's fields are read from
        _field(summary, key, dict, required=False)
    for key in ("energy", "throttling"):
        _field(summary.get("physics") or {}, key, dict, required=False)
    _finite_tree(summary, "summary")
    interval = _field(stats, "interval", dict, required=False)
    if interval is not None:
        check_interval(interval, "summary.stats.interval")
    _integer(summary, "repeats", 1, MAX_RESULT_UNITS, required=False)
    interleave = _field(summary, "interleave", dict, required=False)
    if interleave is not None:
        check_interleave(interleave)
    placement = _field(summary, "placement", dict, required=False)
    if placement is not None:
        check_placement(placement, "summary.placement")
    ops = _field(summary, "ops", dict, required=False)
    if ops is not None:
        check_ops(ops, "summary.ops")
    generation = _field(summary, "generation", dict, required=False)
    if generation is not None:
        check_generation(generation, "summary.generation", repeats=summary.get("repeats"))
    drift = _field(payload, "drift", dict, required=False)
    if drift is not None:
        check_drift(drift)


# A result's placement and per-op summary (docs/protocol.md): bounded lists of the report's own rows
MAX_RESULT_OP_ROWS = 20  # placement.fallback_ops and ops.by_type rows a result carries at most (the largest first)
MAX_PLACEMENT_BACKENDS = 16  # placement.backends a result carries at most (the chain's first choice first)
MAX_MODEL_NODES = 10_000_000  # a model's nodes (placement.nodes) at most, and so every count of nodes
SHARE_SLACK = 1e-6  # rounding allowed where shares add up to 1 or coverage is a ratio of two counts


def _op_row_name(row: dict, key: str) -> str:
    """An op type or backend name of a row: it becomes an InfluxDB tag (edgebench_op_type, edgebench_placement)."""
    return _text(row, key, TAG_TEXT, max_len=128)


def _rows(section: dict, key: str, max_rows: int) -> list:
    rows = _field(section, key, list, required=False) or []
    if len(rows) > max_rows:
        raise ProtocolError(f"{key} holds {len(rows)} rows; at most {max_rows}")
    if not all(isinstance(row, dict) for row in rows):
        raise ProtocolError(f"{key} rows must be objects")
    return rows


def check_placement(placement: dict, where: str = "placement", max_rows: int = MAX_RESULT_OP_ROWS) -> dict:
    """A run's placement (the report's, edgebench.agent.engine.ops.summarize_placement; a result carries it without
    ``per_node``, its ``fallback_ops`` capped, see ``summarize_report``): names that can be tags, counts of nodes
    within the model's, and a ``coverage`` in [0, 1] that is what its backends say (the first choice's nodes over
    the model's). Release gates judge that coverage, so a board cannot claim a delegate it fell back from."""
    try:
        _text(placement, "source", TAG_TEXT, required=False, max_len=128)
        first = _op_row_name(placement, "first_choice")
        nodes = _integer(placement, "nodes", 0, MAX_MODEL_NODES)
        coverage = _number(placement, "coverage", required=False, minimum=0, maximum=1)
        _text(placement, "note", required=False, max_len=2000)
        backends = _rows(placement, "backends", MAX_PLACEMENT_BACKENDS)
        for row in backends:
            _op_row_name(row, "name")
            taken = _integer(row, "nodes", 0, nodes)
            _integer(row, "partitions", 0, taken)
        names = [row["name"] for row in backends]
        if len(set(names)) != len(names):
            raise ProtocolError("backends name one backend twice")
        if sum(row["nodes"] for row in backends) > nodes:
            raise ProtocolError(f"backends hold more nodes than the model's {nodes}")
        on_first = sum(row["nodes"] for row in backends if row["name"] == first)
        if coverage is not None and (nodes == 0 or abs(coverage - on_first / nodes) > SHARE_SLACK):
            raise ProtocolError(f"coverage {coverage} is not the first choice's {on_first} of {nodes} nodes")
        fallback = _rows(placement, "fallback_ops", max_rows)
        for row in fallback:
            _op_row_name(row, "op")
            if _op_row_name(row, "backend") == first:
                raise ProtocolError("fallback_ops name the first choice")
            _integer(row, "count", 1, nodes)
        if sum(row["count"] for row in fallback) > nodes - on_first:
            raise ProtocolError(f"fallback_ops count more nodes than the {nodes - on_first} off the first choice")
        _integer(placement, "fallback_types", len(fallback), MAX_MODEL_NODES, required=False)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    return placement


def check_ops(ops: dict, where: str = "ops", max_rows: int = MAX_RESULT_OP_ROWS) -> dict:
    """A run's per-op profile (the report's ``ops``, edgebench.agent.engine.ops.summarize_ops; a result carries it
    without ``nodes`` and ``top``, its ``by_type`` capped): the profiler's cost and coverage as finite non-negative
    numbers, and op-type rows whose names can be tags, whose counts are counts and whose shares add up to at most 1."""
    try:
        unavailable = _text(ops, "unavailable", required=False, max_len=1000)
        _text(ops, "source", TAG_TEXT, required=False, max_len=128)
        _integer(ops, "runs", 0, MAX_INT)
        for key in ("profiled_p50_ms", "measured_p50_ms", "overhead", "sum_ms", "accounted"):
            _number(ops, key, required=False, minimum=0)
        _text(ops, "note", required=False, max_len=2000)
        rows = _rows(ops, "by_type", max_rows)
        if unavailable is not None and rows:
            raise ProtocolError("by_type rows with no profiler (unavailable)")
        for row in rows:
            _op_row_name(row, "op")
            _op_row_name(row, "backend")
            _integer(row, "count", 1, MAX_MODEL_NODES)
            _number(row, "total_us", minimum=0)
            _number(row, "share", minimum=0, maximum=1)
        if len({(row["op"], row["backend"]) for row in rows}) != len(rows):
            raise ProtocolError("by_type names one op type on one backend twice")
        if sum(row["share"] for row in rows) > 1 + SHARE_SLACK:
            raise ProtocolError("by_type shares add up to more than 1")
        _integer(ops, "types", len(rows), MAX_MODEL_NODES, required=False)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    return ops


INTERVAL_METHODS = ("between-repeats", "batch-means")
INTERVAL_PERCENTILES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms")


def _positive_pair(value: object, where: str) -> None:
    if value is None:
        return
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) in (int, float) and _finite(v) and v > 0
                                                                 for v in value) and value[0] <= value[1]):
        raise ProtocolError(f"{where} must be [low, high]: two finite positive numbers, low <= high")


def check_interval(interval: dict, where: str = "interval", max_units: int = MAX_RESULT_UNITS) -> dict:
    """A run's ``stats.interval`` (edgebench.agent.engine.stats.interval_summary): its method, the number of units,
    and per percentile the estimate, the units' values (``per_unit``: finite, positive, one per unit, at most
    ``max_units``) and the intervals. Keys not named here are left alone (the section may grow)."""
    if interval.get("method") not in INTERVAL_METHODS:
        raise ProtocolError(f"{where}.method must be one of {INTERVAL_METHODS}")
    units = _integer(interval, "units", 0, max_units)
    _number(interval, "confidence", required=False, minimum=0.5, maximum=0.9999)
    _number(interval, "drift_pct", required=False, minimum=-100.0)
    _number(interval, "unit_spread_pct", required=False, minimum=0)
    for key in INTERVAL_PERCENTILES:
        entry = interval.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where}.{key} must be an object or null")
        _number(entry, "estimate", minimum=0)
        _number(entry, "pooled", required=False, minimum=0)
        per_unit = _field(entry, "per_unit", list)
        if len(per_unit) != units:
            raise ProtocolError(f"{where}.{key}.per_unit holds {len(per_unit)} values for {units} units")
        if not all(type(v) in (int, float) and _finite(v) and v > 0 for v in per_unit):  # type(): no booleans
            raise ProtocolError(f"{where}.{key}.per_unit must hold finite positive numbers")
        _positive_pair(entry.get("ci"), f"{where}.{key}.ci")
        _positive_pair(entry.get("rerun"), f"{where}.{key}.rerun")
    if interval.get("history") is not None:
        check_history(interval["history"], f"{where}.history")
    return interval


MAX_HISTORY_RUNS = 1000


def check_history(history: object, where: str = "history") -> dict:
    """A run's ``stats.interval.history`` (agent/engine/history.py): the runs of its configuration on its machine,
    and a finite non-negative between-run spread per percentile. Release gates widen their intervals by it, so what
    a board (or a hand-edited report) sends must not be a way to narrow or break them."""
    if not isinstance(history, dict):
        raise ProtocolError(f"{where} must be an object")
    runs = history.get("runs")
    if type(runs) is not int or not 1 <= runs <= MAX_HISTORY_RUNS:
        raise ProtocolError(f"{where}.runs must be a count from 1 to {MAX_HISTORY_RUNS}")
    spreads = history.get("between_run_sd")
    if not isinstance(spreads, dict) or not all(
            key in INTERVAL_PERCENTILES and type(v) in (int, float) and _finite(v) and v >= 0
            for key, v in spreads.items()):
        raise ProtocolError(f"{where}.between_run_sd must map percentiles ({', '.join(INTERVAL_PERCENTILES)}) to "
                            "finite non-negative numbers")
    return history


def check_interleave(interleave: dict) -> dict:
    """``{group, slot}``: the interleaved run a result belongs to and its slot there (paired release gates)."""
    _text(interleave, "group", TAG_TEXT, max_len=128)
    slot = interleave.get("slot")
    if not ((type(slot) is int and 0 <= slot <= 1_000_000) or (isinstance(slot, str) and TAG_TEXT.match(slot)
                                                               and len(slot) <= 64)):
        raise ProtocolError("interleave.slot must be an integer from 0 to 1000000 or a short name")
    return interleave


RELATIVE_SLACK = 1e-9  # rounding allowed where an estimate sits at an end of its values or of its interval


def _around(estimate: float, low: float, high: float) -> bool:
    return low * (1 - RELATIVE_SLACK) <= estimate <= high * (1 + RELATIVE_SLACK)


def _generation_metric(entry: object, where: str, max_units: int, repeats: Optional[int]) -> None:
    """One of GENERATION_METRICS: a finite positive estimate among its repeats' finite positive values (one per
    repeat, at most ``max_units``), inside its intervals."""
    if not isinstance(entry, dict):
        raise ProtocolError(f"{where} must be an object")
    try:
        estimate = _number(entry, "estimate", minimum=0)
        _text(entry, "unit", required=False, max_len=16)
        values = _field(entry, "per_repeat", list)
        if not 1 <= len(values) <= max_units:
            raise ProtocolError(f"per_repeat holds {len(values)} values; 1 to {max_units}")
        if repeats is not None and len(values) != repeats:
            raise ProtocolError(f"per_repeat holds {len(values)} values for {repeats} repeats")
        if not all(type(v) in (int, float) and _finite(v) and v > 0 for v in values):  # type(): no booleans
            raise ProtocolError("per_repeat must hold finite positive numbers")
        if not _around(estimate, min(values), max(values)):
            raise ProtocolError(f"estimate {estimate} is not among its repeats' values ({min(values)} to "
                                f"{max(values)})")
        for key in ("ci", "rerun"):
            _positive_pair(entry.get(key), key)
            if entry.get(key) is not None and not _around(estimate, *entry[key]):
                raise ProtocolError(f"{key} {entry[key]} does not hold the estimate {estimate}")
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def check_generation(generation: dict, where: str = "generation", max_units: int = MAX_RESULT_UNITS,
                     repeats: Optional[int] = None) -> dict:
    """A language model's generation numbers (the report's ``generation``, agent/engine/generate.py; a result
    carries it without its tokens, see ``generation_summary``): token counts within bounds, and TTFT, prefill and
    decode tokens/s each with one value per repeat (``repeats``, when the result says how many), an estimate among
    them and intervals around it; inter-token percentiles non-negative, energy finite. Release gates judge
    these numbers, so a board cannot claim a speed its repeats do not show. Keys not named here are left alone."""
    try:
        for key in GENERATION_SETTINGS:
            _integer(generation, key, 1, MAX_GENERATION_TOKENS)
        _integer(generation, "context", 1, 2 * MAX_GENERATION_TOKENS, required=False)
        _integer(generation, "kv_cache_bytes", 0, MAX_INT, required=False)
        _text(generation, "sampling", TAG_TEXT, required=False, max_len=32)
        _field(generation, "same_tokens_every_repeat", bool, required=False)
        # net of the idle baseline, as energy_per_inference_mj: a noisy baseline may leave it below 0, honestly
        _number(generation, "energy_per_token_mj", required=False)
        _number(generation, "prefill_energy_per_token_mj", required=False)
        inter_token = _field(generation, "inter_token_ms", dict, required=False) or {}
        for key in inter_token:
            _number(inter_token, key, required=False, minimum=0)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    for metric in GENERATION_METRICS:
        _generation_metric(generation.get(metric), f"{where}.{metric}", max_units, repeats)
    return generation


def _tag_fields(model: dict, runtime: dict) -> None:
    """The summary's fields that become InfluxDB tags: text without control characters or backslashes (which
    line protocol cannot carry in a tag), of the right types."""
    _text(model, "name", TAG_TEXT, required=False)
    _text(model, "format", TAG_TEXT, required=False)
    _text(model, "sha256", SHA256, required=False)
    _text(runtime, "runtime", TAG_TEXT, required=False)
    used = runtime.get("used")
    if used is not None and not (isinstance(used, str) and TAG_TEXT.match(used)) and not (
            isinstance(used, list) and len(used) <= 16 and all(isinstance(u, str) and TAG_TEXT.match(u) for u in used)):
        raise ProtocolError("summary.runtime.used must be a name or a list of at most 16 names")
    requested = runtime.get("requested")  # the chain asked for: a text field, and compared with what ran
    if requested is not None and not isinstance(requested, str) and not (
            isinstance(requested, list) and all(isinstance(r, str) for r in requested)):
        raise ProtocolError("summary.runtime.requested must be a name or a list of names")
    _integer(runtime, "threads", 1, 1024, required=False)


def check_drift(drift: dict) -> dict:
    """A result's drift against the job's reference: finite numbers, or the reason it could not be measured."""
    unknown = set(drift) - set(DRIFT_NUMBERS) - {"reference_sha", "error"}
    if unknown:
        raise ProtocolError(f"drift: unknown key(s) {sorted(unknown)[:5]}")
    _text(drift, "reference_sha", SHA256)
    error = _text(drift, "error", required=False, max_len=2000)
    for key in DRIFT_NUMBERS:
        limits = {"samples": (1, 1_000_000), "cosine_mean": (-1.000001, 1.000001),
                  "top1_agreement": (0, 1)}.get(key, (0, None))
        _number(drift, key, required=error is None and key != "top1_agreement", minimum=limits[0],
                maximum=limits[1])
    return drift


def _events(payload: dict) -> None:
    kind = _text(payload, "event")
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"event must be one of {EVENT_KINDS}")
    _text(payload, "job_id", JOB_ID)
    _number(payload, "seq", required=False, minimum=0)
    if payload.get("labels") is not None:  # any event's: the collector merges them into the device's labels
        check_labels(payload["labels"])
    if kind == "result":
        _result(payload)
    elif kind in ("error", "rejected"):
        _text(payload, "reason", max_len=2000)
    elif kind == "progress":
        _text(payload, "phase", NAME)
        _number(payload, "runs", minimum=0)
        _number(payload, "elapsed_s", minimum=0)


def check_job(payload: dict) -> None:
    """A job is declarative: a model by sha256, a runtime and delegates by name, generated inputs, bounded numbers."""
    _text(payload, "job_id", JOB_ID)
    _text(payload, "batch_id", required=False)  # informational, but text: a job must encode again (no NaN)
    model = _field(payload, "model", dict)
    _text(model, "sha256", SHA256)
    _number(model, "size_bytes", minimum=1, maximum=MAX_MODEL_BYTES)
    _text(model, "name", NAME, required=False)
    url = _text(model, "url", required=False, max_len=1024)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ProtocolError("model.url must be http(s)")
    _text(payload, "reference", SHA256, required=False)  # a sha256 only: fetched from the same model store
    reference_url = _text(payload, "reference_url", required=False, max_len=1024)
    if reference_url is not None and not reference_url.startswith(("http://", "https://")):
        raise ProtocolError("reference_url must be http(s)")
    runtime = _text(payload, "runtime", required=False)
    if runtime is not None and runtime not in RUNTIMES:
        raise ProtocolError(f"runtime {runtime!r} is not one of {RUNTIMES} (plugins are not allowed in jobs)")
    for key, allowed in (("delegates", DELEGATES), ("providers", None)):
        names = _field(payload, key, list, required=False) or []
        for name in names:
            if not isinstance(name, str) or not NAME.match(name) or (allowed and name not in allowed):
                raise ProtocolError(f"{key}: {str(name)[:80]!r} is not allowed in a job")
    _number(payload, "threads", required=False, minimum=1, maximum=1024)
    check_cpus(_field(payload, "cpus", list, required=False))
    _integer(payload, "repeats", 1, MAX_JOB_REPEATS, required=False)
    group = _field(payload, "group", list, required=False)
    if group is not None and (len(group) > MAX_JOB_GROUP or payload.get("job_id") not in group
                              or any(not isinstance(g, str) or not JOB_ID.match(g) for g in group)):
        raise ProtocolError(f"group must list at most {MAX_JOB_GROUP} job ids, this job's among them")
    _number(payload, "seed", required=False, minimum=0, maximum=2**31)
    for key, pattern in (("shape", SHAPE_ARG), ("input", None)):
        for arg in _field(payload, key, list, required=False) or []:
            if not isinstance(arg, str) or len(arg) > 160:
                raise ProtocolError(f"{key} entries must be strings")
            if pattern is not None and not pattern.match(arg):
                raise ProtocolError(f"{key} {arg[:80]!r} is not NAME=DIMS")
            if key == "input" and not INPUT_SOURCE.match(arg.rpartition("=")[2]):
                raise ProtocolError(f"input {arg[:80]!r}: jobs may only use zeros, ones, random or a number")
    settings = _field(payload, "settings", dict, required=False) or {}
    for key in settings:
        if key not in SETTINGS_LIMITS:
            raise ProtocolError(f"settings.{_where(key)} is not a bench setting")
        low, high = SETTINGS_LIMITS[key]
        _number(settings, key, minimum=low, maximum=high)
    check_generation_settings(_field(payload, "generation", dict, required=False))
    _number(payload, "timeout_s", required=False, minimum=1, maximum=MAX_JOB_TIMEOUT_S)
    _field(payload, "sensors", bool, required=False)
    if payload.get("labels") is not None:
        check_labels(payload["labels"])


def check_generation_settings(generation: Optional[dict]) -> Optional[dict]:
    """A job's ``generation``: token counts only, integers from 1 to MAX_GENERATION_TOKENS. A prompt file is a path
    on the engineer's machine, which a job never carries."""
    if generation is None:
        return None
    unknown = set(generation) - set(GENERATION_SETTINGS)
    if unknown:
        raise ProtocolError(f"generation.{_where(str(sorted(unknown)[0]))} is not a job's generation setting (one of "
                            f"{', '.join(GENERATION_SETTINGS)}; a job carries no files)")
    for key in GENERATION_SETTINGS:
        _integer(generation, key, 1, MAX_GENERATION_TOKENS, required=False)
    return generation


MAX_CPUS = 1024  # a job's cpus: at most this many CPU ids, each below it (a kernel's CPU_SETSIZE)
MAX_JOB_REPEATS = 1000  # a job's repeats (bench --repeats): a result carries at most this many units
MAX_JOB_GROUP = 8  # jobs of one model on one board whose repeats run interleaved in one process


def check_cpus(cpus: Optional[list]) -> Optional[list]:
    """A job's ``cpus``: non-negative integers below MAX_CPUS, at most MAX_CPUS of them. Whether the board has
    them is the board's to say (the engine refuses a CPU it does not have, as bench --cpus does)."""
    if cpus is None:
        return None
    if len(cpus) > MAX_CPUS or not all(type(c) is int and 0 <= c < MAX_CPUS for c in cpus):  # type(): no booleans
        raise ProtocolError(f"cpus must be a list of at most {MAX_CPUS} CPU ids, integers from 0 to {MAX_CPUS - 1}")
    return cpus


# ---------------------------------------------------------------- the job, typed

# what a push asks of every job of its matrix (the API matrix's "options")
JOB_OPTIONS = ("settings", "shape", "input", "seed", "sensors", "timeout_s", "providers", "cpus", "repeats",
               "generation")


@dataclass
class JobModel:
    sha256: str
    size_bytes: int
    name: Optional[str] = None  # display name (the cache names the file by its sha256)
    url: Optional[str] = None  # http(s) download URL; None: the agent's --model-url, or over MQTT


@dataclass
class Job:
    """One fleet job, the one shape every side uses: the collector builds it (server/api.py), it travels as the
    payload of a ``jobs`` message (``to_payload``/``from_payload``, checked by ``check_job``), the agent stores and
    runs it (fleet/daemon.py), and the job process turns it into a bench request (fleet/jobrunner.py). What an
    engineer asks of every job of a push is the API matrix's ``options``: exactly the fields named in JOB_OPTIONS."""

    job_id: str
    device: str
    model: JobModel
    batch_id: Optional[str] = None
    runtime: Optional[str] = None  # litert, onnxruntime; None: from the model's format
    delegates: list = field(default_factory=list)  # one chain, tried in order
    providers: list = field(default_factory=list)
    threads: Optional[int] = None
    cpus: list = field(default_factory=list)  # CPU ids the benchmark process is pinned to (bench --cpus); []: none
    repeats: int = 1  # fresh benchmark processes, one after the other (bench --repeats): the result's units
    seed: int = 0
    shape: list = field(default_factory=list)  # NAME=DIMS
    input: list = field(default_factory=list)  # NAME=zeros|ones|random|<number>
    settings: dict = field(default_factory=dict)  # RunSettings fields within SETTINGS_LIMITS
    timeout_s: Optional[float] = None  # None: the agent's --job-timeout (DEFAULT_JOB_TIMEOUT_S)
    sensors: bool = True
    labels: dict = field(default_factory=dict)  # what the result carries (release=v1.5.0)
    reference: Optional[str] = None  # sha256 of the model drift is measured against
    reference_url: Optional[str] = None  # where the collector serves it (None: derived from model.url, or MQTT)
    group: list = field(default_factory=list)  # job ids (this one included) whose repeats the board interleaves
    generation: dict = field(default_factory=dict)  # a language model's prompt_tokens, gen_tokens; {}: the defaults

    def to_payload(self, ts: float) -> dict:
        """The ``jobs`` message: the envelope and every field that is set; checked as the agent will check it."""
        body = {k: v for k, v in asdict(self).items() if k != "device" and v not in (None, [], {})}
        body["model"] = {k: v for k, v in body["model"].items() if v is not None}
        payload = envelope(self.device, ts, **body)
        check_job(payload)
        return payload

    @classmethod
    def from_payload(cls, payload: dict) -> Job:
        check_job(payload)
        check_device_id(payload.get("device"))  # the envelope's: validate checked it, a bare payload may lack it
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known and v is not None}
        values["model"] = JobModel(**{k: v for k, v in payload["model"].items()
                                      if k in {f.name for f in fields(JobModel)}})
        return cls(**values)


def _cancel(payload: dict) -> None:
    _text(payload, "job_id", JOB_ID)


def _integer(payload: dict, key: str, minimum: int, maximum: int, required: bool = True) -> Optional[int]:
    value = _number(payload, key, required=required, minimum=minimum, maximum=maximum)
    if value is not None and type(value) is not int:
        raise ProtocolError(f"field {key!r} must be an integer")
    return value


def _model_request(payload: dict) -> None:
    """A device asks for ``length`` bytes of model ``sha256`` from ``offset`` (answered in model-chunk messages)."""
    _text(payload, "sha256", SHA256)
    _integer(payload, "offset", 0, MAX_MODEL_BYTES)
    _integer(payload, "length", 1, MODEL_WINDOW_BYTES)


def chunk_data(payload: dict) -> bytes:
    """The raw bytes of a validated model-chunk (empty for an error)."""
    data = payload.get("data")
    return base64.b64decode(data, validate=True) if data else b""


def _model_chunk(payload: dict) -> None:
    """One chunk of a model (``offset``, ``total``, ``data`` base64) or ``error`` (unknown model, bad range)."""
    _text(payload, "sha256", SHA256)
    offset = _integer(payload, "offset", 0, MAX_MODEL_BYTES)
    if _text(payload, "error", required=False, max_len=500) is not None:
        return
    total = _integer(payload, "total", 1, MAX_MODEL_BYTES)
    text = _field(payload, "data", str)
    if len(text) > 4 * ((MODEL_CHUNK_BYTES + 2) // 3):
        raise ProtocolError(f"data holds more than {MODEL_CHUNK_BYTES} bytes")
    try:
        data = chunk_data(payload)
    except (binascii.Error, ValueError):
        raise ProtocolError("data is not base64") from None
    if not data or offset + len(data) > total:
        raise ProtocolError(f"chunk {offset}+{len(data)} is empty or beyond the model's {total} bytes")


def _acks(payload: dict) -> None:
    """Outbox messages the collector stored (``ids``) or refused for good (``refused``: ``[{id, reason}]``)."""
    ids = _field(payload, "ids", list)
    refused = _field(payload, "refused", list, required=False) or []
    if len(ids) + len(refused) > MAX_ACK_IDS:
        raise ProtocolError(f"an acks message carries at most {MAX_ACK_IDS} ids")
    if not all(isinstance(i, str) and MSG_ID.match(i) for i in ids):
        raise ProtocolError("ids must be message ids")
    for entry in refused:
        if not isinstance(entry, dict):
            raise ProtocolError("refused entries must be objects")
        _text(entry, "id", MSG_ID)
        _text(entry, "reason", max_len=1000)


VALIDATORS: dict[str, Callable[[dict], None]] = {
    STATUS: _status, INVENTORY: _inventory, HEARTBEAT: _heartbeat, TELEMETRY: _telemetry, EVENTS: _events,
    JOBS: check_job, CANCEL: _cancel, MODEL_REQUEST: _model_request, MODEL_CHUNK: _model_chunk, ACKS: _acks,
}


# ---------------------------------------------------------------- builders

def envelope(device: str, ts: float, **fields: Any) -> dict:
    return {"v": VERSION, "device": device, "ts": ts, **fields}


def new_msg_id() -> str:
    """A fresh outbox message id: random, so a wiped agent database never reuses one the collector has seen."""
    return secrets.token_hex(16)


def msg_id_of(data: bytes, loads: Optional[Callable[[bytes], Any]] = None) -> Optional[str]:
    """The ``msg_id`` of a payload that failed validation, when one can still be read: the collector refuses
    it by id so the agent stops sending it (a payload that is not even JSON has none)."""
    try:
        payload = (loads or json.loads)(data)
    except (ValueError, RecursionError, TypeError):
        return None
    value = payload.get("msg_id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) and MSG_ID.match(value) else None


def result_samples(report: dict, limit: int = MAX_RESULT_SAMPLES) -> dict:
    """The raw latency samples a result event carries: all of them up to ``limit``, else a uniform random
    subsample (seeded, in run order) of ``limit``: a sample of the same distribution (InfluxDB's
    ``edgebench_latency``, for analysis; release gates compare repeats). ``total`` is how many the run measured."""
    import random

    latency = [int(x) for x in (report.get("samples") or {}).get("latency_ns") or []]
    total = len(latency)
    if total > limit:
        keep = sorted(random.Random(0).sample(range(total), limit))
        latency = [latency[i] for i in keep]
    return {"latency_ns": latency, "total": total}


def summarize_report(report: dict) -> dict:
    """The part of an ``edgebench.bench/1`` or ``/2`` report that travels in a result event: everything but the
    per-run samples (the full report stays on the board's data dir). Of the statistics, the numbers and
    ``interval`` (its per-unit values included: what release gates compare); the number of repeats; the
    interleaved run it belongs to, if any; where the nodes ran and the per-op profile by op type, bounded
    (``placement_summary``, ``ops_summary``)."""
    memory = {k: v for k, v in (report.get("memory") or {}).items() if k != "rss_samples"}
    physics = report.get("physics")
    summary = {
        "schema": report.get("schema"),
        "created": report.get("created"),
        "model": {k: v for k, v in report.get("model", {}).items() if k != "path"},
        "runtime": report.get("runtime", {}),
        "inputs_fed": report.get("inputs_fed", []),
        "settings": report.get("settings", {}),
        "timing": report.get("timing", {}),
        "stats": {k: v for k, v in report.get("stats", {}).items()
                  if not isinstance(v, (dict, list)) or (k == "interval" and isinstance(v, dict))},
        "validity": report.get("validity", {}),
        "memory": memory,
    }
    if isinstance(report.get("repeats"), list) and report["repeats"]:
        summary["repeats"] = len(report["repeats"])
    if isinstance(report.get("interleave"), dict):
        summary["interleave"] = report["interleave"]
    if physics:
        summary["physics"] = {"energy": physics.get("energy"), "throttling": {
            k: v for k, v in (physics.get("throttling") or {}).items() if k != "checks"}}
    if isinstance(report.get("placement"), dict):
        summary["placement"] = placement_summary(report["placement"])
    if isinstance(report.get("ops"), dict):
        summary["ops"] = ops_summary(report["ops"])
    if isinstance(report.get("generation"), dict):
        summary["generation"] = generation_summary(report["generation"])
    return summary


GENERATION_SUMMARY_KEYS = ("prompt_tokens", "gen_tokens", "context", "kv_cache_bytes", "sampling", "inter_token_ms",
                           "same_tokens_every_repeat", "energy_per_token_mj", "prefill_energy_per_token_mj")
GENERATION_METRIC_KEYS = ("estimate", "unit", "per_repeat", "ci", "rerun")


def generation_summary(generation: dict) -> dict:
    """The report's generation as a result carries it: the settings, the numbers and each metric's per-repeat
    values (one per repeat: bounded as the repeats are); not the generated tokens (what a board compares
    continuations by, not what the fleet stores)."""
    summary = {key: generation[key] for key in GENERATION_SUMMARY_KEYS if key in generation}
    for metric in GENERATION_METRICS:
        entry = generation.get(metric)
        summary[metric] = {key: entry.get(key) for key in GENERATION_METRIC_KEYS} if isinstance(entry, dict) else entry
    return summary


def placement_summary(placement: dict, rows: int = MAX_RESULT_OP_ROWS) -> dict:
    """The report's placement as a result carries it: its counts and coverage, the backends (the first choice
    first, at most MAX_PLACEMENT_BACKENDS) and the ``rows`` most frequent op types off the first choice
    (``fallback_types``: how many the report has); not ``per_node``."""
    fallback = list(placement.get("fallback_ops") or [])
    return {**{key: placement.get(key) for key in ("source", "first_choice", "nodes", "coverage", "note")},
            "backends": list(placement.get("backends") or [])[:MAX_PLACEMENT_BACKENDS],
            "fallback_ops": fallback[:rows], "fallback_types": len(fallback)}


OPS_SUMMARY_KEYS = ("source", "unavailable", "runs", "profiled_p50_ms", "measured_p50_ms", "overhead", "sum_ms",
                    "accounted", "note")


def ops_summary(ops: dict, rows: int = MAX_RESULT_OP_ROWS) -> dict:
    """The report's per-op profile as a result carries it: what profiling cost and how much of the time the ops
    account for, and the ``rows`` op types (per backend) that took the most time (``types``: how many the report
    has); not the per-node rows (``nodes``, ``top``)."""
    summary = {key: ops[key] for key in OPS_SUMMARY_KEYS if key in ops}
    if isinstance(ops.get("by_type"), list):
        summary["by_type"] = ops["by_type"][:rows]
        summary["types"] = len(ops["by_type"])
    return summary
