"""``edgebench diff A.json B.json``: two bench reports side by side (schema ``edgebench.diff/1``, docs/cli.md).

What a user reads to see why a variant (int8, another delegate, another board) is or is not faster: latency (B's
speed-up over A with its interval, from bench.speedup), memory, model size, where the nodes ran (placement) and,
when both reports have per-op times (``bench --profile-ops``), the time per op type and how it changed.

Each report is read once and checked for the fields the comparison uses (``read_side``), so a file that is not a
bench report, or a hand-edited one with a field of the wrong type, is one line naming the file and the field
(exit 2, as for ``gate --reports``), never a traceback from the middle of the comparison.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from edgebench.agent.engine.ops import short_backend
from edgebench.agent.engine.report import (
    SCHEMA_FILES,
    fmt_latency,
    fmt_ratio,
    human_bytes,
    latency_unit,
    placement_line,
    table,
    utc_now,
)
from edgebench.agent.errors import UsageError, first_line

SCHEMA = "edgebench.diff/1"
METRICS = ("p50_ms", "p90_ms", "p99_ms")
MEMORY = ("rss_after_load_bytes", "peak_load_bytes", "peak_steady_bytes")
SIDE_KEYS = ("file", "schema", "created", "model", "runtime", "device", "inputs", "repeats", "runs", "valid",
             "reasons")  # each report's facts in the document
TOP = 15  # op-type rows printed (the document holds every one)
NUMBER = (int, float)
_KINDS = {NUMBER: "a number", (int,): "an integer", (str,): "a string", (dict,): "an object", (list,): "a list",
          (bool,): "true or false"}


# ---------------------------------------------------------------- reading a report

def load_report(path: str, reader: str = "diff") -> dict:
    """A bench report (``edgebench.bench/1`` or ``/2``) read from ``path``; anything else is a UsageError whose one
    line names the file and what is wrong with it."""
    from edgebench.agent.modelfile import file_problem

    problem = file_problem(Path(path))  # a FIFO would block read_text() forever
    if problem:
        raise UsageError(f"report {path} {problem}")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"report {path} cannot be read ({exc.strerror})") from None
    except ValueError as exc:  # UnicodeDecodeError: a binary file
        raise UsageError(f"report {path}: not JSON (not UTF-8 text: {first_line(exc)})") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise UsageError(f"report {path}: not JSON ({first_line(exc)})") from None
    if not isinstance(document, dict):
        raise UsageError(f"report {path}: not an edgebench bench report (a JSON {type(document).__name__}, "
                         "not an object)")
    schema = document.get("schema")
    if schema not in SCHEMA_FILES:
        known = ", ".join(SCHEMA_FILES)
        hint = (": a variants document holds one bench report per variant (variants[i].report)"
                if isinstance(schema, str) and schema.startswith("edgebench.variants/") else "")
        raise UsageError(f"report {path}: not an edgebench bench report (schema {schema!r}; {reader} reads {known})"
                         f"{hint}")
    return document


class _Malformed(ValueError):
    pass


def _get(obj: Any, key: str, types: tuple, where: str, required: bool = True) -> Any:
    """obj[key] of one of ``types`` (None allowed unless required); a finite, non-negative number for numbers."""
    if not isinstance(obj, dict):
        raise _Malformed(f"{where} is not an object")
    value = obj.get(key)
    name = f"{where}.{key}" if where else key
    if value is None:
        if required:
            raise _Malformed(f"no {name!r} field")
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise _Malformed(f"{name} is not {_KINDS.get(types, types[0].__name__)}")
    if isinstance(value, NUMBER) and not isinstance(value, bool) and not (math.isfinite(value) and value >= 0):
        raise _Malformed(f"{name} is not a finite non-negative number")
    return value


def _items(obj: Any, key: str, where: str) -> list:
    return [item for item in (_get(obj, key, (list,), where, required=False) or [])]


def read_side(report: dict, path: str) -> dict:
    """What the comparison uses of one report, each field's type checked: the report's well-formedness for diff."""
    try:
        return _side(report, path)
    except _Malformed as exc:
        raise UsageError(f"report {path}: not a well-formed edgebench bench report ({exc})") from None


def _side(report: dict, path: str) -> dict:
    model, runtime, stats = (_get(report, key, (dict,), "") for key in ("model", "runtime", "stats"))
    memory = _get(report, "memory", (dict,), "", required=False) or {}
    device = _get(report, "device", (dict,), "", required=False) or {}
    interval = _get(stats, "interval", (dict,), "stats", required=False) or {}
    for metric in METRICS:
        _get(stats, metric, NUMBER, "stats")
        entry = _get(interval, metric, (dict,), "stats.interval", required=False)
        if entry is not None:
            if not _get(entry, "estimate", NUMBER, f"stats.interval.{metric}") > 0:
                raise _Malformed(f"stats.interval.{metric}.estimate is not positive")
            units = _get(entry, "per_unit", (list,), f"stats.interval.{metric}")
            if not all(isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in units):
                raise _Malformed(f"stats.interval.{metric}.per_unit holds values that are not finite positive numbers")
    interleave = _get(report, "interleave", (dict,), "", required=False)
    validity = _get(report, "validity", (dict,), "", required=False) or {}
    return {
        "file": path,
        "schema": report["schema"],
        "created": _get(report, "created", (str,), "", required=False),
        "model": {"name": _get(model, "name", (str,), "model"),
                  "format": _get(model, "format", (str,), "model", required=False),
                  "size_bytes": _get(model, "size_bytes", (int,), "model", required=False),
                  "sha256": _get(model, "sha256", (str,), "model", required=False)},
        "runtime": {"runtime": _get(runtime, "runtime", (str,), "runtime"),
                    "version": _get(runtime, "version", (str,), "runtime", required=False),
                    "used": [str(u) for u in _items(runtime, "used", "runtime")],
                    "threads": _get(runtime, "threads", (int,), "runtime", required=False)},
        "device": {"hostname": _get(device, "hostname", (str,), "device", required=False),
                   "cpu": _get(device, "cpu", (str,), "device", required=False)},
        "inputs": [f"{_get(feed, 'name', (str,), 'inputs_fed[]')} "
                   f"{'x'.join(str(d) for d in _get(feed, 'shape', (list,), 'inputs_fed[]')) or 'scalar'}"
                   for feed in _items(report, "inputs_fed", "")],
        "repeats": len(_items(report, "repeats", "")) or 1,
        "runs": _get(stats, "count", (int,), "stats", required=False),
        "interleave": interleave,
        "valid": _get(validity, "valid", (bool,), "validity", required=False),
        "reasons": [str(r) for r in _items(validity, "reasons", "validity")],
        "stats": {metric: stats[metric] for metric in METRICS},
        "memory": {key: _get(memory, key, (int,), "memory", required=False) for key in MEMORY},
        "placement": _placement(_get(report, "placement", (dict,), "", required=False)),
        "ops": _ops(_get(report, "ops", (dict,), "", required=False)),
    }


def _placement(placement: Optional[dict]) -> Optional[dict]:
    if placement is None:
        return None
    backends = [{"name": _get(b, "name", (str,), "placement.backends[]"),
                 "nodes": _get(b, "nodes", (int,), "placement.backends[]"),
                 "partitions": _get(b, "partitions", (int,), "placement.backends[]")}
                for b in _items(placement, "backends", "placement")]
    fallback = [{"op": _get(f, "op", (str,), "placement.fallback_ops[]"),
                 "backend": _get(f, "backend", (str,), "placement.fallback_ops[]"),
                 "count": _get(f, "count", (int,), "placement.fallback_ops[]")}
                for f in _items(placement, "fallback_ops", "placement")]
    return {"source": _get(placement, "source", (str,), "placement", required=False),
            "first_choice": _get(placement, "first_choice", (str,), "placement"),
            "nodes": _get(placement, "nodes", (int,), "placement"),
            "coverage": _get(placement, "coverage", NUMBER, "placement", required=False),
            "backends": backends, "fallback_ops": fallback}


def _ops(ops: Optional[dict]) -> Optional[dict]:
    """The ``ops`` section's summary and its per-type rows; ``unavailable`` says why a report has no times."""
    if ops is None:
        return None
    unavailable = _get(ops, "unavailable", (str,), "ops", required=False)
    if unavailable:
        return {"unavailable": unavailable}
    types = [{"op": _get(t, "op", (str,), "ops.by_type[]"), "backend": _get(t, "backend", (str,), "ops.by_type[]"),
              "count": _get(t, "count", (int,), "ops.by_type[]"),
              "total_us": _get(t, "total_us", NUMBER, "ops.by_type[]")}
             for t in _items(ops, "by_type", "ops")]
    summary = {key: _get(ops, key, NUMBER, "ops", required=False)
               for key in ("profiled_p50_ms", "measured_p50_ms", "overhead", "sum_ms", "accounted")}
    return {"unavailable": None, "source": _get(ops, "source", (str,), "ops", required=False),
            "runs": _get(ops, "runs", (int,), "ops", required=False) or 0, **summary, "by_type": types}


