"""A bench report (edgebench.bench/2) as one self-contained HTML page, and its tables as CSV files.

Everything the browser draws is computed here, in Python (histogram bins, CDF quantiles, windows), so the page's
numbers are the report's: the charts are drawn by Observable Plot from that data, and every chart has its numbers
in a table beside it (``--csv DIR``: the same tables, one file per chart). Each chart's container carries
``data-points`` (the finite points it was given) and ``data-mark`` (which of Plot's mark groups draws them), so a
test can count what the browser drew against what the page was given.
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgebench.agent.engine.report import human_bytes, latency_unit

VENDOR = Path(__file__).with_name("vendor")
SCRIPTS = ("d3.min.js", "plot.umd.min.js")  # d3 first: Plot's UMD build reads the global d3
HISTOGRAM_BINS = 40
HISTOGRAM_TOP = 0.999  # the histogram and CDF span the fastest run to this quantile (at most 1.2x the p99): a few
# slow outliers must not squeeze every other run into one bin
CDF_LEVELS = 101
TIMELINE_POINTS = 2000  # dots drawn of the run's latency over time (every k-th run): a browser draws 1M dots slowly
TIMELINE_WINDOWS = 20
PERCENTILES = ("p50", "p90", "p99")


@dataclass
class Chart:
    """One chart: what Plot draws (``kind`` names the page's drawing function) and the table of its numbers."""

    id: str
    title: str
    kind: str
    mark: str  # rect | dot | line | bar: the mark group whose elements the test counts against ``points``
    data: list[dict]
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""
    options: dict = field(default_factory=dict)

    @property
    def points(self) -> int:
        return len(self.data)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _latencies(report: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latency ms, start offset s, repeat index) of every measured run; a /1 report has no repeat indices."""
    samples = report.get("samples") or {}
    latency = np.asarray(samples.get("latency_ns") or [], dtype=float) / 1e6
    offset = np.asarray(samples.get("start_offset_ns") or [0.0] * len(latency), dtype=float) / 1e9
    repeat = np.asarray(samples.get("repeat") or [0] * len(latency), dtype=int)
    keep = np.isfinite(latency) & np.isfinite(offset)
    return latency[keep], offset[keep], repeat[keep]


def _repeat_name(index: int) -> str:
    return f"repeat {index}"


def _what(report: dict) -> str:
    """A language model's samples are its decode steps: their latency is the inter-token latency."""
    return "inter-token latency" if report.get("generation") else "latency"


def histogram_chart(report: dict, unit: str, scale: float) -> Optional[Chart]:
    latency, _, repeat = _latencies(report)
    if not len(latency):
        return None
    edges = np.histogram_bin_edges(latency, bins=HISTOGRAM_BINS, range=_span(latency))
    repeats = sorted(set(repeat.tolist()))
    counts = {r: np.histogram(latency[repeat == r], bins=edges)[0] for r in repeats}
    data = [{"x1": edges[i] * scale, "x2": edges[i + 1] * scale, "y": int(counts[r][i]), "series": _repeat_name(r)}
            for r in repeats for i in range(len(edges) - 1)]
    rows = [[edges[i] * scale, edges[i + 1] * scale, *(int(counts[r][i]) for r in repeats)]
            for i in range(len(edges) - 1)]
    above = int((latency > edges[-1]).sum())
    return Chart("latency-histogram", f"{_what(report)} distribution", "histogram", "rect", data,
                 [f"from ({unit})", f"to ({unit})", *(f"runs, {_repeat_name(r)}" for r in repeats)], rows,
                 f"{len(latency)} runs in {len(edges) - 1} bins; {above} slower runs are not drawn",
                 {"unit": unit, "rules": _rules(report, scale)})


def _span(latency: np.ndarray) -> tuple[float, float]:
    """The latency axis (ms): the fastest run to the HISTOGRAM_TOP quantile, at most 1.2x the p99."""
    low = float(latency.min())
    top = min(float(np.quantile(latency, HISTOGRAM_TOP)), 1.2 * float(np.quantile(latency, 0.99)))
    return low, max(top, low)


def _rules(report: dict, scale: float) -> list[dict]:
    """The pooled p50/p90/p99 (report["stats"]), drawn as rules on the latency axis."""
    stats = report.get("stats") or {}
    return [{"x": stats[f"{p}_ms"] * scale, "label": p} for p in PERCENTILES
            if isinstance(stats.get(f"{p}_ms"), (int, float)) and math.isfinite(stats[f"{p}_ms"])]


def throttle_rules(report: dict) -> list[dict]:
    """Where throttling began (report["physics"]["throttling"]: each event's onset, seconds from the first measured
    run), as rules on the time axis of the latency and sensor charts; none when nothing throttled."""
    throttling = (report.get("physics") or {}).get("throttling") or {}
    if not throttling.get("detected"):
        return []
    onsets = {(event.get("reason"), event.get("onset_s")) for event in throttling.get("events") or []
              if isinstance(event.get("onset_s"), (int, float)) and math.isfinite(event["onset_s"])}
    return [{"x": onset, "label": f"throttling: {reason}"} for reason, onset in sorted(onsets, key=lambda e: e[1])]


def cdf_chart(report: dict, unit: str, scale: float) -> Optional[Chart]:
    latency, _, repeat = _latencies(report)
    if not len(latency):
        return None
    levels = np.linspace(0.0, 1.0, CDF_LEVELS)
    data = [{"x": float(x) * scale, "y": float(y), "series": _repeat_name(r)}
            for r in sorted(set(repeat.tolist())) for x, y in zip(np.quantile(latency[repeat == r], levels), levels)]
    headers, rows = percentile_table(report, unit, scale)
    return Chart("latency-cdf", f"{_what(report)} CDF", "cdf", "line", data, headers, rows,
                 f"fraction of runs at most x, per repeat (the axis cut as the histogram's); rules: the pooled "
                 f"{', '.join(PERCENTILES)}",
                 {"unit": unit, "rules": _rules(report, scale), "domain": [v * scale for v in _span(latency)]})


def percentile_table(report: dict, unit: str, scale: float) -> tuple[list[str], list[list[Any]]]:
    """p50/p90/p99: pooled (report["stats"]) and per repeat (report["repeats"][i]["stats"])."""
    repeats = report.get("repeats") or []
    headers = ["percentile", f"pooled ({unit})", *(f"{_repeat_name(r.get('index', i))} ({unit})"
                                                  for i, r in enumerate(repeats))]
    rows = [[p, _scaled((report.get("stats") or {}).get(f"{p}_ms"), scale),
             *(_scaled((r.get("stats") or {}).get(f"{p}_ms"), scale) for r in repeats)] for p in PERCENTILES]
    return headers, rows


def _scaled(value: Optional[float], scale: float) -> Optional[float]:
    return None if value is None else value * scale


def timeline_chart(report: dict, unit: str, scale: float) -> Optional[Chart]:
    latency, offset, repeat = _latencies(report)
    if not len(latency):
        return None
    picked = np.unique(np.linspace(0, len(latency) - 1, min(len(latency), TIMELINE_POINTS)).astype(int))
    data = [{"x": float(offset[i]), "y": float(latency[i]) * scale, "series": _repeat_name(int(repeat[i]))}
            for i in picked]
    return Chart("latency-timeline", f"{_what(report)} over the run", "timeline", "dot", data,
                 *window_table(latency, offset, unit, scale),
                 f"{len(picked)} of {len(latency)} runs drawn (every {max(1, len(latency) // len(picked))}th) at "
                 "their start, seconds from the first measured run; the table: every run, in windows of time"
                 + _throttle_caption(report), {"unit": unit, "rules": throttle_rules(report)})


def window_table(latency: np.ndarray, offset: np.ndarray, unit: str, scale: float) -> tuple[list[str], list]:
    edges = np.linspace(offset.min(), offset.max(), TIMELINE_WINDOWS + 1)
    which = np.clip(np.searchsorted(edges, offset, side="right") - 1, 0, TIMELINE_WINDOWS - 1)
    rows = []
    for w in range(TIMELINE_WINDOWS):
        values = latency[which == w]
        if len(values):
            rows.append([float(edges[w]), float(edges[w + 1]), len(values),
                         *(float(v) * scale for v in np.percentile(values, [50, 90])), float(values.max()) * scale])
    return ["from (s)", "to (s)", "runs", f"p50 ({unit})", f"p90 ({unit})", f"max ({unit})"], rows


def memory_chart(report: dict) -> Optional[Chart]:
    samples = [(t, b) for t, b in (report.get("memory") or {}).get("rss_samples") or []
               if isinstance(t, (int, float)) and isinstance(b, (int, float)) and math.isfinite(t) and math.isfinite(b)]
    if not samples:
        return None
    data = [{"x": t / 1e9, "y": b / 1e6} for t, b in samples]
    peak = max(b for _, b in samples)
    return Chart("memory", "memory (RSS) over the run", "series", "dot", data, ["offset (s)", "RSS (MB)"],
                 [[d["x"], d["y"]] for d in data],
                 f"the child's resident memory, sampled by the parent; negative offsets: load and warm-up; "
                 f"peak sampled {human_bytes(peak)}", {"y": "RSS (MB)"})


def ops_chart(report: dict) -> Optional[Chart]:
    by_type = (report.get("ops") or {}).get("by_type") or []
    data = [{"op": f"{e['op']} ({e.get('backend') or '?'})", "x": e["total_us"], "share": e.get("share")}
            for e in by_type if isinstance(e.get("total_us"), (int, float)) and math.isfinite(e["total_us"])]
    if not data:
        return None
    rows = [[e["op"], e.get("backend"), e.get("count"), e.get("total_us"), e.get("share")] for e in by_type]
    return Chart("ops-by-type", "time per op type (profiled runs)", "bars", "bar", data,
                 ["op", "backend", "nodes", "total (µs)", "share"], rows,
                 f"{report['ops'].get('runs')} profiled runs [{report['ops'].get('source')}]; profiling inflates "
                 "small ops: read the shares", {})


def physics_charts(report: dict) -> list[Chart]:
    """One chart per sensor reading (temperature, clock, power...) sampled across the run: Plot has no second y
    axis, so each reading gets its own panel on the same time axis."""
    physics = report.get("physics") or {}
    series: dict[str, list[dict]] = {}
    for offset_ns, values in physics.get("samples") or []:
        for name, value in (values or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value) and math.isfinite(offset_ns):
                series.setdefault(name, []).append({"x": offset_ns / 1e9, "y": value})
    window = physics.get("window") or {}
    charts = []
    for n, (name, data) in enumerate(sorted(series.items())):
        unit = (window.get(name) or {}).get("unit") or ""
        kind = (window.get(name) or {}).get("kind") or "reading"
        label = f"{kind} ({unit})" if unit else kind
        charts.append(Chart(f"physics-{n}", f"{name} over the run", "series", "dot", data, ["offset (s)", label],
                            [[d["x"], d["y"]] for d in data],
                            "sampled by the parent across the whole run" + _throttle_caption(report),
                            {"y": label, "rules": throttle_rules(report)}))
    return charts


def _throttle_caption(report: dict) -> str:
    found = throttle_rules(report)
    return "; red rules: where throttling began (" + ", ".join(f"{r['label']} at {r['x']:.3g} s" for r in found) \
        + ")" if found else ""


def charts(report: dict) -> list[Chart]:
    """Every chart the report has data for, in page order."""
    unit, scale = latency_unit((report.get("stats") or {}).get("p50_ms") or 1.0)
    found = [histogram_chart(report, unit, scale), cdf_chart(report, unit, scale),
             timeline_chart(report, unit, scale), *physics_charts(report), memory_chart(report), ops_chart(report)]
    return [chart for chart in found if chart is not None]


def generation_table(report: dict) -> Optional[tuple[list[str], list[list[Any]]]]:
    """A language model's TTFT, prefill and decode speed (report["generation"]): estimate and interval."""
    generation = report.get("generation")
    if not generation:
        return None
    rows = []
    for key in ("ttft_ms", "prefill_tok_s", "decode_tok_s"):
        metric = generation.get(key) or {}
        ci = metric.get("ci") or [None, None]
        rows.append([key, metric.get("estimate"), metric.get("unit"), ci[0], ci[1]])
    return ["metric", "estimate", "unit", "95% low", "95% high"], rows


# ---------------------------------------------------------------- HTML

def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(chart: Chart) -> str:
    return (f'<section class="chart" id="{chart.id}" data-points="{chart.points}" data-mark="{chart.mark}">'
            f"<h2>{html.escape(chart.title)}</h2><p class=\"caption\">{html.escape(chart.caption)}</p>"
            f'<div class="plot"></div><details open><summary>numbers</summary>'
            f"{html_table(chart.headers, chart.rows, chart.id + '-table')}</details></section>")


def _summary(report: dict) -> str:
    model, runtime, stats = report.get("model") or {}, report.get("runtime") or {}, report.get("stats") or {}
    used = ",".join(runtime.get("used") or []) or "default"
    return (f"<p>{html.escape(str(model.get('name')))} ({html.escape(str(model.get('format')))}, "
            f"{human_bytes(model.get('size_bytes'))}) on {html.escape(str(runtime.get('runtime')))} "
            f"{html.escape(str(runtime.get('version')))} [{html.escape(used)}]; {stats.get('count')} runs, "
            f"{len(report.get('repeats') or [])} repeats; report made {html.escape(str(report.get('created')))}</p>")


def _json_for_script(document: Any) -> str:
    """JSON inside a <script> element: "</" would end the element early."""
    return json.dumps(document, allow_nan=False).replace("</", "<\\/")


@dataclass
class Table:
    """A table without a chart (a language model's generation, a comparison's drift): a section and a CSV file."""

    id: str
    title: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Page:
    """What one page shows, whatever document it was made from: ``render_page`` and ``write`` take it as it is."""

    title: str
    summary_html: str
    charts: list[Chart]
    tables: list[Table] = field(default_factory=list)


def report_page(report: dict) -> Page:
    """One bench report's page."""
    generation = generation_table(report)
    tables = [Table("generation", "generation", *generation)] if generation else []
    return Page(f"edgebench: {(report.get('model') or {}).get('name')}", _summary(report), charts(report), tables)


def _table_section(table: Table) -> str:
    return (f'<section id="{table.id}"><h2>{html.escape(table.title)}</h2>'
            f"{html_table(table.headers, table.rows, table.id + '-table')}</section>")


def libraries() -> str:
    """d3 and Plot as inline <script> elements: every page (the collector's too, server/page.py) draws offline."""
    return "".join(f"<script>{(VENDOR / name).read_text()}</script>\n" for name in SCRIPTS)


def render_page(title: str, summary_html: str, charts: Sequence[Chart], extra_sections: Sequence[Table] = ()) -> str:
    """The whole page, for every kind of document: styles, the summary, the tables without a chart, each chart with
    its table, the inlined libraries and the drawing code (one copy: every page draws the same way)."""
    data = [{"id": c.id, "kind": c.kind, "data": c.data, **c.options} for c in charts]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{summary_html}"
            + "".join(_table_section(t) for t in extra_sections) + "".join(_section(c) for c in charts)
            + f'\n{libraries()}<script type="application/json" id="edgebench-data">{_json_for_script(data)}</script>'
            f"\n<script>{DRAW}</script></body></html>\n")


