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
    dashboard,
    grid,
    match,
    override,
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
            (10, [(op_types, 24)]),
            (8, [(placement, 14), (fallback, 10)]),
            (8, [(energy, 12), (memory, 12)]),
        ]))
