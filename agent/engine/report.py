"""The benchmark report: one versioned JSON document (docs/report.md) and its terminal rendering."""

from __future__ import annotations

import json
import math
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from edgebench.agent.engine.noise import warning_line
from edgebench.agent.engine.ops import TOP, short_backend
from edgebench.agent.errors import UsageError

SCHEMA = "edgebench.bench/2"
SWEEP_SCHEMA = "edgebench.sweep/1"  # bench --prompt-tokens A,B --threads C,D: {"schema", "reports": [one per row]}
SCHEMA_FILE = Path(__file__).with_name("schemas") / "bench-report.v2.json"
# Version 1 (one child process a run; no `repeats`, `samples.repeat`, `stats.interval`): for reading old reports.
SCHEMA_FILE_V1 = Path(__file__).with_name("schemas") / "bench-report.v1.json"
SCHEMA_FILES = {"edgebench.bench/1": SCHEMA_FILE_V1, SCHEMA: SCHEMA_FILE}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json(document: dict, path: str) -> None:
    """Write to a temporary name and rename, so a reader never sees half a report."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    partial.replace(target)


def check_writable(path: str, flag: str) -> None:
    """Raise UsageError unless a file can be written at ``path``: its folder takes a new file (write_json
    writes a partial file there and renames it), and the path is not a directory or a device."""
    target = Path(path)
    try:
        mode: Optional[int] = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{flag} {path}: is not a regular file (a directory or a device), cannot write a file there")
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not an existing folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in {folder} ({exc.strerror})") from None


def emit_json(document: dict, destination: Optional[str]) -> None:
    """``--json FILE`` writes the document there; ``--json -`` prints it to stdout."""
    if destination == "-":
        print(json.dumps(document, indent=1, allow_nan=False))
    elif destination:
        write_json(document, destination)


# ---------------------------------------------------------------- terminal rendering

def human_bytes(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def latency_unit(reference_ms: float) -> tuple[str, float]:
    """µs for sub-millisecond models, ms otherwise; one unit for a whole table."""
    return ("µs", 1000.0) if reference_ms < 1.0 else ("ms", 1.0)


def fmt_latency(value_ms: Optional[float], scale: float) -> str:
    if value_ms is None or (isinstance(value_ms, float) and math.isnan(value_ms)):
        return "n/a"
    value = value_ms * scale
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}" if value < 1 else f"{value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align_left: int = 1) -> list[str]:
    """Plain aligned columns: the first ``align_left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i < align_left else str(c).rjust(w) for i, (c, w) in
                 enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _tensor_line(tensor: dict) -> str:
    from edgebench.agent.engine.inputs import format_shape

    quant = f" (scale {tensor['scale']:.4g}, zp {tensor['zero_point']})" if tensor.get("scale") else ""
    return f"{tensor['name']} {tensor['dtype']} {format_shape(tensor['shape'])}{quant}"


def _backend_line(runtime: dict, threads: bool = True) -> str:
    """``threads``: say the thread count (a sweep's table has a column for it instead)."""
    used = ", ".join(runtime["used"]) or "none"
    text = f"{runtime['runtime']} ({runtime['module']} {runtime['version']}) · ran on: {used}"
    if threads and runtime.get("threads"):
        text += f" · threads {runtime['threads']}"
    return text