# ---------------------------------------------------------------- the comparison

def _change(a: Optional[float], b: Optional[float]) -> dict:
    """B - A and B / A - 1 (None where a side is missing, or A is 0)."""
    if a is None or b is None:
        return {"a": a, "b": b, "change": None, "change_pct": None}
    return {"a": a, "b": b, "change": b - a, "change_pct": (b / a - 1) * 100 if a else None}


def _ratio(report_a: dict, report_b: dict, side_a: dict, side_b: dict, metric: str) -> dict:
    """B's speed-up over A (A / B; above 1: B is faster) with its interval from the two reports' repeats, through
    bench.speedup; the bare ratio of the pooled values when a report has no per-repeat values (version 1)."""
    if all((report["stats"].get("interval") or {}).get(metric) for report in (report_a, report_b)):
        from edgebench.agent.engine.bench import speedup

        return speedup(report_a, report_b, metric)
    a, b = side_a["stats"][metric], side_b["stats"][metric]
    return {"metric": metric, "estimate": a / b if b else None, "ci": None, "method": None}


def compare(report_a: dict, report_b: dict, path_a: str = "A", path_b: str = "B") -> dict:
    """The ``edgebench.diff/1`` document of two bench reports (load_report's)."""
    a, b = read_side(report_a, path_a), read_side(report_b, path_b)
    latency = []
    for metric in METRICS:
        row = _change(a["stats"][metric], b["stats"][metric])
        latency.append({"metric": metric, **row, "speedup": _ratio(report_a, report_b, a, b, metric)})
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "a": {key: a[key] for key in SIDE_KEYS},
        "b": {key: b[key] for key in SIDE_KEYS},
        "same_model": _same_model(a, b),
        "notes": _notes(a, b),
        "latency": latency,
        "memory": {key: _change(a["memory"][key], b["memory"][key]) for key in MEMORY},
        "model_size": _change(a["model"]["size_bytes"], b["model"]["size_bytes"]),
        "placement": _placement_diff(a["placement"], b["placement"]),
        "ops": _ops_diff(a["ops"], b["ops"]),
    }


