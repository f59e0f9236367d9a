"""Every template variable and every panel target, run against a real influxd holding a real fleet run (conftest:
collector + two agents + ``edgebench push``), with the variables filled in with values their own SHOW TAG VALUES
queries returned. A target that returns no series fails; so does an InfluxQL error.

Targets that read what nothing writes yet (``PROPOSED`` in edgebench.server.schema; none today) are expected to
return nothing: they xfail, and the test fails as soon as they return data, so the marker cannot outlive the gap.
"""

from __future__ import annotations

import json
import re

import pytest

from edgebench.dashboards import queries
from edgebench.dashboards.build import DASHBOARDS, JSON_DIR
from edgebench.server import schema

from .conftest import HOST, JETSON, LLM, VARIANT, FleetRun

TIME_FILTER, INTERVAL = "time > now() - 1h", "10s"
PREFERRED = {"device": JETSON}  # single-value variables: the board with sensors
SENSOR_DATA = re.compile(r'"(temp_max_c|energy_per_inference_mj|avg_w)"|"throttled" = true')
LLM_DATA = re.compile(r'"decode_tok_s"')  # a language model's results: where llama.cpp is installed

COMMITTED = {name: json.loads((JSON_DIR / f"{name}.json").read_text()) for name in DASHBOARDS}
TARGETS = [pytest.param(name, q, id=f"{name}:{q.panel}:{q.ref}")
           for name, dash in COMMITTED.items() for q in queries.panel_queries(dash)]


def tag_values(run: FleetRun, text: str) -> list[str]:
    return sorted({value for series in run.query(text) for _, value in series["values"]})


def select(run: FleetRun, dash: dict, all_values: bool) -> dict:
    """Fill the variables in dashboard order (later ones are filtered by earlier ones, as in Grafana)."""
    chosen: dict = {}
    for variable in queries.query_variables(dash):
        values = tag_values(run, queries.interpolate(variable["query"], dash, chosen))
        assert values, f"${variable['name']} lists nothing: {variable['query']}"
        if not variable.get("multi"):
            chosen[variable["name"]] = PREFERRED.get(variable["name"], values[0])
            assert chosen[variable["name"]] in values
        else:
            chosen[variable["name"]] = "$__all" if all_values else values
    return chosen


@pytest.fixture(scope="module")
def selections(fleet_run) -> dict:
    return {(name, mode): select(fleet_run, dash, mode == "all") for name, dash in COMMITTED.items()
            for mode in ("values", "all")}


def test_the_fleet_run_is_real(fleet_run):
    """What the panels are checked against: results of real benchmark runs on both boards, telemetry, verdicts."""
    rows = fleet_run.query('SELECT count("p50_ms") FROM "edgebench_result" GROUP BY "device", "model"')
    assert {(s["tags"]["device"], s["tags"]["model"]) for s in rows} == {
        (device, model) for device in fleet_run.devices
        for model in ("sine_float.tflite", "efficientnet_lite0_int8.tflite")} | {(HOST, VARIANT)} | (
        {(HOST, LLM)} if fleet_run.llm else set())
    classes = tag_values(fleet_run, 'SHOW TAG VALUES FROM "edgebench_result" WITH KEY = "label_class"')
    assert classes == sorted(set(fleet_run.devices.values()))


@pytest.mark.parametrize("name", DASHBOARDS)
def test_variables_list_real_values(fleet_run, selections, name):
    chosen = selections[(name, "values")]
    for variable in queries.query_variables(COMMITTED[name]):
        assert chosen[variable["name"]], variable["name"]
    if "board_class" in chosen:
        assert set(chosen["board_class"]) == set(fleet_run.devices.values())


