"""A result's numbers, derived once: the collector's InfluxDB writer and the release gates both use these.

- ``summary_fields``: the ``edgebench_result`` fields (edgebench.server.schema) a bench summary carries: a fleet
  result's summary or a bench report on disk. Raw values: the writer coerces them to the schema's types, while the
  gates judge them as they are, so a NaN or a string in a hand-edited report is seen as one (a *missing* verdict).
- ``drift_fields``: the fields of a drift measurement against a reference model.
- ``generation_fields``: a language model's (TTFT, prefill and decode tokens/s with their intervals, energy per
  token, the token counts and the KV cache), part of ``summary_fields``.
- ``gate_metrics``: what a gate metric name (``p90_ms``, ``peak_rss_mb``, ...) means, from those fields; the same
  function for a summary and for an ``edgebench_result`` point read back from InfluxDB.
- ``result_rows``: a summary's placement and per-op rows (``edgebench_placement``, ``edgebench_fallback_op``,
  ``edgebench_op_type``), the report's own rows as the result carries them;
- ``repeat_units``: the ``edgebench_repeat`` points' fields of a summary, one per unit (repeat) of its interval;
  ``gate_intervals``: what the gates compare for a latency metric (the estimate, its interval, the units), from a
  result's fields and those units, again the same for a summary and for points read back.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from edgebench.agent.fleet.protocol import GENERATION_METRICS, STATS_KEYS
from edgebench.server import schema as db

GENERATION_ENERGY = ("energy_per_token_mj", "prefill_energy_per_token_mj")  # a language model's, net of idle power

BETWEEN_REPEATS = "between-repeats"  # stats.interval.method when the units are repeats (fresh processes)
INTERVAL_PERCENTILES = ("p50", "p90", "p99")  # stored per unit and with their interval (edgebench.server.schema)

# gate metric -> the edgebench_result field it is (peak_rss_mb is derived from two: gate_metrics)
_SAME_FIELD = {"p50_ms": "p50_ms", "p90_ms": "p90_ms", "p99_ms": "p99_ms", "energy_mj": "energy_per_inference_mj",
               "delegate_coverage": "delegate_coverage", "delegate_loaded": "delegate_loaded",
               "drift_max_abs_err": "drift_max_abs_err",
               "drift_cosine": "drift_cosine",
               **{metric: metric for metric in (*GENERATION_METRICS, *GENERATION_ENERGY)}}
GATE_METRICS = (*_SAME_FIELD, "peak_rss_mb")
_PEAKS = ("peak_load_bytes", "peak_steady_bytes")
_STATS = (*STATS_KEYS, "std_ms")


def delegate_loaded(runtime: Mapping[str, Any]) -> float:
    """1.0 when the first delegate/provider asked for loaded, 0.0 when the chain fell back (or none was asked
    for): whether it loaded, not how much of the model it took (``delegate_coverage``)."""
    requested, used = runtime.get("requested") or [], runtime.get("used") or []
    return float(bool(requested and used and used[0] == requested[0]))


def _section(summary: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = summary.get(key)
    return section if isinstance(section, Mapping) else {}


def delegate_coverage(summary: Mapping[str, Any]) -> Any:
    """The fraction of the model's nodes the chain's first choice took (the report's ``placement.coverage``,
    edgebench.agent.engine.ops); None when the result cannot say (no placement: an older agent, a runtime that
    cannot tell where its nodes ran)."""
    return _section(summary, "placement").get("coverage")


def result_rows(summary: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A summary's rows by measurement name: per backend of its placement (``edgebench_placement``: nodes,
    partitions, the model's nodes and coverage, whether it is the first choice), per op type off the first choice
    (``edgebench_fallback_op``) and per op type of its per-op profile (``edgebench_op_type``). Each row holds its
    ``backend`` (and ``op``) beside its fields, as the report has them: nothing is computed again."""
    placement, ops = _section(summary, "placement"), _section(summary, "ops")
    backends = [{db.BACKEND: row.get("name"), "nodes": row.get("nodes"), "partitions": row.get("partitions"),
                 "model_nodes": placement.get("nodes"), "coverage": placement.get("coverage"),
                 "first_choice": row.get("name") == placement.get("first_choice")}
                for row in placement.get("backends") or ()]
    rows = {db.PLACEMENT.name: backends}
    for measurement, source in ((db.FALLBACK_OP, placement.get("fallback_ops")), (db.OP_TYPE, ops.get("by_type"))):
        keys = (*(tag for tag in measurement.tags if tag not in db.RESULT_TAGS), *measurement.field_names())
        rows[measurement.name] = [{key: row.get(key) for key in keys} for row in source or ()]
    return rows