def _same_model(a: dict, b: dict) -> bool:
    if a["model"]["sha256"] and b["model"]["sha256"]:
        return a["model"]["sha256"] == b["model"]["sha256"]
    return a["model"]["name"] == b["model"]["name"] and a["model"]["size_bytes"] == b["model"]["size_bytes"]


def _notes(a: dict, b: dict) -> list[str]:
    """What differs between the two runs besides what is compared: each a reason the numbers may differ."""
    notes = []
    if not _same_model(a, b):
        notes.append(f"two different models: A is {a['model']['name']}, B is {b['model']['name']}")
    if a["runtime"]["runtime"] != b["runtime"]["runtime"]:
        notes.append(f"different runtimes: A ran on {a['runtime']['runtime']}, B on {b['runtime']['runtime']} "
                     "(op types and their names differ between runtimes)")
    elif a["runtime"]["version"] != b["runtime"]["version"]:
        notes.append(f"different {a['runtime']['runtime']} versions: A {a['runtime']['version']}, "
                     f"B {b['runtime']['version']}")
    if a["runtime"]["threads"] != b["runtime"]["threads"]:
        notes.append(f"different thread counts: A {a['runtime']['threads'] or 'default'}, "
                     f"B {b['runtime']['threads'] or 'default'}")
    if a["inputs"] != b["inputs"]:
        notes.append(f"different inputs: A was fed {', '.join(a['inputs']) or 'none'}, "
                     f"B {', '.join(b['inputs']) or 'none'}")
    if a["device"] != b["device"] and all(side["device"]["hostname"] for side in (a, b)):
        notes.append(f"measured on different machines: A on {a['device']['hostname']} ({a['device']['cpu']}), "
                     f"B on {b['device']['hostname']} ({b['device']['cpu']})")
    for name, side in (("A", a), ("B", b)):
        if side["valid"] is False:
            notes.append(f"{name} is NOT VALID: {'; '.join(side['reasons'])}")
    return notes


