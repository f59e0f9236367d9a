"""Model comparison: latency percentiles by model x board class x runtime/delegate, model variants side by side
(size vs latency vs drift: the quantization trade-off), language models' tokens/s, where each variant's nodes ran
and where its time goes by op type, energy per inference, peak memory.

Each run's point carries that run's percentiles; across runs the panels show the median of them (a typical run),
and the run count, so a single lucky run does not decide a comparison. Over time, each run's p90 comes with its
confidence interval (from the spread between the run's repeats, or batches of a single run), not as a bare line.
"""

from __future__ import annotations

from grafanalib import core as g

from edgebench.dashboards.common import (
    INTERVAL_ENDS,
    PluginPanel,
    dashboard,
    grid,
    interval_band,
    match,
    override,
    repeat_per,
    tag_variable,
    target,
    thresholds,
    where,
)
from edgebench.server import schema as s

UID = "edgebench-models"

FILTERS = (match(s.BOARD_CLASS_LABEL, "board_class"), match(s.MODEL, "model"), match(s.RUNTIME, "runtime"),
           match(s.DELEGATE, "delegate"))
CONFIG = f'"{s.MODEL}", "{s.BOARD_CLASS_LABEL}", "{s.RUNTIME}", "{s.DELEGATE}", "{s.THREADS}"'
RENAME = {"transformations": [{"id": "organize", "options": {
    "excludeByName": {"Time": True}, "renameByName": {s.BOARD_CLASS_LABEL: "class"}}}]}


# A model file (variant: float32, float16, int8...) on a board class with one configuration: the rows of the placement
# and op-type tables, each per backend (and op type)
VARIANT = (f'"{s.MODEL}", "{s.FORMAT}", "{s.MODEL_SHA}", "{s.BOARD_CLASS_LABEL}", "{s.RUNTIME}", "{s.DELEGATE}", '
           f'"{s.THREADS}"')


# A language model (its name says its quantization: smollm2_135m_q4_1.gguf) on a board with one configuration
GENERATION = f'"{s.MODEL}", "{s.BOARD_CLASS_LABEL}", "{s.DEVICE}", "{s.RUNTIME}", "{s.THREADS}"'


def _table(title: str, description: str, select: str, group_by: str, overrides: list,
           measurement: s.Measurement = s.RESULT, condition: str = "") -> g.Table:
    return g.Table(title=title, description=description,
                   targets=[target(f'SELECT {select} FROM "{measurement.name}" WHERE {where(*FILTERS)}{condition} '
                                   f'GROUP BY {group_by}', table=True)],
                   overrides=overrides, **RENAME)


def _gauge(name: str, unit: str) -> dict:
    return override("byName", name, unit=unit, custom__cellOptions={"type": "gauge", "mode": "basic"})


def _heat_map() -> g.Table:
    """Model x board class p90 as a matrix of coloured cells. Grafana's heatmap panel wants numeric (or time) buckets
    on its x axis; a categorical matrix is a table: InfluxQL's rows (model, class, p90) turned into one column per
    board class by the groupingToMatrix transformation, each number cell coloured on one scale over all cells."""
    return g.Table(
        title="p90 heat map: model x board class",
        description="Median over the runs in the time range of each run's p90, per model (rows) and board class "
        "(columns); green is fast, red slow, on one scale over the whole matrix; empty: never ran there. Runs of "
        "every selected runtime/delegate are pooled: pick one configuration to compare like with like.",
        targets=[target(f'SELECT median("p90_ms") AS "p90" FROM "{s.RESULT.name}" WHERE {where(*FILTERS)} '
                        f'GROUP BY "{s.MODEL}", "{s.BOARD_CLASS_LABEL}"', table=True)],
        transformations=[
            {"id": "groupingToMatrix", "options": {"columnField": s.BOARD_CLASS_LABEL, "rowField": s.MODEL,
                                                   "valueField": "p90", "emptyValue": "null"}},
            {"id": "organize", "options": {"renameByName": {f"{s.MODEL}\\{s.BOARD_CLASS_LABEL}": "model"}}}],
        overrides=[override("byType", "number", unit="ms", color={"mode": "continuous-GrYlRd"},
                            custom__cellOptions={"type": "color-background", "mode": "gradient"})])