def render(report: dict) -> str:
    model, runtime, stats = report["model"], report["runtime"], report["stats"]
    timing, mem = report["timing"], report["memory"]
    unit, scale = latency_unit(stats["p50_ms"])
    lines = [
        f"model     {model['name']}  ({model['format']}, {human_bytes(model['size_bytes'])}, "
        f"sha256 {model['sha256'][:12]})",
        f"runtime   {_backend_line(runtime)}",
    ]
    lines += [f"fallback  {f['candidate']}: {f['reason']}" for f in runtime["fallbacks"]]
    weights = weights_line(report.get("weights"))
    if weights:
        lines.append(f"weights   {weights}")
    placed = placement_line(report.get("placement"))
    if placed:
        lines.append(f"placement {placed}")
    lines += [f"note      {note}" for note in runtime["notes"]]
    for feed in report["inputs_fed"]:
        from edgebench.agent.engine.inputs import format_shape

        lines.append(f"input     {feed['name']} {feed['dtype']} {format_shape(feed['shape'])} ({feed['source']})")
    lines.append(f"load      {timing['load_ms']:.1f} ms · first inference {timing['first_inference_ms']:.2f} ms · "
                 f"warm-up {timing['warmup']['runs']} runs in {timing['warmup']['duration_s']:.2f} s")
    measured = timing["measured"]
    generation = report.get("generation")
    if generation:
        lines += generation_lines(generation, len(report.get("repeats") or []))
    else:
        lines.append(f"measured  {measured['runs']} runs in {measured['duration_s']:.2f} s · "
                     f"{stats['throughput_ips']:.1f} inferences/s")
    lines += repeat_lines(report, scale, unit)
    lines.append("")
    keys = ["min", "p50", "p90", "p95", "p99", "max", "mean", "std"]
    row = [f"{'inter-token' if generation else 'latency'} ({unit})"] + [fmt_latency(stats[f"{k}_ms"], scale)
                                                                         for k in keys]
    lines += ["  " + line for line in table([""] + keys, [row])]
    lines += interval_lines(stats, scale, unit)
    lines.append("")
    steady = mem.get("peak_steady_bytes")
    lines.append(f"memory    RSS {human_bytes(mem['rss_before_load_bytes'])} before load, "
                 f"{human_bytes(mem['rss_after_load_bytes'])} after; peak {human_bytes(mem['peak_load_bytes'])} "
                 f"while loading/warming up, {human_bytes(steady)} while measuring")
    lines += physics_lines(report)
    lines += op_lines(report.get("ops"))
    noisy = warning_line(report.get("noise"))
    if noisy:
        lines.append(noisy)
    validity = report["validity"]
    lines.append("verdict   " + ("valid" if validity["valid"] else "NOT VALID: " + "; ".join(validity["reasons"])))
    return "\n".join(lines)


def fmt_metric(metric: dict, digits: int = 1) -> str:
    """A generation metric: its estimate, with its interval from the repeats where there is one."""
    text = f"{metric['estimate']:.{digits}f}"
    if metric.get("ci"):
        text += f" [{metric['ci'][0]:.{digits}f}, {metric['ci'][1]:.{digits}f}]"
    return f"{text} {metric['unit']}"


def generation_lines(generation: dict, repeats: int) -> list[str]:
    """A language model's numbers: TTFT, prefill and decode tokens/s (95% intervals from the repeats), the context
    and its KV cache, energy per token where power was sensed."""
    interval = f"95% intervals from {repeats} repeats" if repeats >= 2 else "one repeat: no interval (--repeats)"
    lines = [f"generate  prompt {generation['prompt_tokens']} tokens, then {generation['gen_tokens']} decoded "
             f"(greedy) · context {generation['context']} tokens · KV cache "
             f"{human_bytes(generation['kv_cache_bytes'])}",
             f"  TTFT {fmt_metric(generation['ttft_ms'], 2)} · prefill {fmt_metric(generation['prefill_tok_s'])}"
             f" · decode {fmt_metric(generation['decode_tok_s'])} ({interval})"]
    if generation.get("energy_per_token_mj") is not None:
        prefill = generation.get("prefill_energy_per_token_mj")
        per_prompt = f" · {prefill:.2f} mJ per prompt token (prefill)" if prefill is not None else ""
        lines.append(f"  energy  {generation['energy_per_token_mj']:.2f} mJ per decoded token{per_prompt}")
    if not generation.get("same_tokens_every_repeat", True):
        lines.append("  warning: the repeats generated different tokens (greedy decoding should not)")
    return lines


def sweep_table(reports: Sequence[dict]) -> str:
    """A language model's sweep (thread counts x prompt lengths): one row per report, its threads the runtime's."""
    first = reports[0]
    lines = [f"model     {first['model']['name']}  ({first['model']['format']}, "
             f"{human_bytes(first['model']['size_bytes'])})",
             f"runtime   {_backend_line(first['runtime'], threads=False)}", ""]
    headers = ["threads", "prompt", "decoded", "TTFT", "prefill", "decode", "inter-token p50/p99", "KV cache",
               "peak RSS"]
    rows = []
    for report in reports:
        generation, stats = report["generation"], report["stats"]
        rows.append([str(report["runtime"].get("threads") or "-"), str(generation["prompt_tokens"]),
                     str(generation["gen_tokens"]),
                     fmt_metric(generation["ttft_ms"], 1), fmt_metric(generation["prefill_tok_s"]),
                     fmt_metric(generation["decode_tok_s"]), f"{stats['p50_ms']:.2f}/{stats['p99_ms']:.2f} ms",
                     human_bytes(generation["kv_cache_bytes"]),
                     human_bytes(report["memory"].get("peak_steady_bytes"))])
    lines += ["  " + line for line in table(headers, rows, align_left=0)]
    repeats = len(first.get("repeats") or [])
    lines.append(f"  [95% intervals from {repeats} repeats, interleaved across the rows]" if repeats >= 2 else
                 "  (one repeat: no intervals; --repeats)")
    return "\n".join(lines)