def render(report: dict) -> str:
    """One bench report's whole page."""
    built = report_page(report)
    return render_page(built.title, built.summary_html, built.charts, built.tables)


def write(report: dict | Page, html_path: Optional[str] = None, csv_dir: Optional[str] = None) -> list[Path]:
    """Write the page and/or the tables (``DIR/<chart or table id>.csv``) of a bench report or of a built ``Page``
    (several reports, a variants or compare document: html/several.py); the files written."""
    built = report if isinstance(report, Page) else report_page(report)
    written = []
    if html_path:
        Path(html_path).write_text(render_page(built.title, built.summary_html, built.charts, built.tables),
                                   encoding="utf-8")
        written.append(Path(html_path))
    if csv_dir:
        written += write_csv(built, Path(csv_dir))
    return written


def write_csv(report: dict | Page, directory: Path) -> list[Path]:
    built = report if isinstance(report, Page) else report_page(report)
    directory.mkdir(parents=True, exist_ok=True)
    tables = [(t.id, t.headers, t.rows) for t in built.tables] + [(c.id, c.headers, c.rows) for c in built.charts]
    paths = []
    for name, headers, rows in tables:
        path = directory / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(headers)
            writer.writerows([["" if v is None else v for v in row] for row in rows])
        paths.append(path)
    return paths


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin:1.2em 0 .2em} .caption{color:#555;margin:.2em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.4em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#f3f3f3}
section.chart{border-top:1px solid #ddd;padding-top:.4em} summary{cursor:pointer;color:#555}
"""

# Plot draws each chart from its data; rules mark the pooled percentiles; the trade-off's recommended variant is
# ringed by a text glyph, not a second dot, so the dots drawn stay one per variant. Marks are Plot's own (their
# aria-label groups: rect, line, dot, bar), so the DOM shows exactly what was drawn.
DRAW = """
const CHARTS = JSON.parse(document.getElementById("edgebench-data").textContent);
const color = c => ({legend: true, type: "categorical", ...(c.order ? {domain: c.order} : {})});
const rules = c => !(c.rules && c.rules.length) ? [] : [
                    Plot.ruleX(c.rules, {x: "x", stroke: "#d62728", strokeDasharray: "4,3"}),
                    Plot.text(c.rules, {x: "x", text: "label", frameAnchor: "top", dy: -4, fill: "#d62728"})];
const DRAWERS = {
  histogram: c => Plot.plot({width: 1000, marginTop: 24, color: color(c), x: {label: `latency (${c.unit})`},
    y: {label: "runs", grid: true},
    marks: [Plot.rectY(c.data, {x1: "x1", x2: "x2", y: "y", fill: "series", tip: true}), ...rules(c)]}),
  cdf: c => Plot.plot({width: 1000, marginTop: 24, color: color(c), clip: true,
    x: {label: `latency (${c.unit})`, domain: c.domain},
    y: {label: "fraction of runs", grid: true, domain: [0, 1]},
    marks: [Plot.line(c.data, {x: "x", y: "y", stroke: "series"}), ...rules(c)]}),
  timeline: c => Plot.plot({width: 1000, color: color(c), x: {label: "seconds from the first measured run"},
    y: {label: `latency (${c.unit})`, grid: true},
    marks: [Plot.dot(c.data, {x: "x", y: "y", fill: "series", r: 1.5, stroke: null}), ...rules(c)]}),
  series: c => Plot.plot({width: 1000, height: 260, marginTop: 24, x: {label: "seconds from the first measured run"},
    y: {label: c.y, grid: true},
    marks: [Plot.line(c.data, {x: "x", y: "y", stroke: "#4e79a7"}), Plot.dot(c.data, {x: "x", y: "y", r: 2}),
            ...rules(c)]}),
  bars: c => Plot.plot({width: 1000, marginLeft: 220, height: 40 + 18 * c.data.length,
    x: {label: "total µs per profiled run", grid: true}, y: {label: null},
    marks: [Plot.barX(c.data, {y: "op", x: "x", sort: {y: "-x"}, fill: "#4e79a7", tip: true})]}),
  histograms: c => Plot.plot({width: 1000, marginTop: 24, marginRight: 160, height: 40 + 130 * c.panels,
    color: color(c),
    x: {label: `latency (${c.unit})`}, y: {label: "share of runs", grid: true}, fy: {label: null, domain: c.order},
    marks: [Plot.rectY(c.data, {x1: "x1", x2: "x2", y: "y", fill: "series", fy: "series", tip: true})]}),
  intervals: c => Plot.plot({width: 1000, marginLeft: 240, height: 60 + 30 * c.data.length, color: color(c),
    x: {label: c.x, grid: true}, y: {label: null, domain: c.data.map(d => d.label)},
    marks: [...(c.reference == null ? [] : [Plot.ruleX([c.reference], {stroke: "#888", strokeDasharray: "4,3"})]),
            Plot.ruleY(c.data, {y: "label", x1: "low", x2: "high", stroke: "series", strokeWidth: 2}),
            Plot.dot(c.data, {y: "label", x: "x", fill: "series", r: 4, tip: true})]}),
  tradeoff: c => Plot.plot({width: 1000, marginTop: 24, inset: 30,
    color: {legend: true, type: "linear", label: c.color, scheme: "RdYlGn", reverse: c.reverse, unknown: "#bbb"},
    x: {label: "size (KB)", grid: true, zero: true}, y: {label: `p90 (${c.unit})`, grid: true, zero: true},
    marks: [Plot.dot(c.data, {x: "x", y: "y", fill: "drift", stroke: "#333", r: 6, tip: true}),
            Plot.text(c.data, {x: "x", y: "y", text: "variant", dy: -14}),
            Plot.text(c.data.filter(d => d.recommended), {x: "x", y: "y", text: () => "\u25ef", fontSize: 34,
                                                           fill: "#d62728", ariaLabel: () => "recommended"}),
            Plot.text(c.data.filter(d => d.recommended), {x: "x", y: "y", text: () => "recommended", dy: 24,
                                                           fill: "#d62728", fontWeight: "bold"})]}),
};
for (const c of CHARTS) document.querySelector(`#${c.id} .plot`).append(DRAWERS[c.kind](c));
"""