def _trade_off() -> PluginPanel:
    """Each model file as a point, size against p90: the variants' trade-off at a glance. Grafana's xychart maps
    table columns to x, y and colour; the variants pushed with --reference are drawn again coloured by their
    drift (a second frame, since a colour from a column with empty cells would have no colour to give)."""
    select = ('last("model_size_bytes") AS "size", median("p90_ms") AS "p90", '
              'median("drift_max_abs_err") AS "max abs err", count("p90_ms") AS "runs"')
    group = f'"{s.MODEL}", "{s.FORMAT}", "{s.MODEL_SHA}", "{s.BOARD_CLASS_LABEL}", "{s.RUNTIME}", "{s.DELEGATE}"'

    def query(condition: str = "") -> str:
        return f'SELECT {select} FROM "{s.RESULT.name}" WHERE {where(*FILTERS)}{condition} GROUP BY {group}'

    def series(frame: int, name: str, color: str = "") -> dict:
        out = {"frame": {"matcher": {"id": "byIndex", "options": frame}}, "name": {"fixed": name},
               "x": {"matcher": {"id": "byName", "options": "size"}},
               "y": {"matcher": {"id": "byName", "options": "p90"}}}
        if color:
            out["color"] = {"matcher": {"id": "byName", "options": color}}
        return out

    return PluginPanel(
        title="Variants trade-off: p90 vs model size",
        description="One point per model file (format, sha256 prefix) per board class and configuration: its "
        "size (x) and the median of its runs' p90 (y); the tooltip names it. Variants pushed with "
        "`--reference` are drawn again, coloured by their drift against it (max abs error: green small, red "
        "large). Down and left is better; a quantized variant should move left and down at a small drift.",
        type="xychart",
        targets=[target(query(), table=True), target(query(' AND "drift_max_abs_err" >= 0'), "B", table=True)],
        options={"mapping": "manual", "series": [series(0, "variants"), series(1, "drift", "max abs err")],
                 "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
                 "tooltip": {"mode": "single", "sort": "none"}},
        defaults={"custom": {"show": "points", "pointSize": {"fixed": 9}, "pointShape": "circle"},
                  "color": {"mode": "palette-classic"}},
        overrides=[override("byName", "size", unit="bytes"), override("byName", "p90", unit="ms"),
                   override("byName", "max abs err", decimals=4, color={"mode": "continuous-GrYlRd"})])


def _distribution() -> g.Histogram:
    """The raw samples as a histogram: the shape a p90 hides (a second mode, a long tail). InfluxQL cannot pick
    "the latest run" by itself; the latest samples per series are that run's (a result stores at most
    MAX_SAMPLES_PER_RESULT of them), or the latest runs' where a run kept fewer."""
    return g.Histogram(
        title="Latency distribution: the latest run's samples",
        description=f"The raw latency samples (edgebench_latency) of the latest run per model, board, runtime and "
        f"delegate in the time range: the latest {s.MAX_SAMPLES_PER_RESULT} samples of each (a run stores at most "
        f"that many, a uniform subsample beyond; a run that kept fewer shares its histogram with the runs before "
        f"it). Narrow the Model and Board class variables to compare a few.",
        targets=[target(f'SELECT "latency_ns" / 1000000 AS "latency" FROM "{s.LATENCY.name}" '
                        f'WHERE {where(*FILTERS)} GROUP BY "{s.MODEL}", "{s.BOARD_CLASS_LABEL}", "{s.DEVICE}", '
                        f'"{s.RUNTIME}", "{s.DELEGATE}" ORDER BY time DESC LIMIT {s.MAX_SAMPLES_PER_RESULT}',
                        alias="$tag_model · $tag_device · $tag_runtime/$tag_delegate")],
        colorMode="palette-classic", fillOpacity=40, lineWidth=1, legendDisplayMode="list",
        overrides=[override("byType", "number", unit="ms")],
        extraJson={"options": {"legend": {"showLegend": True, "calcs": []}}})


def _band() -> g.TimeSeries:
    """One model's p90 per run inside its confidence interval drawn as a filled band (repeated per model: the band
    needs the series' names to be fixed)."""
    return g.TimeSeries(
        title="p90 in its interval: $model",
        description="Per selected model (one panel each): the p90 of its runs (mean per time bucket), inside a "
        "band from the low to the high end of their 95% confidence intervals. Runs of every selected board class "
        "and configuration share the line: pick one of each, or read the panel above, which splits them.",
        targets=[target(f'SELECT mean("p90_ms") AS "p90", mean("p90_ci_low_ms") AS "p90 ci low", '
                        f'mean("p90_ci_high_ms") AS "p90 ci high" FROM "{s.RESULT.name}" WHERE {where(*FILTERS)} '
                        f'GROUP BY time($__interval) fill(none)', alias="$col")],
        unit="ms", drawStyle="line", showPoints="always", pointSize=6, spanNulls=True, repeat=repeat_per("model"),
        overrides=interval_band("p90"))


