"""Fleet overview: which boards report, when each was last seen, how hot they run, what they run, which agent
version they have, and whether their delegates take the models they run (placement over the fleet)."""

from __future__ import annotations

from grafanalib import core as g

from edgebench.dashboards.common import (
    dashboard,
    grid,
    match,
    override,
    tag_variable,
    target,
    thresholds,
    value_map,
    where,
)
from edgebench.server import schema as s

UID = "edgebench-fleet"
ONLINE_WINDOW = "5m"  # telemetry goes out every minute by default (6 samples x 10 s): 5 batches missed = silent

CLASS = match(s.BOARD_CLASS_LABEL, "board_class")


def _device_state(select: str) -> str:
    """Per-device latest state (measurement edgebench_device), aggregated over devices."""
    return (f'SELECT {select} FROM (SELECT last("online") AS "online", last("agent_version") AS "agent_version" '
            f'FROM "{s.DEVICE_STATE.name}" WHERE {where(CLASS)} GROUP BY "{s.DEVICE}")')


# A configuration on a device: the placement rows of its chain's first choice (one per run), their latest coverage
FIRST_CHOICE = f'"{s.DEVICE}", "{s.MODEL}", "{s.RUNTIME}", "{s.DELEGATE}", "{s.THREADS}", "{s.BACKEND}"'


def _first_choice(select: str) -> str:
    return (f'SELECT {select} FROM "{s.PLACEMENT.name}" WHERE {where(CLASS)} AND "first_choice" = true '
            f'GROUP BY {FIRST_CHOICE}')


LATEST_COVERAGE = _first_choice('last("coverage") AS "coverage"')