def interval_lines(stats: dict, scale: float, unit: str) -> list[str]:
    """The p90 a rerun should confirm: the typical unit's, with its interval and where an identical rerun is expected
    (docs/statistics.md); the pooled samples' distribution-free interval only where there are no units."""
    p90 = (stats.get("interval") or {}).get("p90_ms") or {}
    if not p90.get("ci"):
        ci = stats.get("p90_ci_ms")
        return [f"  p90 {stats['ci_level']:.0%} confidence interval (this run's samples): "
                f"[{fmt_latency(ci[0], scale)}, {fmt_latency(ci[1], scale)}] {unit}"] if ci else []
    ci, rerun = p90["ci"], p90.get("rerun")
    units = stats["interval"].get("units")
    what = "repeats" if stats["interval"].get("method") == "between-repeats" else "parts of the run"
    line = (f"  p90 {fmt_latency(p90['estimate'], scale)} {unit}, {stats['ci_level']:.0%} interval "
            f"[{fmt_latency(ci[0], scale)}, {fmt_latency(ci[1], scale)}] from {units} {what}")
    if rerun:
        line += f"; an identical rerun: [{fmt_latency(rerun[0], scale)}, {fmt_latency(rerun[1], scale)}]"
        history = stats["interval"].get("history") or {}
        spread = (history.get("between_run_sd") or {}).get("p90_ms")
        if spread:
            line += f" (this machine's last {history['runs']} runs differ by {spread:.1%} beyond their repeats)"
    return [line]


def repeat_lines(report: dict, scale: float, unit: str) -> list[str]:
    """With several repeats: how many, and how far apart their p50s are (each a fresh process)."""
    repeats = report.get("repeats") or []
    if len(repeats) < 2:
        return []
    p50 = [r["stats"]["p50_ms"] for r in repeats]
    loads = [r["timing"]["load_ms"] for r in repeats]
    return [f"repeats   {len(repeats)} fresh processes · p50 per repeat {fmt_latency(min(p50), scale)} to "
            f"{fmt_latency(max(p50), scale)} {unit} · load {min(loads):.1f} to {max(loads):.1f} ms "
            f"(load and first inference above: medians)"]


def _window_summary(window: dict, kind: str, fmt) -> Optional[str]:
    items = [(sensor, w) for sensor, w in window.items() if w["kind"] == kind]
    if not items:
        return None
    sensor, w = max(items, key=lambda item: item[1]["max"])
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    return f"{fmt(w['first'])} -> {fmt(w['last'])}, max {fmt(w['max'])} [{sensor}]{more}"


def physics_lines(report: dict) -> list[str]:
    physics = report.get("physics")
    if not physics:
        return []
    window = physics["window"]
    lines = []
    wait = physics.get("wait")
    if wait and wait.get("waited_s") is not None and "note" not in wait:
        lines.append(f"cooldown  waited {wait['waited_s']:.1f} s for {wait['max_start_temp_c']:g} °C "
                     f"(started at {wait['temp_at_start_c']:.1f} °C)")
    temperature = _window_summary(window, "temperature", lambda v: f"{v:.1f} °C")
    if temperature:
        lines.append(f"temp      {temperature}")
    clocks = _window_summary(window, "frequency", lambda v: f"{v / 1e6:.0f} MHz")
    if clocks:
        lines.append(f"clock     {clocks}")
    energy = physics.get("energy")
    if energy and "avg_w" in energy:
        idle = f", idle {energy['idle_w']:.2f} W" if energy.get("idle_w") is not None else ""
        per = energy.get("energy_per_inference_mj")
        per_text = f" · {per:.4g} mJ/inference above idle" if per is not None else ""
        lines.append(f"power     avg {energy['avg_w']:.2f} W, peak {energy['peak_w']:.2f} W{idle}{per_text} "
                     f"[{energy['source']}]")
    elif energy:
        lines.append(f"power     {energy.get('note', 'n/a')}")
    if not (temperature or clocks or energy):
        lines.append("sensors   none readable on this machine (see `edgebench sensors`)")
    throttling = physics["throttling"]
    if throttling["detected"]:
        reasons = ", ".join(sorted({e["reason"] for e in throttling["events"]}))
        lines.append(f"THROTTLED from {throttling['onset_s']:.1f} s into the run: {reasons}")
    sustained = report.get("sustained")
    if sustained and sustained.get("cold_p90_ms"):
        ratio = sustained["steady_vs_cold_p90"]
        first = sustained["time_to_first_throttle_s"]
        lines.append(f"sustained p90 cold {sustained['cold_p90_ms']:.3f} ms -> steady "
                     f"{sustained['steady_p90_ms']:.3f} ms "
                     f"(x{ratio:.3f}); first throttle: {'none' if first is None else f'{first:.1f} s'}; "
                     f"{len(sustained['windows'])} windows of {sustained['window_s']:g} s in the report")
    return lines


