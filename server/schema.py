"""The InfluxDB schema: every measurement edgebench writes, with its tags, typed fields and time, declared once.

The collector's writer (edgebench.server.influx), the release gates (their InfluxDB source and verdict writer) and
the Grafana dashboards all take their names from here; docs/fleet.md ("InfluxDB schema") describes these records
and a test keeps the two alike. Standard library only (and the agent's protocol module, which is too).

A field's type is fixed: InfluxDB fixes a field's type per shard on the first point, so a string where a number
belongs would make it refuse every other device's points. ``Measurement.values`` coerces to the declared type (or
leaves the field out). Lines are built by edgebench.server.lineprotocol, nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from edgebench.agent.fleet import protocol as p

FLOAT, INTEGER, BOOLEAN, STRING = "float", "integer", "boolean", "string"  # InfluxDB's names (SHOW FIELD KEYS)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_COERCE = {
    FLOAT: lambda v: float(v) if _number(v) else None,
    INTEGER: lambda v: int(v) if _number(v) else None,
    BOOLEAN: lambda v: v if isinstance(v, bool) else None,
    STRING: lambda v: v if isinstance(v, str) else None,
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str = FLOAT

    def typed(self, value: Any) -> Any:
        """The value as this field's type, or None (the point leaves the field out)."""
        return _COERCE[self.type](value)


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[Field, ...]
    time: str  # how a point's timestamp is derived (idempotence: a redelivered message overwrites its points)
    labels: bool = True  # also a label_<key> tag per device/job label
    open_fields: bool = False  # fields beyond the declared ones (telemetry: one per protocol-checked reading)

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def values(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The declared fields, in declaration order, each coerced to its type; anything else in ``raw`` is a
        programming error (an undeclared field would bypass the schema)."""
        unknown = set(raw) - set(self.field_names())
        if unknown:
            raise KeyError(f"{self.name}: undeclared field(s) {sorted(unknown)}")
        return {f.name: f.typed(raw.get(f.name)) for f in self.fields}


# ---------------------------------------------------------------- tag keys

DEVICE, MODEL, MODEL_SHA, FORMAT, RUNTIME, DELEGATE, THREADS = (
    "device", "model", "model_sha", "format", "runtime", "delegate", "threads")
REFERENCE = "reference"  # sha256 prefix of the reference model drift was measured against (push --reference)
LABEL_PREFIX = "label_"  # label_<key> for each device label (the job's too on results; the device's win)
BOARD_CLASS_LABEL = LABEL_PREFIX + "class"  # what boards are compared by
RULE, BOARD_CLASS, STATUS, CONFIG = "rule", "board_class", "status", "config"  # edgebench_gate
UNIT = "unit"  # edgebench_repeat: the unit's index within its result (0, 1, ...)
BACKEND, OP = "backend", "op"  # where nodes ran (a delegate, an execution provider) and their op type


def label_tags(labels: Optional[Mapping[str, Any]]) -> dict:
    return {f"{LABEL_PREFIX}{k}": v for k, v in (labels or {}).items()}


def labels_of(tags: Mapping[str, Any]) -> dict:
    """The labels back from a point's tags (empty ones are absent labels)."""
    return {k[len(LABEL_PREFIX):]: v for k, v in tags.items() if k.startswith(LABEL_PREFIX) and v}


# ---------------------------------------------------------------- measurements

_STATS = tuple(Field(key, INTEGER if key == "count" else FLOAT) for key in p.STATS_KEYS)  # summary.stats, same names
RESULT_TAGS = (DEVICE, MODEL, MODEL_SHA, FORMAT, RUNTIME, DELEGATE, THREADS)  # every point of a result has them
INTERVAL_PERCENTILES = ("p50", "p90", "p99")  # the percentiles whose interval and units are stored (the gates')
# summary.stats.interval (edgebench.agent.engine.stats.interval_summary): per percentile the estimate and its
# confidence interval; how many repeats, the interval's method, the run's drift and the spread between its units
_INTERVAL = tuple(Field(f"{pct}_{part}_ms") for pct in INTERVAL_PERCENTILES
                  for part in ("estimate", "ci_low", "ci_high")) + (
    Field("repeats", INTEGER), Field("interval_method", STRING), Field("drift_pct"), Field("unit_spread_pct"))



def ci_field(metric: str, end: str) -> str:
    """The field of an end (``low``, ``high``) of a generation metric's interval: ``decode_tok_s`` ->
    ``decode_ci_low_tok_s``, as ``p90_ms`` has ``p90_ci_low_ms``."""
    name, unit = metric.split("_", 1)
    return f"{name}_ci_{end}_{unit}"


# a language model's result (summary.generation, agent/engine/generate.py): TTFT, prefill and decode tokens/s (the
# estimates over the repeats, with their confidence intervals), energy per decoded token, what it was asked to do
_GENERATION = tuple(Field(metric) for metric in p.GENERATION_METRICS) + tuple(
    Field(ci_field(metric, end)) for metric in p.GENERATION_METRICS for end in ("low", "high")) + (
    Field("energy_per_token_mj"), Field("prefill_energy_per_token_mj"), Field("prompt_tokens", INTEGER),
    Field("gen_tokens", INTEGER),
    Field("kv_cache_bytes", INTEGER))

RESULT = Measurement(
    "edgebench_result", RESULT_TAGS + (REFERENCE,),
    _STATS + (
        Field("std_ms"), Field("load_ms"), Field("first_inference_ms"), Field("peak_steady_bytes"),
        Field("peak_load_bytes"), Field("energy_per_inference_mj"), Field("avg_w"), Field("throttled", BOOLEAN),
        Field("valid", BOOLEAN), Field("run_id", STRING), Field("job_id", STRING), Field("delegate_coverage"),
        Field("delegate_loaded"), Field("profile_overhead"), Field("ops_accounted"),
        Field("samples_total", INTEGER), Field("model_size_bytes", INTEGER),
        Field("drift_max_abs_err"), Field("drift_mean_abs_err"), Field("drift_cosine"), Field("drift_top1_agreement"),
        Field("drift_samples", INTEGER), Field("drift_error", STRING), Field("delegate_requested", STRING),
        Field("interleave_group", STRING), Field("interleave_slot", STRING)) + _INTERVAL + _GENERATION,
    time="the run's finish time in ms plus a sub-millisecond offset from a hash of run_id (result_time_ns)")

RESULT_ONLY_TAGS = (REFERENCE,)  # tags of a result's point that its latency and repeat points do not carry

LATENCY = Measurement(
    "edgebench_latency", RESULT_TAGS, (Field("latency_ns", INTEGER),),
    time="the result's time plus the sample's index in ns (one point per raw latency sample)")

REPEAT = Measurement(
    "edgebench_repeat", RESULT_TAGS + (UNIT,), tuple(Field(f"{pct}_ms") for pct in INTERVAL_PERCENTILES),
    time="the result's time (the unit tag tells a result's units apart; a redelivery overwrites them)")

PLACEMENT = Measurement(
    "edgebench_placement", RESULT_TAGS + (BACKEND,),
    (Field("nodes", INTEGER), Field("partitions", INTEGER), Field("model_nodes", INTEGER), Field("coverage"),
     Field("first_choice", BOOLEAN)),
    time="the result's time (the backend tag tells a result's rows apart; a redelivery overwrites them)")

FALLBACK_OP = Measurement(
    "edgebench_fallback_op", RESULT_TAGS + (OP, BACKEND), (Field("count", INTEGER),),
    time="the result's time (the op and backend tags tell a result's rows apart)")

OP_TYPE = Measurement(
    "edgebench_op_type", RESULT_TAGS + (OP, BACKEND),
    (Field("count", INTEGER), Field("total_us"), Field("share")),
    time="the result's time (the op and backend tags tell a result's rows apart)")

RESULT_ROWS = (PLACEMENT, FALLBACK_OP, OP_TYPE)  # a result's rows beside its point (result_metrics.result_rows)

TELEMETRY = Measurement(
    "edgebench_telemetry", (DEVICE,),
    tuple(Field(name) for name in ("load1", "mem_available_bytes", "temp_max_c", "cpu_freq_hz", "cpu_freq_max_hz",
                                   "power_w")),
    time="the sample's own time, µs precision (telemetry_time_ns)", open_fields=True)

DEVICE_STATE = Measurement(
    "edgebench_device", (DEVICE,),
    (Field("online", INTEGER), Field("state", STRING), Field("agent_version", STRING), Field("job_id", STRING),
     Field("uptime_s"), Field("outbox_depth", INTEGER), Field("telemetry_dropped", INTEGER),
     *(Field(key, INTEGER) for key in p.HEARTBEAT_COUNTERS)),
    time="a status message: the collector's receive time (a last will has no useful ts); a heartbeat: its ts")

GATE = Measurement(
    "edgebench_gate", (RULE, MODEL, BOARD_CLASS, CONFIG, STATUS),
    (Field("passed", BOOLEAN), Field("value"), Field("message", STRING)),
    time="the evaluation's time; verdicts of one evaluation 1 ns apart", labels=False)

MEASUREMENTS = (RESULT, LATENCY, REPEAT, PLACEMENT, FALLBACK_OP, OP_TYPE, TELEMETRY, DEVICE_STATE, GATE)


# ---------------------------------------------------------------- time

MAX_SAMPLES_PER_RESULT = p.MAX_RESULT_SAMPLES  # so a result's latency points span less than this many ns


def result_time_ns(run_id: str, finished_ts: float) -> int:
    """When the run finished (ms) plus a sub-millisecond offset from the run id, so two runs that finish in the
    same millisecond stay two points, and one run sent twice stays one."""
    offset = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % 1_000_000
    return int(finished_ts * 1000) * 1_000_000 + offset


def latency_window(result_ns: int) -> tuple[int, int]:
    """[start, end) of the latency points of the result written at ``result_ns``."""
    return result_ns, result_ns + MAX_SAMPLES_PER_RESULT


def telemetry_time_ns(ts: float) -> int:
    return round(ts * 1e6) * 1000


# ---------------------------------------------------------------- proposed (nothing writes them yet)

PROPOSED: dict[str, str] = {}  # what the dashboards query but nothing writes yet (docs/dashboards.md): none today


def proposed_names(query: str) -> list[str]:
    """The proposed measurements and fields a query uses (quoted, as the dashboards write them)."""
    return [name for name in PROPOSED if f'"{name}"' in query]