def _placement_diff(a: Optional[dict], b: Optional[dict]) -> dict:
    """Each side's first choice and coverage, the nodes per backend, and the op types that fell back (left the
    first choice) in one report and not in the other."""
    document: dict = {"a": a, "b": b, "backends": [], "fallback_only_a": [], "fallback_only_b": [],
                      "fallback_both": []}
    if not (a and b):
        return document
    names = list(dict.fromkeys(x["name"] for x in (*a["backends"], *b["backends"])))
    by_a, by_b = ({x["name"]: x for x in side["backends"]} for side in (a, b))
    document["backends"] = [{"name": name, "a_nodes": by_a.get(name, {}).get("nodes", 0),
                             "b_nodes": by_b.get(name, {}).get("nodes", 0),
                             "a_partitions": by_a.get(name, {}).get("partitions", 0),
                             "b_partitions": by_b.get(name, {}).get("partitions", 0)} for name in names]
    fell_a, fell_b = ({(f["op"], f["backend"]): f["count"] for f in side["fallback_ops"]} for side in (a, b))
    document["fallback_only_a"] = [{"op": op, "backend": backend, "count": count}
                                   for (op, backend), count in fell_a.items() if (op, backend) not in fell_b]
    document["fallback_only_b"] = [{"op": op, "backend": backend, "count": count}
                                   for (op, backend), count in fell_b.items() if (op, backend) not in fell_a]
    document["fallback_both"] = [{"op": op, "backend": backend, "a_count": count, "b_count": fell_b[(op, backend)]}
                                 for (op, backend), count in fell_a.items() if (op, backend) in fell_b]
    return document


def _why_no_times(ops: Optional[dict]) -> Optional[str]:
    if ops is None:
        return "run bench with --profile-ops"
    if ops["unavailable"]:
        return ops["unavailable"]
    if not ops["by_type"]:
        return "its profile holds no ops"
    return None


# ONNX Runtime names the quantized (and fused) form of an op differently: an int8 model's Conv runs as QLinearConv
# (static, QDQ folded) or ConvInteger (dynamic), a float model's Conv + activation as FusedConv. The diff compares an
# op type with its other forms (``family``), so float -> int8 reads "Conv -> QLinearConv +6%", not one type gone and
# another new. LiteRT keeps one name (CONV_2D) for every precision.
_RENAMED = {"QGemm": "Gemm", "DynamicQuantizeMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul"}


def family(op: str) -> str:
    """The op type an op's quantized or fused form stands for: QLinearConv, ConvInteger, FusedConv -> Conv."""
    if op in _RENAMED:
        return _RENAMED[op]
    for prefix in ("QLinear", "Fused"):
        if op.startswith(prefix) and len(op) > len(prefix) and op[len(prefix)].isupper():
            return op[len(prefix):]
    if op.endswith("Integer") and len(op) > len("Integer"):
        return op[: -len("Integer")]
    return op


def _by_family(ops: dict) -> dict[str, dict]:
    """Per op family (whatever backend ran it): total µs per run, node count, the op types and backends in it."""
    types: dict[str, dict] = {}
    for row in ops["by_type"]:
        entry = types.setdefault(family(row["op"]), {"total_us": 0.0, "count": 0, "ops": [], "backends": []})
        entry["total_us"] += row["total_us"]
        entry["count"] += row["count"]
        for key, value in (("ops", row["op"]), ("backends", row["backend"])):
            if value not in entry[key]:
                entry[key].append(value)
    return types


def _ops_diff(a: Optional[dict], b: Optional[dict]) -> dict:
    """Per op type (its family: family()), the per-run total (µs, from the profiled runs) in each report and its
    change, sorted by the size of the change. ``unavailable`` says, per side, why there are no times to compare."""
    summary_keys = ("source", "runs", "profiled_p50_ms", "measured_p50_ms", "overhead", "sum_ms", "accounted")
    document: dict = {
        "a": {key: a[key] for key in summary_keys} if a and not _why_no_times(a) else None,
        "b": {key: b[key] for key in summary_keys} if b and not _why_no_times(b) else None,
        "unavailable": {"a": _why_no_times(a), "b": _why_no_times(b)},
        "by_type": [], "total": None,
    }
    if document["a"] is None or document["b"] is None:
        return document
    types_a, types_b = _by_family(a), _by_family(b)
    rows = []
    for op in [*types_a, *(op for op in types_b if op not in types_a)]:
        in_a, in_b = types_a.get(op, {}), types_b.get(op, {})
        a_us, b_us = in_a.get("total_us", 0.0), in_b.get("total_us", 0.0)
        rows.append({"op": op, "a_ops": in_a.get("ops", []), "b_ops": in_b.get("ops", []),
                     "a_us": a_us if in_a else None, "b_us": b_us if in_b else None,
                     "a_count": in_a.get("count", 0), "b_count": in_b.get("count", 0),
                     "a_backends": in_a.get("backends", []), "b_backends": in_b.get("backends", []),
                     "change_us": b_us - a_us,
                     "change_pct": (b_us / a_us - 1) * 100 if in_a and in_b and a_us else None,
                     "status": "changed" if in_a and in_b else "new" if in_b else "gone"})
    document["by_type"] = sorted(rows, key=lambda r: (-abs(r["change_us"]), r["op"]))
    total_a, total_b = sum(t["total_us"] for t in types_a.values()), sum(t["total_us"] for t in types_b.values())
    document["total"] = {"a_us": total_a, "b_us": total_b, "change_us": total_b - total_a,
                         "change_pct": (total_b / total_a - 1) * 100 if total_a else None}
    return document


