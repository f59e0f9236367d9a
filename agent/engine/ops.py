"""Where the model's nodes ran (placement) and where its time goes (per-op profile): the report's ``placement`` and
``ops`` sections, counted from what the runtime said (the worker result's raw node lists, the same from every
executor), and their CSV (docs/report.md, "placement" and "ops").

The runtimes only say where each node ran and how long each took in each profiled run; every count, mean, median
and share is computed here, once, for the Python runtimes and the native harness alike.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from typing import Iterable, Optional, Sequence

TOP = 10  # rows in the report's ``top`` list and the terminal's table
# Below or above this share of the end-to-end time, the ops' sum does not explain the run: the report says why.
ACCOUNTED_RANGE = (0.9, 1.1)
OVERHEAD_NOTED = 1.25  # above this cost of profiling, the report warns that small ops' times are inflated
CSV_COLUMNS = ("name", "op", "backend", "mean_us", "median_us", "share", "runs")


# ---------------------------------------------------------------- placement

def summarize_placement(raw: Optional[dict]) -> Optional[dict]:
    """The report's ``placement``: node counts per backend and partitions, the op types not on the first choice,
    and ``coverage``, the fraction of nodes the first choice of the chain took (None when the model has none)."""
    if not raw:
        return None
    nodes = raw["nodes"]
    first = raw["first_choice"]
    per_backend: dict[str, dict] = {}
    for node in nodes:
        entry = per_backend.setdefault(node["backend"], {"name": node["backend"], "nodes": 0, "partitions": set()})
        entry["nodes"] += 1
        entry["partitions"].add(node["partition"])
    backends = sorted(per_backend.values(), key=lambda b: (b["name"] != first, -b["nodes"], b["name"]))
    fallback = Counter((node["op"], node["backend"]) for node in nodes if node["backend"] != first)
    taken = per_backend.get(first, {}).get("nodes", 0)
    return {
        "source": raw["source"],
        "first_choice": first,
        "nodes": len(nodes),
        "coverage": taken / len(nodes) if nodes else None,
        "backends": [{"name": b["name"], "nodes": b["nodes"], "partitions": len(b["partitions"])} for b in backends],
        "fallback_ops": [{"op": op, "backend": backend, "count": count}
                         for (op, backend), count in sorted(fallback.items(), key=lambda item: (-item[1], item[0]))],
        "per_node": [dict(node) for node in nodes],
    }


def pooled_placement(raws: Sequence[Optional[dict]]) -> tuple[Optional[dict], Optional[str]]:
    """One placement for a run's repeats, and a note when they disagree (a runtime that placed nodes differently
    from one fresh process to the next: the first repeat's is kept)."""
    present = [raw for raw in raws if raw]
    if not present:
        return None, None
    differing = [i for i, raw in enumerate(present) if raw != present[0]]
    note = (f"placement differed between repeats (repeat {differing[0] + 1} of {len(present)}); the first repeat's "
            "is reported") if differing else None
    return present[0], note


def short_backend(name: str) -> str:
    """``CUDAExecutionProvider`` -> ``CUDA``; delegate names as they are."""
    return name[: -len("ExecutionProvider")] if name.endswith("ExecutionProvider") else name


# ---------------------------------------------------------------- per-op time