@pytest.mark.parametrize("mode", ["values", "all"])
@pytest.mark.parametrize("name,query", TARGETS)
def test_panel_query_returns_series(fleet_run, selections, name, query, mode):
    dash = COMMITTED[name]
    text = queries.interpolate(query.text, dash, selections[(name, mode)], TIME_FILTER, INTERVAL)
    series = fleet_run.query(text)  # an InfluxQL error raises here
    values = [value for s in series for row in s["values"] for column, value in zip(s["columns"], row)
              if column != "time" and value is not None]
    proposed = schema.proposed_names(query.text)
    if proposed:
        if values:
            pytest.fail(f"{query.panel} now returns data: remove {proposed} from server/schema.py PROPOSED")
        pytest.xfail("; ".join(schema.PROPOSED[n] for n in proposed))
    if SENSOR_DATA.search(query.text) and not fleet_run.sensors:
        pytest.skip("no mount namespace here: the agent could not read a recorded board's sensors")
    if LLM_DATA.search(query.text) and not fleet_run.llm:
        pytest.skip("llama.cpp is not installed here: no language model ran on the fleet")
    assert series, f"{query.panel} ({query.ref}) returns no series:\n{text}"
    assert values, f"{query.panel} ({query.ref}) returns only nulls:\n{text}\n{series}"


def test_variants_table_shows_size_and_drift(fleet_run, selections):
    """The variants table's size and drift columns hold the pushed variant's real values (push --reference)."""
    dash = COMMITTED["model-comparison"]
    [query] = [q for q in queries.panel_queries(dash) if q.panel.startswith("Variants side by side")]
    for mode in ("values", "all"):
        text = queries.interpolate(query.text, dash, selections[("model-comparison", mode)], TIME_FILTER, INTERVAL)
        rows = {s["tags"]["model"]: dict(zip(s["columns"], s["values"][0])) for s in fleet_run.query(text)
                if s["tags"]["label_class"] == fleet_run.devices[HOST]}
        variant = rows[VARIANT]
        assert variant["size"] > 100_000 and variant["p50"] > 0 and variant["p90"] >= variant["p50"]
        assert 0 < variant["max abs err"] < 1 and 0.9 < variant["cosine"] <= 1
        assert 0 <= variant["top-1 agreement"] <= 1
        sine = rows["sine_float.tflite"]  # pushed without a reference: a size, no drift
        assert sine["size"] > 0 and sine["max abs err"] is None and sine["cosine"] is None


def test_language_model_table_shows_tokens_per_second(fleet_run, selections):
    """The language-model table: the GGUF model's decode and prefill tokens/s and TTFT on the host board, its token
    counts, one row per model x board x configuration; no row for the models that generate nothing."""
    if not fleet_run.llm:
        pytest.skip("llama.cpp is not installed here: no language model ran on the fleet")
    dash = COMMITTED["model-comparison"]
    for mode in ("values", "all"):
        rows = _rows(fleet_run, dash, "Language models: tokens/s by model x board", selections[("model-comparison",
                                                                                              mode)])
        assert [(row["model"], row["device"]) for row in rows] == [(LLM, HOST)], rows
        (row,) = rows
        assert row["decode tok/s"] > 0 and row["prefill tok/s"] > 0 and row["TTFT"] > 0 and row["runs"] == 1
        assert (row["prompt"], row["decoded"]) == (32, 8)


def test_latency_panels_show_each_runs_interval(fleet_run, selections):
    """The latency panels carry each run's p90 confidence interval beside its p90 (the fleet's real runs, with
    repeats): the low and high ends are there and ordered."""
    for name, panel in (("model-comparison", "p90 per run, with its interval"), ("device-detail", "Latency per run")):
        dash = COMMITTED[name]
        [query] = [q for q in queries.panel_queries(dash) if q.panel == panel and q.ref == "A"]
        text = queries.interpolate(query.text, dash, selections[(name, "all")], TIME_FILTER, INTERVAL)
        rows = [dict(zip(s["columns"], row)) for s in fleet_run.query(text) for row in s["values"]]
        ends = [(row["p90 ci low"], row["p90"], row["p90 ci high"]) for row in rows if row["p90 ci low"] is not None]
        assert ends, f"{panel}: no run with its interval:\n{text}"
        # Ordered and positive; how wide is the machine's business (a noisy run's interval is honestly wide).
        assert all(0 < low <= high and p90 > 0 for low, p90, high in ends), ends