def _interval(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    interval = summary["stats"].get("interval")
    return interval if isinstance(interval, Mapping) else {}


def _entry(section: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], tuple[Any, Any]]:
    """An estimate's entry of a section (``stats.interval.p90_ms``, ``generation.decode_tok_s``) and the ends of
    its confidence interval, (None, None) where it has none."""
    entry = section.get(key)
    entry = entry if isinstance(entry, Mapping) else {}
    ci = entry.get("ci")
    return entry, (tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None))


def interval_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``p90_estimate_ms``, ``p90_ci_low_ms``, ``p90_ci_high_ms`` (p50, p99 likewise), ``repeats``,
    ``interval_method``, ``drift_pct``, ``unit_spread_pct`` of a summary (None where it has no interval)."""
    interval = _interval(summary)
    fields: dict[str, Any] = {}
    for pct in INTERVAL_PERCENTILES:
        entry, ci = _entry(interval, f"{pct}_ms")
        fields.update({f"{pct}_estimate_ms": entry.get("estimate"), f"{pct}_ci_low_ms": ci[0],
                       f"{pct}_ci_high_ms": ci[1]})
    method = interval.get("method")
    repeats = summary.get("repeats")
    if repeats is None and interval:  # a summary that does not say: the units when they are repeats, else one run
        repeats = interval.get("units") if method == BETWEEN_REPEATS else 1
    return {**fields, "repeats": repeats, "interval_method": method, "drift_pct": interval.get("drift_pct"),
            "unit_spread_pct": interval.get("unit_spread_pct")}


def repeat_units(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-unit values of a summary whose interval comes from repeats: one ``{p50_ms, p90_ms, p99_ms}`` per
    repeat, in unit order (the ``edgebench_repeat`` points); none when the units are batches of one run (a result
    without repeats counts as one unit: its headline value)."""
    interval = _interval(summary)
    if interval.get("method") != BETWEEN_REPEATS:
        return []
    columns = {f"{pct}_ms": (interval.get(f"{pct}_ms") or {}).get("per_unit") or [] for pct in INTERVAL_PERCENTILES}
    count = max((len(values) for values in columns.values()), default=0)
    return [{key: values[i] if i < len(values) else None for key, values in columns.items()} for i in range(count)]


GENERATION_COUNTS = ("prompt_tokens", "gen_tokens", "kv_cache_bytes")


def generation_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A language model's fields (None for any other model): ``decode_tok_s``, ``prefill_tok_s``, ``ttft_ms`` (the
    estimates over the repeats) with the ends of their intervals (``decode_ci_low_tok_s``...), ``energy_per_token_mj``,
    the token counts and the KV cache's size."""
    generation = _section(summary, "generation")
    fields = {key: generation.get(key) for key in (*GENERATION_COUNTS, *GENERATION_ENERGY)}
    for metric in GENERATION_METRICS:
        entry, ci = _entry(generation, metric)
        fields.update({metric: entry.get("estimate"), db.ci_field(metric, "low"): ci[0],
                       db.ci_field(metric, "high"): ci[1]})
    return fields


def workload(fields: Mapping[str, Any]) -> str:
    """What a language model was asked to do (``prompt 512 + 128 tokens``), from a result's fields; "" for any other
    model. Runs of one model with other token counts are other configurations: their tokens/s do not compare."""
    prompt, generated = fields.get("prompt_tokens"), fields.get("gen_tokens")
    return f"prompt {prompt} + {generated} tokens" if prompt is not None and generated is not None else ""