def fmt_ratio(ratio: Optional[dict]) -> str:
    """A speed-up with its interval, ``1.12x [1.03, 1.21]`` (bench.speedup's record), or ``-``."""
    if not ratio:
        return "-"
    ci = ratio.get("ci")
    return f"{ratio['estimate']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{ratio['estimate']:.2f}x"


def placement_line(placement: Optional[dict]) -> Optional[str]:
    """``xnnpack: 60/64 nodes in 2 partitions; cpu: QUANTIZE x2, AVERAGE_POOL_2D x1, SOFTMAX x1``."""
    if not placement or not placement["nodes"]:
        return None
    first = placement["first_choice"]
    taken = next((b for b in placement["backends"] if b["name"] == first), {"nodes": 0, "partitions": 0})
    text = (f"{short_backend(first)}: {taken['nodes']}/{placement['nodes']} nodes in {taken['partitions']} "
            f"partition{'s' if taken['partitions'] != 1 else ''}")
    rest: dict[str, list[str]] = {}
    for item in placement["fallback_ops"]:
        rest.setdefault(item["backend"], []).append(f"{item['op']} x{item['count']}")
    for backend, ops in rest.items():
        more = f", +{len(ops) - 6} more types" if len(ops) > 6 else ""
        text += f"; {short_backend(backend)}: {', '.join(ops[:6])}{more}"
    return text


def op_lines(ops: Optional[dict], top: int = TOP) -> list[str]:
    """The terminal's per-op section: the cost of profiling, the top ``top`` nodes, or why there are no times."""
    if not ops:
        return []
    if ops.get("unavailable"):
        return [f"ops       no per-op times: {ops['unavailable']}"]
    overhead = f", {ops['overhead']:.2f}x the measured p50" if ops.get("overhead") else ""
    lines = [f"ops       {ops['runs']} profiled runs [{ops['source']}]: p50 {ops['profiled_p50_ms']:.3f} ms"
             f"{overhead}; the ops add up to {ops['sum_ms']:.3f} ms ({ops['accounted']:.0%} of the profiled mean)"]
    if ops.get("note"):
        lines.append(f"note      {ops['note']}")
    rows = [[node["name"][:48], node["op"], short_backend(node["backend"]), f"{node['mean_us']:.1f}",
             f"{node['median_us']:.1f}", f"{node['share']:.1%}"] for node in ops["top"][:top]]
    lines += ["  " + line for line in table(["node", "op", "on", "mean µs", "median µs", "share"], rows,
                                            align_left=3)]
    types = ", ".join(f"{e['op']} {e['share']:.0%}" for e in ops["by_type"][:5])
    lines.append(f"by type   {types}")
    return lines


def weights_line(weights: Optional[dict]) -> Optional[str]:
    """``2.6 M weights (float32), 0.0% zero; XNNPACK sparse kernels: no (weights stored dense: ...)``."""
    if not weights or weights.get("unavailable") or weights.get("sparsity") is None:
        return None
    dtypes = ", ".join(sorted(weights["by_dtype"]))
    text = f"{weights['weights'] / 1e6:.3g} M weights ({dtypes}), {weights['sparsity']:.1%} zero"
    sparse = weights.get("xnnpack_sparse")
    if sparse:
        text += "; XNNPACK sparse kernels: " + ("possible" if sparse["possible"] else f"no ({sparse['why']})")
    return text
