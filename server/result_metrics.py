"""A result's numbers, derived once: the collector's InfluxDB writer and the release gates both use these.

- ``summary_fields``: the ``edgebench_result`` fields (edgebench.server.schema) a bench summary carries: a fleet
  result's summary or a bench report on disk. Raw values: the writer coerces them to the schema's types, while the
  gates judge them as they are, so a NaN or a string in a hand-edited report is seen as one (a *missing* verdict).
- ``drift_fields``: the fields of a drift measurement against a reference model.
- ``gate_metrics``: what a gate metric name (``p90_ms``, ``peak_rss_mb``, ...) means, from those fields; the same
  function for a summary and for an ``edgebench_result`` point read back from InfluxDB.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from edgebench.agent.fleet.protocol import STATS_KEYS

# gate metric -> the edgebench_result field it is (peak_rss_mb is derived from two: gate_metrics)
_SAME_FIELD = {"p50_ms": "p50_ms", "p90_ms": "p90_ms", "p99_ms": "p99_ms", "energy_mj": "energy_per_inference_mj",
               "delegate_coverage": "delegate_coverage", "drift_max_abs_err": "drift_max_abs_err",
               "drift_cosine": "drift_cosine"}
GATE_METRICS = (*_SAME_FIELD, "peak_rss_mb")
_PEAKS = ("peak_load_bytes", "peak_steady_bytes")
_STATS = (*STATS_KEYS, "std_ms")


def delegate_coverage(runtime: Mapping[str, Any]) -> float:
    """1.0 when the first delegate/provider asked for ran the model, 0.0 when the chain fell back (coarse: per-op
    coverage needs the runtime's own profiling)."""
    requested, used = runtime.get("requested") or [], runtime.get("used") or []
    return float(bool(requested and used and used[0] == requested[0]))


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
            "delegate_coverage": delegate_coverage(summary.get("runtime") or {}),
            "model_size_bytes": (summary.get("model") or {}).get("size_bytes")}


def drift_fields(drift: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    drift = drift or {}
    return {"drift_max_abs_err": drift.get("max_abs_err"), "drift_mean_abs_err": drift.get("mean_abs_err"),
            "drift_cosine": drift.get("cosine_mean"), "drift_top1_agreement": drift.get("top1_agreement"),
            "drift_samples": drift.get("samples"),
            "drift_error": str(drift["error"])[:500] if drift.get("error") else None}


def gate_metrics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The release gates' metrics of a result's fields (None where the result has no such value)."""
    peaks = [fields.get(key) for key in _PEAKS if fields.get(key)]
    return {**{metric: fields.get(field) for metric, field in _SAME_FIELD.items()},
            "peak_rss_mb": max(peaks) / 1e6 if peaks else None}
