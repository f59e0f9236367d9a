"""Device detail: one board's latency per run, with each run's p90 interval, on the same time axis as its
temperature, clocks and power (shared crosshair), with the runs during which it throttled marked."""

from __future__ import annotations

from grafanalib import core as g

from edgebench.dashboards.common import (
    INTERVAL_ENDS,
    dashboard,
    grid,
    interval_band,
    match,
    override,
    repeat_per,
    tag_variable,
    target,
    thresholds,
    value_map,
    where,
)
from edgebench.server import schema as s

UID = "edgebench-device"

DEVICE = match(s.DEVICE, "device")
RUNS = (DEVICE, match(s.MODEL, "model"))
THROTTLED_ALIAS = "throttled run: $tag_model"


def _telemetry(select: str) -> str:
    return f'SELECT {select} FROM "{s.TELEMETRY.name}" WHERE {where(DEVICE)} GROUP BY time($__interval) fill(none)'


def _per_run(select: str, extra: str = "") -> str:
    condition = where(*RUNS) + (f" AND {extra}" if extra else "")
    return (f'SELECT {select} FROM "{s.RESULT.name}" WHERE {condition} '
            f'GROUP BY "{s.MODEL}", "{s.RUNTIME}", "{s.DELEGATE}"')


def build() -> g.Dashboard:
    variables = [
        tag_variable("device", "Device", f"/^({s.RESULT.name}|{s.TELEMETRY.name})$/", s.DEVICE, multi=False),
        tag_variable("model", "Model", s.RESULT.name, s.MODEL, DEVICE),
    ]
    marker = override("byRegexp", "/^throttled run/", custom__drawStyle="points", custom__pointSize=14,
                      color={"mode": "fixed", "fixedColor": "red"})
    latency = g.TimeSeries(
        title="Latency per run",
        description="Each run's p50/p90/p99, and the low and high ends of its p90's 95% confidence interval "
        "(dashed: from the spread between the run's repeats, or batches of a run of one repeat). Red dots: runs "
        "during which the board throttled (its clocks were cut or a thermal trip was passed), placed at their p90.",
        targets=[target(_per_run('"p50_ms" AS "p50", "p90_ms" AS "p90", "p99_ms" AS "p99", '
                                 '"p90_ci_low_ms" AS "p90 ci low", "p90_ci_high_ms" AS "p90 ci high"'),
                        alias="$tag_model $col ($tag_runtime/$tag_delegate)"),
                 target(_per_run('"p90_ms" AS "throttled"', '"throttled" = true'), "B", alias=THROTTLED_ALIAS)],
        unit="ms", drawStyle="line", showPoints="always", pointSize=5, overrides=[marker, INTERVAL_ENDS],
        legendDisplayMode="table", legendPlacement="right", legendCalcs=["min", "mean", "max"])
    band = g.TimeSeries(
        title="p90 in its interval: $model",
        description="Per selected model (one panel each): each run's p90 on this board inside a band from the low "
        "to the high end of its 95% confidence interval. Runs of every runtime/delegate the model ran under share "
        "the line: the latency panel above splits them.",
        targets=[target(f'SELECT "p90_ms" AS "p90", "p90_ci_low_ms" AS "p90 ci low", "p90_ci_high_ms" AS '
                        f'"p90 ci high" FROM "{s.RESULT.name}" WHERE {where(*RUNS)}', alias="$col")],
        unit="ms", drawStyle="line", showPoints="always", pointSize=6, spanNulls=True, repeat=repeat_per("model"),
        overrides=interval_band("p90"))
    temperature = g.TimeSeries(
        title="Temperature", description="Hottest thermal zone (telemetry temp_max_c).",
        targets=[target(_telemetry('max("temp_max_c") AS "hottest zone"'))], unit="celsius",
        thresholds=thresholds(("green", None), ("orange", 70.0), ("red", 85.0)), thresholdsStyleMode="line",
        spanNulls=True)
    clocks = g.TimeSeries(
        title="CPU clock", description="Current CPU clock and the limit in force (telemetry cpu_freq_hz, "
        "cpu_freq_max_hz): a limit that drops is the governor or the thermal framework capping the board.",
        targets=[target(_telemetry('mean("cpu_freq_hz") AS "clock"')),
                 target(_telemetry('min("cpu_freq_max_hz") AS "limit"'), "B")],
        unit="hertz", spanNulls=True)
    power = g.TimeSeries(
        title="Power", description="Board power from telemetry (power_w) and each run's average power during the "
        "measured window (avg_w, dots).",
        targets=[target(_telemetry('mean("power_w") AS "board power"')),
                 target(_per_run('"avg_w" AS "run average"'), "B", alias="run average: $tag_model")],
        unit="watt", spanNulls=True,
        overrides=[override("byRegexp", "/^run average/", custom__drawStyle="points", custom__pointSize=8)])
    throttling = g.StateTimeline(
        title="Throttling per run", description="Whether the engine detected throttling during each run.",
        targets=[target(_per_run('"throttled"'), alias="$tag_model ($tag_runtime/$tag_delegate)")],
        mappings=value_map({"true": ("throttled", "red"), "false": ("ok", "green")}), mergeValues=False)
    energy = g.TimeSeries(
        title="Energy per inference", description="Per run, from the board's widest-scope power sensor.",
        targets=[target(_per_run('"energy_per_inference_mj"'), alias="$tag_model ($tag_runtime/$tag_delegate)")],
        unit="mJ", drawStyle="points", pointSize=8)
    system = g.TimeSeries(
        title="Load and free memory", description="Telemetry load1 and MemAvailable.",
        targets=[target(_telemetry('mean("load1") AS "load1"')),
                 target(_telemetry('mean("mem_available_bytes") AS "memory available"'), "B")],
        spanNulls=True,
        overrides=[override("byName", "memory available", unit="bytes", custom__axisPlacement="right")])
    runs = g.Table(
        title="Runs", description="The latest 50 runs on this device.",
        targets=[target(f'SELECT "p50_ms", "p90_ms", "p99_ms", "count", "peak_steady_bytes", '
                        f'"energy_per_inference_mj", "throttled", "valid", "job_id" FROM "{s.RESULT.name}" '
                        f'WHERE {where(*RUNS)} GROUP BY "{s.MODEL}", "{s.RUNTIME}", "{s.DELEGATE}" '
                        f'ORDER BY time DESC LIMIT 50', table=True)],
        overrides=[override("byRegexp", "/_ms$/", unit="ms"), override("byName", "peak_steady_bytes", unit="bytes")])
    return dashboard(
        "edgebench: device detail", UID,
        "One board: latency per run aligned with temperature, clocks and power; throttling marked.",
        variables, grid([
            (9, [(latency, 24)]),
            (7, [(band, 24)]),
            (6, [(temperature, 12), (clocks, 12)]),
            (6, [(power, 12), (energy, 12)]),
            (5, [(throttling, 24)]),
            (6, [(system, 24)]),
            (9, [(runs, 24)]),
        ]), time_from="now-24h", shared_crosshair=True)