def summary_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The result fields of a bench summary; ``summary["stats"]`` is required, every other part optional."""
    stats = summary["stats"]
    memory, timing = summary.get("memory") or {}, summary.get("timing") or {}
    physics = summary.get("physics") or {}
    energy, throttling = physics.get("energy") or {}, physics.get("throttling") or {}
    return {**{key: stats.get(key) for key in _STATS},
            "load_ms": timing.get("load_ms"), "first_inference_ms": timing.get("first_inference_ms"),
            **{key: memory.get(key) for key in _PEAKS},
            "energy_per_inference_mj": energy.get("energy_per_inference_mj"), "avg_w": energy.get("avg_w"),
            "throttled": bool(throttling.get("detected")) if throttling else None,
            "valid": bool((summary.get("validity") or {}).get("valid")),
            "delegate_coverage": delegate_coverage(summary),
            "delegate_loaded": delegate_loaded(summary.get("runtime") or {}),
            "profile_overhead": _section(summary, "ops").get("overhead"),
            "ops_accounted": _section(summary, "ops").get("accounted"),
            "model_size_bytes": (summary.get("model") or {}).get("size_bytes"),
            "delegate_requested": _chain((summary.get("runtime") or {}).get("requested")),
            **_interleave(summary.get("interleave")), **interval_fields(summary), **generation_fields(summary)}


def _chain(names: Any) -> Any:
    """A delegate/provider chain as text (``gpu,xnnpack``), as the ``delegate`` tag writes what ran."""
    if isinstance(names, (list, tuple)):
        return ",".join(str(n) for n in names) or None
    return names if isinstance(names, str) and names else None


def _interleave(interleave: Any) -> dict[str, Any]:
    """``interleave_group`` and ``interleave_slot`` (as text: a slot is compared, never computed with)."""
    if not isinstance(interleave, Mapping):
        return {"interleave_group": None, "interleave_slot": None}
    slot = interleave.get("slot")
    return {"interleave_group": interleave.get("group"), "interleave_slot": None if slot is None else str(slot)}


def drift_fields(drift: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    drift = drift or {}
    return {"drift_max_abs_err": drift.get("max_abs_err"), "drift_mean_abs_err": drift.get("mean_abs_err"),
            "drift_cosine": drift.get("cosine_mean"), "drift_top1_agreement": drift.get("top1_agreement"),
            "drift_samples": drift.get("samples"),
            "drift_error": str(drift["error"])[:500] if drift.get("error") else None}


def _pair(fields: Mapping[str, Any], low: str, high: str) -> Optional[list]:
    values = [fields.get(low), fields.get(high)]
    return values if None not in values else None


def gate_intervals(fields: Mapping[str, Any], units: Sequence[Mapping[str, Any]] = ()) -> dict[str, dict]:
    """Per latency gate metric (``p50_ms``, ``p90_ms``, ``p99_ms``): ``estimate`` (the interval's, else None),
    ``ci`` ([low, high] or None) and ``per_unit`` (the repeats' values when the result's units are repeats, else
    None: such a result is one unit, its headline value), from a result's fields (``summary_fields``, or an
    ``edgebench_result`` point) and its ``repeat_units`` (or the ``edgebench_repeat`` points). Per generation
    metric (``decode_tok_s``...): its estimate and interval (judged on the latest values, not on units)."""
    repeats = fields.get("interval_method") == BETWEEN_REPEATS and len(units) > 0
    out = {}
    for pct in INTERVAL_PERCENTILES:
        out[f"{pct}_ms"] = {"estimate": fields.get(f"{pct}_estimate_ms"),
                            "ci": _pair(fields, f"{pct}_ci_low_ms", f"{pct}_ci_high_ms"),
                            "per_unit": [unit.get(f"{pct}_ms") for unit in units] if repeats else None}
    for metric in GENERATION_METRICS:
        out[metric] = {"estimate": fields.get(metric), "per_unit": None,
                       "ci": _pair(fields, db.ci_field(metric, "low"), db.ci_field(metric, "high"))}
    return out


def gate_metrics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The release gates' metrics of a result's fields (None where the result has no such value)."""
    peaks = [fields.get(key) for key in _PEAKS if fields.get(key)]
    return {**{metric: fields.get(field) for metric, field in _SAME_FIELD.items()},
            "peak_rss_mb": max(peaks) / 1e6 if peaks else None}