def build() -> g.Dashboard:
    variables = [
        tag_variable("board_class", "Board class", s.RESULT.name, s.BOARD_CLASS_LABEL),
        tag_variable("model", "Model", s.RESULT.name, s.MODEL, match(s.BOARD_CLASS_LABEL, "board_class")),
        tag_variable("runtime", "Runtime", s.RESULT.name, s.RUNTIME, match(s.MODEL, "model")),
        tag_variable("delegate", "Delegate", s.RESULT.name, s.DELEGATE, match(s.RUNTIME, "runtime")),
    ]
    ms = override("byRegexp", "/^p\\d+/", unit="ms")
    percentiles = _table(
        "Latency percentiles: model x board class x runtime/delegate",
        "Median over the runs in the time range of each run's p50, p90 and p99; runs = how many runs.",
        'median("p50_ms") AS "p50", median("p90_ms") AS "p90", median("p99_ms") AS "p99", '
        'median("throughput_ips") AS "inferences/s", count("p50_ms") AS "runs"', CONFIG, [ms])
    variants = _table(
        "Variants side by side: size vs latency vs drift",
        "One row per model file (format, sha256 prefix) per board class and runtime: the float32 / float16 / int8 "
        "trade-off. Size is the model file's; drift (max abs error, cosine similarity, top-1 agreement of the "
        "outputs on 8 generated input sets) is against the reference of `edgebench push --reference REF` and empty "
        "for runs pushed without one. Name variants alike (mobilenet_fp32, mobilenet_int8) and pick them in the "
        "Model variable.",
        'last("model_size_bytes") AS "size", median("p50_ms") AS "p50", median("p90_ms") AS "p90", '
        'median("drift_max_abs_err") AS "max abs err", median("drift_cosine") AS "cosine", '
        'median("drift_top1_agreement") AS "top-1 agreement", max("peak_steady_bytes") AS "peak memory", '
        'median("energy_per_inference_mj") AS "mJ/inference", count("p50_ms") AS "runs"',
        f'"{s.BOARD_CLASS_LABEL}", "{s.RUNTIME}", "{s.MODEL}", "{s.FORMAT}", "{s.MODEL_SHA}"',
        [ms, override("byName", "size", unit="bytes"), override("byName", "peak memory", unit="bytes"),
         override("byName", "max abs err", decimals=4), override("byName", "cosine", decimals=5),
         override("byName", "top-1 agreement", unit="percentunit"), override("byName", "mJ/inference", unit="mJ")])
    tokens = _table(
        "Language models: tokens/s by model x board",
        "GGUF language models (`push MODEL.gguf --prompt-tokens N --gen-tokens M`), per model (its name says the "
        "quantization: q4_1, q8_0...), board class, device, runtime and threads: the median over the runs of each "
        "run's decode and prefill tokens/s and time to first token (each run's estimate over its repeats), energy "
        "per decoded token (boards with a power sensor); prompt and decoded: the latest run's token counts. Prefill "
        "speed depends on the prompt's length: compare runs of one length.",
        'median("decode_tok_s") AS "decode tok/s", median("prefill_tok_s") AS "prefill tok/s", '
        'median("ttft_ms") AS "TTFT", median("energy_per_token_mj") AS "mJ/token", last("prompt_tokens") AS "prompt", '
        'last("gen_tokens") AS "decoded", count("decode_tok_s") AS "runs"', GENERATION,
        [_gauge("decode tok/s", "none"), _gauge("prefill tok/s", "none"), override("byName", "TTFT", unit="ms"),
         override("byName", "mJ/token", unit="mJ")], condition=' AND "decode_tok_s" > 0')
    p90 = g.TimeSeries(
        title="p90 per run, with its interval",
        description="Each run's p90 (dots), per model, board class, runtime and delegate, between the low and high "
        "ends of its 95% confidence interval (dashed): from the spread between the run's repeats (`bench --repeats`), "
        "or between batches of a run of one repeat. Runs measured before intervals existed have the dots only.",
        targets=[target(f'SELECT mean("p90_ms") AS "p90", mean("p90_ci_low_ms") AS "p90 ci low", '
                        f'mean("p90_ci_high_ms") AS "p90 ci high" FROM "{s.RESULT.name}" WHERE {where(*FILTERS)} '
                        f'GROUP BY time($__interval), {CONFIG} fill(none)',
                        alias="$tag_model · $tag_label_class · $tag_runtime/$tag_delegate · $col")],
        unit="ms", drawStyle="points", pointSize=6, legendDisplayMode="table", legendCalcs=["min", "mean", "max"],
        overrides=[INTERVAL_ENDS])
    op_types = _table(
        "Where the time goes: op types per variant, board class and configuration",
        "For jobs pushed with --profile-ops: per op type and where it ran, its share of the time all ops took and "
        "their summed time per inference (µs, from the runtime's own profiler, which adds its own cost: the "
        "result's profile_overhead), median over the runs; nodes = how many nodes of that type. Compare the rows of "
        "two variants (float32 and int8) to see which ops the quantization sped up or added. Empty for runtimes "
        "with no per-op profiler (LiteRT from Python).",
        'median("share") AS "share", median("total_us") AS "µs per inference", last("count") AS "nodes", '
        'count("share") AS "runs"', f'{VARIANT}, "{s.OP}", "{s.BACKEND}"',
        [override("byName", "share", unit="percentunit",
                  custom__cellOptions={"type": "gauge", "mode": "basic"}, min=0, max=1),
         override("byName", "µs per inference", unit="µs", decimals=1)], s.OP_TYPE)
    placement = _table(
        "Where the nodes ran: nodes per backend",
        "Per variant, board class and configuration, the nodes each backend (delegate or execution provider) took "
        "in its latest run, in how many partitions, and the first choice's coverage (the fraction of the model's "
        "nodes it took: what the delegate_coverage gate judges). A first choice under 100% left nodes to the "
        "next backend: the op types are in the next table.",
        'last("nodes") AS "nodes", last("model_nodes") AS "of", last("partitions") AS "partitions", '
        'last("first_choice") AS "first choice", last("coverage") AS "coverage"', f'{VARIANT}, "{s.BACKEND}"',
        [override("byName", "coverage", unit="percentunit", custom__cellOptions={"type": "color-background"},
                  thresholds={"mode": "absolute", "steps": thresholds(("red", None), ("orange", 0.5),
                                                                      ("green", 1.0))})], s.PLACEMENT)
    fallback = _table(
        "Op types off the first choice",
        "Per variant, board class and configuration: the op types the chain's first choice did not take in the "
        "latest run, where they ran instead and how many nodes (at most the 20 most frequent per run).",
        'last("count") AS "nodes"', f'{VARIANT}, "{s.BACKEND}", "{s.OP}"', [], s.FALLBACK_OP)
    energy = _table(
        "Energy per inference",
        "Median energy per inference from the board's widest-scope power sensor (empty where a board has none).",
        'median("energy_per_inference_mj") AS "mJ/inference", median("avg_w") AS "average W"', CONFIG,
        [_gauge("mJ/inference", "mJ"), override("byName", "average W", unit="watt")])
    memory = _table(
        "Peak memory",
        "Highest resident set size while measuring (steady) and while loading + warming up (load).",
        'max("peak_steady_bytes") AS "steady peak", max("peak_load_bytes") AS "load peak"', CONFIG,
        [_gauge("steady peak", "bytes"), _gauge("load peak", "bytes")])
    throttled = g.Stat(
        title="Throttled runs", description="Runs during which the board throttled (their latencies are suspect).",
        targets=[target(f'SELECT count("throttled") AS "throttled runs" FROM "{s.RESULT.name}" '
                        f'WHERE {where(*FILTERS)} AND "throttled" = true')],
        reduceCalc="lastNotNull", graphMode="none", noValue="0", thresholds=thresholds(("green", None), ("red", 1.0)))
    runs = g.Stat(
        title="Runs", description="Result points matching the filters.",
        targets=[target(f'SELECT count("p50_ms") AS "runs" FROM "{s.RESULT.name}" WHERE {where(*FILTERS)}')],
        reduceCalc="lastNotNull", graphMode="none", noValue="0", thresholds=thresholds(("blue", None)))
    return dashboard(
        "edgebench: model comparison", UID,
        "p50/p90/p99 by model x board class x runtime/delegate, variants side by side, language models' tokens/s, "
        "where the nodes ran and where the time goes by op type, energy and peak memory.",
        variables, grid([
            (10, [(percentiles, 20), (runs, 4)]),
            (10, [(variants, 20), (throttled, 4)]),
            (8, [(tokens, 24)]),
            (9, [(p90, 24)]),
            (8, [(_band(), 24)]),
            (10, [(_heat_map(), 12), (_trade_off(), 12)]),
            (9, [(_distribution(), 24)]),
            (10, [(op_types, 24)]),
            (8, [(placement, 14), (fallback, 10)]),
            (8, [(energy, 12), (memory, 12)]),
        ]))