def test_gates_read_a_result_pushed_with_a_reference(fleet_run):
    """A result pushed with --reference has a `reference` tag its repeat and latency points do not carry: the gates'
    InfluxDB source reads it with its interval, and its units as a summary gives them (one run: one unit, its
    p90; repeats: each repeat's)."""
    from edgebench.server.gates import sources

    influx = sources.Influx(fleet_run.influxd.url, fleet_run.db)
    results = [r for r in sources.results_from_influx(influx) if r.model == VARIANT]
    assert results
    for result in results:
        assert result.interval("p90_ms") and result.estimate("p90_ms") > 0
        units = result.units("p90_ms")
        if result.interval_method == "between-repeats":
            assert len(units) >= 2 and all(u > 0 for u in units)
        else:
            assert units == [result.metrics["p90_ms"]]


def _rows(run: FleetRun, dash: dict, panel: str, chosen: dict, ref: str = "") -> list[dict]:
    [query] = [q for q in queries.panel_queries(dash) if q.panel == panel and q.ref == (ref or q.ref)]
    text = queries.interpolate(query.text, dash, chosen, TIME_FILTER, INTERVAL)
    return [{**s.get("tags", {}), **dict(zip(s["columns"], row))} for s in run.query(text) for row in s["values"]]


def test_op_type_panel_shows_where_the_variants_time_goes(fleet_run, selections):
    """The int8 variant pushed with --profile-ops (ONNX Runtime's profiler on the host board): its op types, each
    with a share of the time and a node count, the shares adding up to at most 1 (the 20 op types that took the
    most); the results of LiteRT, which has no per-op profiler from Python, have none."""
    dash = COMMITTED["model-comparison"]
    for mode in ("values", "all"):
        rows = _rows(fleet_run, dash, "Where the time goes: op types per variant, board class and configuration",
                     selections[("model-comparison", mode)])
        variant = [row for row in rows if row["model"] == VARIANT]
        assert len(variant) >= 3 and {row["backend"] for row in variant} == {"CPUExecutionProvider"}, rows
        assert all(0 <= row["share"] <= 1 and row["µs per inference"] >= 0 and row["nodes"] >= 1 for row in variant)
        assert 0.5 < sum(row["share"] for row in variant) <= 1 + 1e-9
        assert {row["model"] for row in rows} == {VARIANT}, "a LiteRT result wrote per-op rows"


def test_placement_panels_show_the_nodes_a_delegate_left(fleet_run, selections):
    """EfficientNet-Lite0 int8 under XNNPACK (LiteRT's default chain) on both boards: 60 of 64 nodes on XNNPACK,
    4 on the CPU kernels (QUANTIZE x2, AVERAGE_POOL_2D, SOFTMAX), coverage 0.9375: the model comparison's tables
    and the fleet overview's coverage table and count say so."""
    model = "efficientnet_lite0_int8.tflite"
    dash = COMMITTED["model-comparison"]
    chosen = selections[("model-comparison", "all")]
    backends = {(row["label_class"], row["backend"]): row for row in
                _rows(fleet_run, dash, "Where the nodes ran: nodes per backend", chosen) if row["model"] == model}
    for board_class in fleet_run.devices.values():
        xnnpack, cpu = backends[(board_class, "xnnpack")], backends[(board_class, "cpu")]
        assert (xnnpack["nodes"], xnnpack["of"], xnnpack["first choice"], xnnpack["coverage"]) == (60, 64, True, 0.9375)
        assert (cpu["nodes"], cpu["first choice"]) == (4, False)
    fallback = {(row["label_class"], row["op"]): row["nodes"] for row in
                _rows(fleet_run, dash, "Op types off the first choice", chosen) if row["model"] == model}
    assert {op: n for (_, op), n in fallback.items()} == {"QUANTIZE": 2, "AVERAGE_POOL_2D": 1, "SOFTMAX": 1}
    fleet = COMMITTED["fleet-overview"]
    chosen = selections[("fleet-overview", "all")]
    coverage = {(row["device"], row["model"]): row for row in
                _rows(fleet_run, fleet, "Delegate coverage per device and model", chosen)}
    for device in fleet_run.devices:
        row = coverage[(device, model)]
        assert (row["coverage"], row["on first choice"], row["nodes"], row["backend"]) == (0.9375, 60, 64, "xnnpack")
    assert all(0 < row["coverage"] <= 1 for row in coverage.values())
    [partial] = _rows(fleet_run, fleet, "Delegates that left nodes behind", chosen)
    assert partial["partial"] == sum(1 for row in coverage.values() if row["coverage"] < 1) >= 2


