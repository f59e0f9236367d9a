"""Release gates: the verdict history per rule, model, board class and configuration (measurement edgebench_gate,
written by ``edgebench gate`` and the collector's ``GET /api/gates/evaluate``; docs/gates.md)."""

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

UID = "edgebench-gates"

FILTERS = (match(s.BOARD_CLASS, "board_class"), match(s.MODEL, "model"), match(s.RULE, "rule"))
SERIES = f'"{s.MODEL}", "{s.BOARD_CLASS}", "{s.CONFIG}", "{s.RULE}"'
VERDICT = value_map({"true": ("pass", "green"), "false": ("fail", "red")})


def _latest(passed: str) -> str:
    """How many rule x model x board class x configuration combinations have a latest verdict that passed (true)
    or not."""
    return (f'SELECT count("passed") AS "verdicts" FROM (SELECT last("passed") AS "passed" FROM "{s.GATE.name}" '
            f'WHERE {where(*FILTERS)} GROUP BY {SERIES}) WHERE "passed" = {passed}')


def build() -> g.Dashboard:
    variables = [
        tag_variable("board_class", "Board class", s.GATE.name, s.BOARD_CLASS),
        tag_variable("model", "Model", s.GATE.name, s.MODEL, match(s.BOARD_CLASS, "board_class")),
        tag_variable("rule", "Rule", s.GATE.name, s.RULE, match(s.MODEL, "model")),
    ]
    failing = g.Stat(
        title="Failing now", description="Rule x model x board class x configuration combinations whose latest "
        "verdict did not pass: fail, missing data, or inconclusive (a regression the repeats cannot tell yet).",
        targets=[target(_latest("false"))], reduceCalc="lastNotNull", graphMode="none", noValue="0",
        thresholds=thresholds(("green", None), ("red", 1.0)))
    passing = g.Stat(
        title="Passing now", description="Combinations whose latest verdict passed.",
        targets=[target(_latest("true"))], reduceCalc="lastNotNull", graphMode="none", noValue="0",
        thresholds=thresholds(("green", None)))
    latest = g.Table(
        title="Latest verdicts", description="The latest verdict of each rule for each model, board class and "
        "configuration (runtime, delegate chain, threads, variant).",
        targets=[target(f'SELECT "status", "passed", "value", "message" FROM "{s.GATE.name}" WHERE {where(*FILTERS)} '
                        f'GROUP BY {SERIES} ORDER BY time DESC LIMIT 1', table=True)],
        overrides=[override("byName", "passed", mappings=VERDICT, custom__cellOptions={"type": "color-background"})],
        transformations=[{"id": "organize", "options": {"renameByName": {"Time": "evaluated"}}}])
    history = g.StateTimeline(
        title="Verdict history", description="Every evaluation of every rule, per model, board class and "
        "configuration.",
        targets=[target(f'SELECT "passed" FROM "{s.GATE.name}" WHERE {where(*FILTERS)} GROUP BY {SERIES}',
                        alias="$tag_model · $tag_board_class · $tag_config · $tag_rule")],
        mappings=VERDICT, mergeValues=False)
    values = g.TimeSeries(
        title="Gated value per evaluation", description="The metric each rule judged (its unit is the rule's: ms, "
        "mJ, bytes, % regression...).",
        targets=[target(f'SELECT "value" FROM "{s.GATE.name}" WHERE {where(*FILTERS)} GROUP BY {SERIES}',
                        alias="$tag_model · $tag_board_class · $tag_config · $tag_rule")],
        drawStyle="line", showPoints="always", legendDisplayMode="table", legendPlacement="right")
    failures = g.Table(
        title="Failures", description="The latest 20 verdicts that did not pass (fail, missing, inconclusive), with "
        "the reason.",
        targets=[target(f'SELECT "status", "value", "message" FROM "{s.GATE.name}" WHERE {where(*FILTERS)} '
                        f'AND "passed" = false GROUP BY {SERIES} ORDER BY time DESC LIMIT 20', table=True)])
    return dashboard(
        "edgebench: release gates", UID, "Release-gate verdict history per model and board class.",
        variables, grid([
            (4, [(failing, 12), (passing, 12)]),
            (8, [(latest, 24)]),
            (9, [(history, 24)]),
            (8, [(values, 12), (failures, 12)]),
        ]), time_from="now-30d")