# ---------------------------------------------------------------- terminal rendering

def _signed(value_ms: float, scale: float) -> str:
    return ("+" if value_ms >= 0 else "-") + fmt_latency(abs(value_ms), scale)


def _pct(change_pct: Optional[float]) -> str:
    return "n/a" if change_pct is None else f"{change_pct:+.0f}%"


def _side_line(name: str, side: dict) -> str:
    model, runtime = side["model"], side["runtime"]
    used = ", ".join(short_backend(name) for name in runtime["used"]) or "none"
    threads = f", threads {runtime['threads']}" if runtime["threads"] else ""
    runs = f", {side['runs']} runs" if side["runs"] else ""
    return (f"{name}  {model['name']} ({model['format'] or '?'}, {human_bytes(model['size_bytes'])}) · "
            f"{runtime['runtime']} {runtime['version'] or ''} on {used}{threads} · {side['repeats']} "
            f"repeat{'s' if side['repeats'] != 1 else ''}{runs} · {side['file']}")


def _bytes_change(change: dict) -> str:
    if change["change"] is None:
        return "n/a"
    sign = "+" if change["change"] >= 0 else "-"
    return f"{sign}{human_bytes(abs(change['change']))} ({_pct(change['change_pct'])})"


def render(document: dict, top: int = TOP) -> str:
    lines = [_side_line("A", document["a"]), _side_line("B", document["b"])]
    lines += [f"note  {note}" for note in document["notes"]]
    lines.append("")
    unit, scale = latency_unit(min(row["a"] for row in document["latency"] if row["metric"] == "p50_ms"))
    rows = [[row["metric"][:-3], fmt_latency(row["a"], scale), fmt_latency(row["b"], scale),
             _pct(row["change_pct"]), fmt_ratio(row["speedup"])] for row in document["latency"]]
    lines += table([f"latency ({unit})", "A", "B", "B vs A", "B speed-up [95%]"], rows)
    methods = {row["speedup"]["method"] for row in document["latency"]} - {None}
    lines.append("A, B: every repeat's runs pooled; speed-up: A / B (above 1: B is faster) " + (
        f"from the repeats' own values, {', '.join(sorted(methods))}" if methods
        else "of the pooled values, no interval: a report has no per-repeat values"))
    lines.append("")
    memory, size = document["memory"], document["model_size"]
    rows = [["model size", human_bytes(size["a"]), human_bytes(size["b"]), _bytes_change(size)],
            ["RSS after load", *_memory_cells(memory["rss_after_load_bytes"])],
            ["peak RSS loading", *_memory_cells(memory["peak_load_bytes"])],
            ["peak RSS measuring", *_memory_cells(memory["peak_steady_bytes"])]]
    lines += table(["memory", "A", "B", "B - A"], rows)
    lines.append("")
    lines += placement_lines(document["placement"])
    lines.append("")
    lines += op_type_lines(document["ops"], top)
    return "\n".join(lines)


def _memory_cells(change: dict) -> list[str]:
    return [human_bytes(change["a"]), human_bytes(change["b"]), _bytes_change(change)]


def _fallback_text(items: Sequence[dict], count_key: str = "count") -> str:
    return ", ".join(f"{item['op']} x{item[count_key]} ({short_backend(item['backend'])})" for item in items)


