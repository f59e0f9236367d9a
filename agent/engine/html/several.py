"""Pages for what is more than one bench report: several reports side by side (the first is the baseline), a
variants document (edgebench.variants/2) and a compare document (edgebench.compare/1).

Each is a ``page.Page`` drawn by ``page.render_page``, like a single report's: the same charts' conventions
(``data-points``/``data-mark``, a table beside every chart, ``--csv``). Speed-ups and their intervals are the
engine's (``bench.speedup``, or what ``variants``/``compare`` stored), never recomputed here.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgebench.agent.engine.html.page import (
    CDF_LEVELS,
    HISTOGRAM_BINS,
    PERCENTILES,
    Chart,
    Page,
    Table,
    _latencies,
    _span,
    report_page,
)
from edgebench.agent.engine.report import human_bytes, latency_unit
from edgebench.agent.errors import UsageError

BENCH, VARIANTS, COMPARE = "edgebench.bench/", "edgebench.variants/2", "edgebench.compare/1"
SCHEMAS = ("edgebench.bench/1", "edgebench.bench/2", VARIANTS, COMPARE)
SPEEDUP_METRICS = ("p50_ms", "p90_ms")


def kind(document: dict) -> str:
    """bench | variants | compare: which page a document gets."""
    schema = str(document.get("schema"))
    return "bench" if schema.startswith(BENCH) else {VARIANTS: "variants", COMPARE: "compare"}[schema]


def page_for(named: Sequence[tuple[str, dict]]) -> Page:
    """The page of what ``report`` was given: one or more bench reports, or one variants or compare document alone
    (a mix has no common chart: a UsageError naming what each file is)."""
    kinds = check_together(named)
    if kinds[0] == "bench":
        return report_page(named[0][1]) if len(named) == 1 else reports_page(named)
    return variants_page(named[0][1]) if kinds[0] == "variants" else compare_page(named[0][1])


def check_together(named: Sequence[tuple[str, dict]]) -> list[str]:
    """Each document's kind, when they make one page: one or more bench reports, or one other document alone."""
    kinds = [kind(document) for _, document in named]
    if set(kinds) == {"bench"} or len(named) == 1:
        return kinds
    what = ", ".join(f"{name} is a {k} {'report' if k == 'bench' else 'document'}" for (name, _), k in
                     zip(named, kinds))
    raise UsageError(f"report: {what}: give one or more bench reports, or one variants or compare document alone")


def _unit(report: dict) -> tuple[str, float]:
    return latency_unit((report.get("stats") or {}).get("p50_ms") or 1.0)