def test_heat_map_has_a_p90_per_model_and_board_class(fleet_run, selections):
    """The heat map's rows (before Grafana's groupingToMatrix turns them into one column per board class): each
    model that ran on both boards has a p90 in both classes."""
    dash = COMMITTED["model-comparison"]
    for mode in ("values", "all"):
        rows = _rows(fleet_run, dash, "p90 heat map: model x board class", selections[("model-comparison", mode)])
        cells = {(row["model"], row["label_class"]): row["p90"] for row in rows}
        for model in ("sine_float.tflite", "efficientnet_lite0_int8.tflite"):
            for board_class in fleet_run.devices.values():
                assert cells[(model, board_class)] > 0, cells
        assert cells[(VARIANT, fleet_run.devices[HOST])] > 0


def test_trade_off_chart_places_each_model_file(fleet_run, selections):
    """The XY chart's frames: every model file with its size and p90 (x, y); the second frame only the variants
    with a drift (its colour), here the int8 variant pushed with --reference."""
    dash = COMMITTED["model-comparison"]
    panel = "Variants trade-off: p90 vs model size"
    for mode in ("values", "all"):
        chosen = selections[("model-comparison", mode)]
        points = _rows(fleet_run, dash, panel, chosen, "A")
        assert {"sine_float.tflite", "efficientnet_lite0_int8.tflite", VARIANT} <= {r["model"] for r in points}
        assert all(r["size"] > 0 and r["p90"] > 0 for r in points if not r["model"].endswith(".gguf")), points
        drifted = _rows(fleet_run, dash, panel, chosen, "B")
        assert {r["model"] for r in drifted} == {VARIANT} and all(0 < r["max abs err"] < 1 for r in drifted)


def test_distribution_reads_the_latest_runs_samples(fleet_run, selections):
    """The histogram's samples: per model x board x configuration, the latest run's raw latencies in ms; the int8
    variant ran once on the host, so its series holds exactly the samples that run stored."""
    dash = COMMITTED["model-comparison"]
    [query] = [q for q in queries.panel_queries(dash) if q.panel.startswith("Latency distribution")]
    text = queries.interpolate(query.text, dash, selections[("model-comparison", "all")], TIME_FILTER, INTERVAL)
    series = {(s["tags"]["model"], s["tags"]["device"]): [row[1] for row in s["values"]]
              for s in fleet_run.query(text)}
    for device in fleet_run.devices:
        assert series[("sine_float.tflite", device)], series.keys()
    samples = series[(VARIANT, HOST)]
    assert 0 < len(samples) <= schema.MAX_SAMPLES_PER_RESULT and all(0 < v < 10_000 for v in samples)
    [result] = fleet_run.query(f'SELECT "samples_total", "p50_ms" FROM "edgebench_result" WHERE "model" = '
                               f"'{VARIANT}'")
    (_, total, p50), = result["values"]
    assert len(samples) == min(total, schema.MAX_SAMPLES_PER_RESULT)
    ordered = sorted(samples)  # the stored p50 is the run's own; the histogram's median is near it
    assert 0.5 * p50 < ordered[len(ordered) // 2] < 2 * p50


def test_band_panels_read_one_models_interval(fleet_run, selections):
    """The band panels (repeated per model, as Grafana runs each copy: the model variable set to one value) return
    the three series the band's fillBelowTo override names, the high end at or above the low end."""
    for name in ("model-comparison", "device-detail"):
        dash = COMMITTED[name]
        [panel] = [p for p in dash["panels"] if p["title"] == "p90 in its interval: $model"]
        assert panel["repeat"] == "model"
        [query] = [q for q in queries.panel_queries(dash) if q.panel == panel["title"]]
        chosen = {**selections[(name, "all")], "model": "efficientnet_lite0_int8.tflite"}
        rows = [dict(zip(s["columns"], row)) for s in fleet_run.query(
            queries.interpolate(query.text, dash, chosen, TIME_FILTER, INTERVAL)) for row in s["values"]]
        named = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
        assert named == {"p90 ci low", "p90 ci high"} and named < set(rows[0])
        ends = [(r["p90 ci low"], r["p90"], r["p90 ci high"]) for r in rows if r["p90 ci low"] is not None]
        assert ends and all(0 < low <= high and p90 > 0 for low, p90, high in ends), ends