def placement_lines(placement: dict) -> list[str]:
    a, b = placement["a"], placement["b"]
    lines = []
    for name, side in (("A", a), ("B", b)):
        if side is None:
            lines.append(f"placement {name}: none in the report (a report from before placement was recorded)")
            continue
        coverage = "n/a" if side["coverage"] is None else f"{side['coverage']:.0%}"
        lines.append(f"placement {name}: first choice {short_backend(side['first_choice'])}, coverage {coverage} · "
                     f"{placement_line(side) or 'no nodes'}")
    if not (a and b):
        return lines
    rows = [[short_backend(row["name"]), f"{row['a_nodes']} ({row['a_partitions']})",
             f"{row['b_nodes']} ({row['b_partitions']})", f"{row['b_nodes'] - row['a_nodes']:+d}"]
            for row in placement["backends"]]
    rows.append(["total", str(a["nodes"]), str(b["nodes"]), f"{b['nodes'] - a['nodes']:+d}"])
    lines += table(["nodes (partitions)", "A", "B", "B - A"], rows)
    if placement["fallback_only_a"]:
        lines.append(f"fell back in A only: {_fallback_text(placement['fallback_only_a'])}")
    if placement["fallback_only_b"]:
        lines.append(f"fell back in B only: {_fallback_text(placement['fallback_only_b'])}")
    if placement["fallback_both"]:
        both = ", ".join(f"{item['op']} x{item['a_count']} -> x{item['b_count']} ({short_backend(item['backend'])})"
                         for item in placement["fallback_both"])
        lines.append(f"fell back in both: {both}")
    if not any(placement[key] for key in ("fallback_only_a", "fallback_only_b", "fallback_both")):
        lines.append("fell back: nothing in either")
    return lines


def _op_change(row: dict, scale: float, unit: str) -> str:
    """``-41%``, ``+0.30 ms new``, ``-0.12 ms gone``."""
    if row["status"] == "new":
        return f"{_signed(row['change_us'] / 1e3, scale)} {unit} new"
    if row["status"] == "gone":
        return f"{_signed(row['change_us'] / 1e3, scale)} {unit} gone"
    return f"{_signed(row['change_us'] / 1e3, scale)} {unit} ({_pct(row['change_pct'])})"


def _op_name(row: dict) -> str:
    """``Conv``, or ``Conv+FusedConv -> QLinearConv`` where the two reports run the type under other names."""
    if not row["a_ops"] or not row["b_ops"] or row["a_ops"] == row["b_ops"] == [row["op"]]:
        return row["op"]
    return f"{'+'.join(row['a_ops'])} -> {'+'.join(row['b_ops'])}"


def op_type_lines(ops: dict, top: int = TOP) -> list[str]:
    """The per-op-type table, both reports' profiling cost, or (one line a side) why there is nothing to compare."""
    missing = [(name, ops["unavailable"][key]) for name, key in (("A", "a"), ("B", "b")) if ops["unavailable"][key]]
    if len(missing) == 2 and missing[0][1] == missing[1][1]:
        return [f"ops       no per-op times in A or B: {missing[0][1]}"]
    if missing:
        return [f"ops       no per-op times in {name}: {why}" for name, why in missing]
    total = ops["total"]
    unit, scale = latency_unit(max(total["a_us"], total["b_us"]) / 1e3)
    shown = ops["by_type"] if top == 0 else ops["by_type"][:top]
    rows = [[_op_name(row), "-" if row["a_us"] is None else fmt_latency(row["a_us"] / 1e3, scale),
             "-" if row["b_us"] is None else fmt_latency(row["b_us"] / 1e3, scale),
             f"{row['a_count']} -> {row['b_count']}", _op_change(row, scale, unit)] for row in shown]
    rows.append(["all ops", fmt_latency(total["a_us"] / 1e3, scale), fmt_latency(total["b_us"] / 1e3, scale), "",
                 f"{_signed(total['change_us'] / 1e3, scale)} {unit} ({_pct(total['change_pct'])})"])
    lines = table([f"op type ({unit} per run)", "A", "B", "nodes", "change"], rows)
    if len(shown) < len(ops["by_type"]):
        lines.append(f"+{len(ops['by_type']) - len(shown)} more op types (--top 0 or --json for all)")
    for name, key in (("A", "a"), ("B", "b")):
        side = ops[key]
        overhead = f", {side['overhead']:.2f}x the measured p50" if side["overhead"] else ""
        accounted = f"; the ops add up to {side['accounted']:.0%} of the profiled mean" if side["accounted"] else ""
        lines.append(f"profiled  {name}: {side['runs']} runs [{side['source']}], p50 "
                     f"{fmt_latency(side['profiled_p50_ms'], scale)} {unit}{overhead}{accounted}")
    lines.append("op times are from the profiled runs, not the measured ones: profiling costs time (the x above)")
    return lines