def summarize_ops(raws: Sequence[Optional[dict]], measured_p50_ms: Optional[float], top: int = TOP) -> Optional[dict]:
    """The report's ``ops``: the profiled runs of every repeat pooled (a node matched by name), each node's mean and
    median per run, the sum by op type, the top ``top`` nodes, what profiling cost (the profiled runs' p50 against
    the measured phase's) and how much of the end-to-end time the nodes account for."""
    present = [raw for raw in raws if raw]
    if not present:
        return None
    if present[0]["unavailable"]:
        return {"source": None, "unavailable": present[0]["unavailable"], "runs": 0}
    latency = [value for raw in present for value in raw["latency_ns"]]
    durations: dict[tuple, list[int]] = {}
    for raw in present:
        for node in raw["nodes"]:
            durations.setdefault((node["name"], node["op"], node["backend"]), []).extend(node["duration_ns"])
    nodes = [{"name": name, "op": op, "backend": backend, "mean_us": statistics.fmean(values) / 1e3,
              "median_us": statistics.median(values) / 1e3, "runs": len(values)}
             for (name, op, backend), values in durations.items() if values]
    total_us = sum(node["mean_us"] for node in nodes)
    for node in nodes:
        node["share"] = node["mean_us"] / total_us if total_us else 0.0
    profiled_p50 = statistics.median(latency) / 1e6 if latency else None
    profiled_mean = statistics.fmean(latency) / 1e6 if latency else None
    accounted = total_us / 1e3 / profiled_mean if profiled_mean else None
    overhead = profiled_p50 / measured_p50_ms if profiled_p50 and measured_p50_ms else None
    # What the profiler adds per node and inference: spread over the nodes, the profiled runs' extra time.
    per_node_cost = (profiled_p50 - measured_p50_ms) * 1e3 / len(nodes) if overhead and nodes else None
    return {
        "source": present[0]["source"],
        "unavailable": None,
        "runs": len(latency),
        "profiled_p50_ms": profiled_p50,
        "measured_p50_ms": measured_p50_ms,
        "overhead": overhead,
        "per_node_cost_us": per_node_cost,
        "sum_ms": total_us / 1e3,
        "accounted": accounted,
        "note": _profile_note(accounted, overhead, per_node_cost),
        "nodes": nodes,
        "by_type": by_type(nodes, total_us),
        "top": sorted(nodes, key=lambda n: -n["mean_us"])[:top],
    }


def by_type(nodes: Iterable[dict], total_us: float) -> list[dict]:
    """Per op type and backend: how many nodes, their summed mean time per run, its share; slowest first."""
    groups: dict[tuple, dict] = {}
    for node in nodes:
        entry = groups.setdefault((node["op"], node["backend"]),
                                  {"op": node["op"], "backend": node["backend"], "count": 0, "total_us": 0.0})
        entry["count"] += 1
        entry["total_us"] += node["mean_us"]
    for entry in groups.values():
        entry["share"] = entry["total_us"] / total_us if total_us else 0.0
    return sorted(groups.values(), key=lambda e: (-e["total_us"], e["op"]))


def _profile_note(accounted: Optional[float], overhead: Optional[float],
                  per_node_cost: Optional[float]) -> Optional[str]:
    """Why the per-op times do not simply add up to the measured latency, in one sentence or two; None when they do."""
    notes = []
    low, high = ACCOUNTED_RANGE
    if accounted is not None and accounted < low:
        notes.append(f"the ops add up to {accounted:.0%} of the profiled runs' mean time: the rest is the runtime's "
                     "own work outside the kernels it times (copying inputs and outputs, scheduling, the profiler's "
                     "events)")
    elif accounted is not None and accounted > high:
        notes.append(f"the ops add up to {accounted:.0%} of the profiled runs' mean time: kernels ran in parallel, "
                     "so their times overlap")
    if overhead is not None and overhead > OVERHEAD_NOTED and per_node_cost is not None:
        notes.append(f"profiling made an inference {overhead:.2f}x slower, about {per_node_cost:.1f} µs per node: "
                     "small ops' times are inflated by it, so read their shares rather than their absolute times")
    return "; ".join(notes) or None


def write_csv(ops: dict, path: str) -> None:
    """``--ops-csv FILE``: one row per node, in execution order (the report's ``ops.nodes``)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for node in ops.get("nodes") or []:
            writer.writerow([node["name"], node["op"], node["backend"], f"{node['mean_us']:.3f}",
                             f"{node['median_us']:.3f}", f"{node['share']:.6f}", node["runs"]])