def build() -> g.Dashboard:
    variables = [tag_variable("board_class", "Board class", f"/^({s.RESULT.name}|{s.TELEMETRY.name})$/",
                              s.BOARD_CLASS_LABEL)]
    reporting = g.Stat(
        title="Devices reporting", description=f"Devices whose telemetry arrived in the last {ONLINE_WINDOW}.",
        targets=[target(f'SELECT count("load1") AS "reporting" FROM (SELECT last("load1") AS "load1" FROM '
                        f'"{s.TELEMETRY.name}" WHERE time > now() - {ONLINE_WINDOW} AND {CLASS} '
                        f'GROUP BY "{s.DEVICE}")')],
        reduceCalc="lastNotNull", graphMode="none", noValue="0", thresholds=thresholds(("blue", None)))
    online = g.Stat(
        title="Online", description="Devices whose last status message says online (the broker publishes the "
        "agent's last will, offline, when a board drops off).",
        targets=[target(_device_state('sum("online") AS "online"'))], reduceCalc="lastNotNull", graphMode="none",
        noValue="no data", thresholds=thresholds(("green", None)))
    offline = g.Stat(
        title="Offline", description="Devices seen in the time range whose last status message says offline.",
        targets=[target(_device_state('count("online") - sum("online") AS "offline"'))], reduceCalc="lastNotNull",
        graphMode="none", noValue="no data", thresholds=thresholds(("green", None), ("red", 1.0)))
    versions = g.Stat(
        title="Agent versions in use", description="Distinct agent versions among the devices' latest status.",
        targets=[target(_device_state('count(distinct("agent_version")) AS "versions"'))], reduceCalc="lastNotNull",
        graphMode="none", noValue="no data", thresholds=thresholds(("green", None), ("orange", 2.0)))
    results = g.Stat(
        title="Benchmark runs", description="Result points in the time range.",
        targets=[target(f'SELECT count("p50_ms") AS "runs" FROM "{s.RESULT.name}" WHERE {where(CLASS)}')],
        reduceCalc="lastNotNull", graphMode="none", noValue="0", thresholds=thresholds(("blue", None)))

    devices = g.Table(
        title="Devices: state, agent version, current job",
        description="From each device's latest status and heartbeat (measurement edgebench_device).",
        targets=[target(f'SELECT last("state") AS "state", last("agent_version") AS "agent version", '
                        f'last("job_id") AS "current job", last("uptime_s") AS "uptime" FROM "{s.DEVICE_STATE.name}" '
                        f'WHERE {where(CLASS)} GROUP BY "{s.DEVICE}"', table=True)],
        overrides=[override("byName", "uptime", unit="s"),
                   override("byName", "state", mappings=value_map({"online": ("online", "green"),
                                                                  "offline": ("offline", "red")}),
                            custom__cellOptions={"type": "color-text"})],
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}])
    last_seen = g.Table(
        title="Last seen", description="Time of each device's latest telemetry sample, with its load and free memory.",
        targets=[target(f'SELECT last("load1") AS "load1" FROM "{s.TELEMETRY.name}" WHERE {where(CLASS)} '
                        f'GROUP BY "{s.DEVICE}", "{s.BOARD_CLASS_LABEL}"', table=True)],
        transformations=[{"id": "organize", "options": {"renameByName": {"Time": "last seen",
                                                                         s.BOARD_CLASS_LABEL: "class"}}}])
    last_result = g.Table(
        title="Latest run per device", description="Each device's most recent benchmark result.",
        targets=[target(f'SELECT "model", "runtime", "delegate", "p50_ms", "p90_ms", "job_id" FROM "{s.RESULT.name}" '
                        f'WHERE {where(CLASS)} GROUP BY "{s.DEVICE}" ORDER BY time DESC LIMIT 1', table=True)],
        overrides=[override("byRegexp", "/_ms$/", unit="ms")],
        transformations=[{"id": "organize", "options": {"renameByName": {"Time": "finished"}}}])
    partial = g.Stat(
        title="Delegates that left nodes behind",
        description="Device x model x configuration whose latest run's first-choice delegate or provider took "
        "fewer than all of the model's nodes (the rest ran on the next backend, usually the CPU): a release gate "
        "on delegate_coverage with min = 1.0 fails these.",
        targets=[target(f'SELECT count("coverage") AS "partial" FROM ({LATEST_COVERAGE}) WHERE "coverage" < 1')],
        reduceCalc="lastNotNull", graphMode="none", noValue="0",
        thresholds=thresholds(("green", None), ("orange", 1.0)))
    coverage = g.Table(
        title="Delegate coverage per device and model",
        description="The latest run of each model and configuration on each device: the chain's first choice "
        "(backend), the nodes it took of the model's, and its coverage. The op types it left are in the model "
        "comparison's \"Op types off the first choice\".",
        targets=[target(_first_choice('last("coverage") AS "coverage", last("nodes") AS "on first choice", '
                                      'last("model_nodes") AS "nodes", last("partitions") AS "partitions"'),
                        table=True)],
        overrides=[override("byName", "coverage", unit="percentunit", custom__cellOptions={"type": "gauge",
                                                                                        "mode": "basic"},
                            min=0, max=1, thresholds={"mode": "absolute", "steps": thresholds(
                                ("red", None), ("orange", 0.5), ("green", 1.0))})],
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}])
    temperature = g.TimeSeries(
        title="Temperature", description="Hottest thermal zone of each device (telemetry temp_max_c).",
        targets=[target(f'SELECT max("temp_max_c") FROM "{s.TELEMETRY.name}" WHERE {where(CLASS)} '
                        f'GROUP BY time($__interval), "{s.DEVICE}" fill(none)', alias="$tag_device")],
        unit="celsius", thresholds=thresholds(("green", None), ("orange", 70.0), ("red", 85.0)),
        thresholdsStyleMode="line", spanNulls=True)
    load = g.TimeSeries(
        title="Load (1 min)", description="Telemetry load1 of each device.",
        targets=[target(f'SELECT mean("load1") FROM "{s.TELEMETRY.name}" WHERE {where(CLASS)} '
                        f'GROUP BY time($__interval), "{s.DEVICE}" fill(none)', alias="$tag_device")],
        spanNulls=True)
    return dashboard(
        "edgebench: fleet overview", UID,
        "Which boards report, when each was last seen, temperature, current job and agent version, and how much of "
        "each model their delegates take.",
        variables, grid([
            (4, [(reporting, 4), (online, 4), (offline, 4), (versions, 6), (results, 6)]),
            (8, [(devices, 12), (last_seen, 12)]),
            (8, [(last_result, 24)]),
            (8, [(partial, 4), (coverage, 20)]),
            (8, [(temperature, 12), (load, 12)]),
        ]), time_from="now-24h")