def _stat(report: Optional[dict], metric: str) -> Optional[float]:
    value = ((report or {}).get("stats") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ---------------------------------------------------------------- several bench reports

def reports_page(named: Sequence[tuple[str, dict]]) -> Page:
    unit, scale = _unit(named[0][1])
    found = [distributions_chart(named, unit, scale), cdfs_chart(named, unit, scale), speedup_chart(named, unit, scale)]
    summary = "".join(f"<li><b>{html.escape(name)}</b>{' (baseline)' if i == 0 else ''}: {_one_line(report)}</li>"
                      for i, (name, report) in enumerate(named))
    return Page(f"edgebench: {len(named)} reports against {named[0][0]}", f"<ul>{summary}</ul>",
                [c for c in found if c is not None])


def _one_line(report: dict) -> str:
    model, runtime, stats = report.get("model") or {}, report.get("runtime") or {}, report.get("stats") or {}
    used = ",".join(runtime.get("used") or []) or "default"
    return html.escape(f"{model.get('name')} ({model.get('format')}, {human_bytes(model.get('size_bytes'))}) on "
                       f"{runtime.get('runtime')} {runtime.get('version')} [{used}]; {stats.get('count')} runs, "
                       f"{len(report.get('repeats') or [])} repeats; made {report.get('created')}")


def _common_span(named: Sequence[tuple[str, dict]]) -> Optional[tuple[float, float]]:
    spans = [_span(latency) for latency in (_latencies(report)[0] for _, report in named) if len(latency)]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def distributions_chart(named: Sequence[tuple[str, dict]], unit: str, scale: float) -> Optional[Chart]:
    """One histogram panel per report on a common axis, as the share of its runs: reports of different lengths
    compare, and no report hides behind another's bars."""
    span = _common_span(named)
    if span is None:
        return None
    edges = np.histogram_bin_edges([], bins=HISTOGRAM_BINS, range=span)
    shares = {}
    for name, report in named:
        latency = _latencies(report)[0]
        shares[name] = np.histogram(latency, bins=edges)[0] / max(len(latency), 1)
    data = [{"x1": edges[i] * scale, "x2": edges[i + 1] * scale, "y": float(shares[name][i]), "series": name}
            for name in shares for i in range(len(edges) - 1)]
    rows = [[edges[i] * scale, edges[i + 1] * scale, *(float(shares[name][i]) for name in shares)]
            for i in range(len(edges) - 1)]
    return Chart("latency-histograms", "latency distribution per report", "histograms", "rect", data,
                 [f"from ({unit})", f"to ({unit})", *(f"share of runs, {name}" for name in shares)], rows,
                 "each report's runs pooled over its repeats, as a share of its runs, on one axis (the fastest run "
                 "to the slowest report's 99.9th percentile)",
                 {"unit": unit, "panels": len(shares), "order": list(shares)})


def cdfs_chart(named: Sequence[tuple[str, dict]], unit: str, scale: float) -> Optional[Chart]:
    span = _common_span(named)
    if span is None:
        return None
    levels = np.linspace(0.0, 1.0, CDF_LEVELS)
    data = [{"x": float(x) * scale, "y": float(y), "series": name} for name, report in named
            for latency in [_latencies(report)[0]] if len(latency)
            for x, y in zip(np.quantile(latency, levels), levels)]
    headers = ["percentile", *(f"{name} ({unit})" for name, _ in named)]
    rows = [[p, *(_scaled(_stat(report, f"{p}_ms"), scale) for _, report in named)] for p in PERCENTILES]
    return Chart("latency-cdfs", "latency CDF per report", "cdf", "line", data, headers, rows,
                 "fraction of runs at most x, one line per report (its runs pooled over its repeats); the table: "
                 "each report's pooled percentiles", {"unit": unit, "rules": [], "domain": [v * scale for v in span],
                  "order": [name for name, _ in named]})


def _scaled(value: Optional[float], scale: float) -> Optional[float]:
    return None if value is None else value * scale


def speedup_of(reference: dict, candidate: dict, metric: str) -> dict:
    """``bench.speedup`` (paired by repeat when the two were interleaved); a report without intervals (bench/1)
    gets the ratio of its pooled estimates and no interval."""
    from edgebench.agent.engine import bench

    try:
        return bench.speedup(reference, candidate, metric)
    except (KeyError, TypeError):
        ref, cand = _stat(reference, metric), _stat(candidate, metric)
        return {"metric": metric, "estimate": ref / cand if ref and cand else None, "ci": None, "method": None}


def speedup_chart(named: Sequence[tuple[str, dict]], unit: str, scale: float) -> Optional[Chart]:
    """Each later report's p50 and p90 speed-up over the first (above 1: faster), with its 95% interval."""
    if len(named) < 2:
        return None
    baseline = named[0][1]
    data, rows = [], []
    for i, (name, report) in enumerate(named):
        ratios = [speedup_of(baseline, report, m) for m in SPEEDUP_METRICS] if i else []
        cells = [v for r in ratios for v in (r["estimate"], *(r["ci"] or [None, None]))] or [1.0, None, None] * 2
        rows.append([name, _scaled(_stat(report, "p50_ms"), scale), _scaled(_stat(report, "p90_ms"), scale), *cells,
                     (ratios[0]["method"] or "none") if ratios else "baseline"])
        data += [{"label": f"{name} · {m[:3]}", "series": m[:3], "x": r["estimate"],
                  "low": (r["ci"] or [None, None])[0], "high": (r["ci"] or [None, None])[1]}
                 for m, r in zip(SPEEDUP_METRICS, ratios) if r["estimate"] is not None]
    headers = ["report", f"p50 ({unit})", f"p90 ({unit})", "p50 speed-up", "p50 95% low", "p50 95% high",
               "p90 speed-up", "p90 95% low", "p90 95% high", "interval"]
    return Chart("speedup", f"speed-up over {named[0][0]}", "intervals", "dot", data, headers, rows,
                 f"{named[0][0]}'s p50 / p90 divided by each report's (above 1: faster), with the 95% interval from "
                 "the repeats (paired when the reports were interleaved in one run)",
                 {"x": f"speed-up over {named[0][0]}", "reference": 1.0})


# ---------------------------------------------------------------- a variants document

def _drift_value(drift: Optional[dict]) -> tuple[str, Optional[float]]:
    """(what, value): a language model's perplexity increase, else the mean cosine similarity."""
    drift = drift or {}
    if "perplexity_increase" in drift:
        return "perplexity increase", drift.get("perplexity_increase")
    return "cosine similarity", drift.get("cosine_mean")


def variants_page(document: dict) -> Page:
    rows = document.get("variants") or []
    advice = document.get("recommendation") or {}
    measured = [row for row in rows if row.get("report") and _stat(row["report"], "p90_ms") is not None]
    unit, scale = _unit(measured[0]["report"]) if measured else ("ms", 1.0)
    charts = [c for c in (tradeoff_chart(document, unit, scale),) if c is not None]
    summary = (f"<p>{html.escape(str((document.get('model') or {}).get('name')))}: {len(rows)} rows, "
               f"{len(measured)} measured; objective {html.escape(str(advice.get('objective')))}</p>"
               f"<p><b>{html.escape(str(advice.get('line')))}</b></p>")
    return Page(f"edgebench variants: {(document.get('model') or {}).get('name')}", summary, charts,
                [] if charts else [Table("variants", "variants", *variants_table(document, unit, scale))])


def variants_table(document: dict, unit: str, scale: float) -> tuple[list[str], list[list[Any]]]:
    """Every row, failed ones too (their error in the last column)."""
    rows = document.get("variants") or []
    advice = document.get("recommendation") or {}
    base = rows[0]["name"] if rows else None
    within = set(advice.get("within_budgets") or [])
    what = next((_drift_value(row.get("drift"))[0] for row in rows if row.get("drift")), "cosine similarity")
    table = []
    for row in rows:
        ratio = row.get("speedup_p90") or {}
        ci = ratio.get("ci") or [None, None]
        budget = "reference" if row["name"] == base else "yes" if row["name"] in within else \
            "no: " + "; ".join((advice.get("failures") or {}).get(row["name"]) or ["not measured"])
        table.append([row["name"], row.get("size_bytes"), _scaled(_stat(row.get("report"), "p90_ms"), scale),
                      ratio.get("estimate"), ci[0], ci[1], _drift_value(row.get("drift"))[1], budget,
                      "recommended" if row["name"] == advice.get("variant") else "", row.get("error") or ""])
    return (["variant", "size (bytes)", f"p90 ({unit})", "p90 speed-up", "95% low", "95% high", what,
             "within budgets", "recommendation", "error"], table)


def tradeoff_chart(document: dict, unit: str, scale: float) -> Optional[Chart]:
    """p90 against size, one dot per measured variant coloured by its drift, the recommended one ringed. The
    float model is the reference its drift is measured against: its own drift is none (cosine 1, +0% perplexity)."""
    rows = document.get("variants") or []
    advice = document.get("recommendation") or {}
    what = next((_drift_value(row.get("drift"))[0] for row in rows if row.get("drift")), "cosine similarity")
    none = 0.0 if what == "perplexity increase" else 1.0
    data = []
    for i, row in enumerate(rows):
        p90 = _stat(row.get("report"), "p90_ms")
        if p90 is None or not row.get("size_bytes"):
            continue
        drift = _drift_value(row.get("drift"))[1]
        data.append({"variant": row["name"], "x": row["size_bytes"] / 1e3, "y": p90 * scale,
                     "drift": none if i == 0 and drift is None else drift,
                     "recommended": row["name"] == advice.get("variant")})
    if not data:
        return None
    headers, table = variants_table(document, unit, scale)
    failed = sum(1 for row in rows if row.get("error") or not row.get("report"))
    return Chart("tradeoff", "latency against size, coloured by drift", "tradeoff", "dot", data, headers, table,
                 f"p90 against file size, one dot per measured variant, colour: {what} against the float model; "
                 f"ringed: the recommended variant ({advice.get('variant')}); {failed} rows failed (the table)",
                 {"unit": unit, "color": what, "reverse": what == "perplexity increase"})


# ---------------------------------------------------------------- a compare document

def compare_page(document: dict) -> Page:
    """A compare document holds the drift and, with ``--repeats``, each side's p50/p90 with its interval and the
    speed-up: not the runs themselves, so no distributions (``bench --json`` both and ``report A B`` draws them)."""
    reference, candidate = document.get("reference") or {}, document.get("candidate") or {}
    drift = document.get("drift") or {}
    tables = [Table("drift", "drift", ["measure", "value"], [[k, v] for k, v in drift.items()])]
    accuracy = document.get("accuracy")
    if accuracy:
        tables.append(Table("accuracy", "accuracy", ["model", "top-1", "top-5", "samples"],
                            [[side, *(accuracy[side].get(k) for k in ("top1", "top5", "samples"))]
                             for side in ("reference", "candidate")]))
    charts = [c for c in (compare_latency_chart(document),) if c is not None]
    note = ("" if charts else " (no latency: compare ran without --repeats, so this page has the drift table "
            "only)")
    summary = (f"<p>reference {html.escape(str(reference.get('name')))}, candidate "
               f"{html.escape(str(candidate.get('name')))}; output {html.escape(str(document.get('output')))}, "
               f"{drift.get('samples')} input sets{html.escape(note)}</p>")
    return Page(f"edgebench compare: {candidate.get('name')} against {reference.get('name')}", summary, charts,
                tables)


def compare_latency_chart(document: dict) -> Optional[Chart]:
    latency = document.get("latency")
    if not latency:
        return None
    data, rows = [], []
    for side in ("reference", "candidate"):
        for metric in SPEEDUP_METRICS:
            value = (latency.get(side) or {}).get(metric) or {}
            ci = value.get("ci") or [None, None]
            rows.append([side, metric[:3], value.get("estimate"), ci[0], ci[1]])
            if isinstance(value.get("estimate"), (int, float)):
                data.append({"label": f"{side} · {metric[:3]}", "series": side, "x": value["estimate"],
                             "low": ci[0], "high": ci[1]})
    ratio = latency.get("speedup") or {}
    ci = ratio.get("ci") or [None, None]
    rows.append(["candidate speed-up", (ratio.get("metric") or "p50_ms")[:3], ratio.get("estimate"), ci[0], ci[1]])
    return Chart("compare-latency", "latency with its interval", "intervals", "dot", data,
                 ["model", "percentile", "estimate (ms)", "95% low", "95% high"], rows,
                 f"{latency.get('repeats')} repeats each, interleaved; the compare document keeps each side's p50 "
                 "and p90 with their intervals, not the runs (for the distributions: `bench --json` both models and "
                 "`edgebench report A.json B.json`)", {"x": "latency (ms)"})


def names_for(paths: Sequence[str]) -> list[str]:
    """Each report's name on the page: its file's stem, or its path where two stems are the same."""
    stems = [Path(p).stem for p in paths]
    return [stem if stems.count(stem) == 1 else str(p) for stem, p in zip(stems, paths)]
