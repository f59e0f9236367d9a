"""The dashboards as code: the committed JSON is what the code renders, every target is InfluxQL on the datasource
variable, every variable comes from SHOW TAG VALUES, and the CLI builds, checks and lists them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from edgebench.dashboards import queries
from edgebench.dashboards.build import DASHBOARDS, JSON_DIR, build, dumps, render
from edgebench.server import schema

from ..conftest import REPO, run_cli


def test_committed_json_is_not_stale(tmp_path):
    build(tmp_path)
    for name in DASHBOARDS:
        fresh = (tmp_path / f"{name}.json").read_text()
        committed = (JSON_DIR / f"{name}.json").read_text()
        assert committed == fresh, f"dashboards/json/{name}.json is stale: run `edgebench dashboards build`"
    assert sorted(p.name for p in JSON_DIR.glob("*.json")) == sorted(f"{n}.json" for n in DASHBOARDS), \
        "dashboards/json/ holds a file no dashboard renders"


def test_cli_build_and_check(tmp_path):
    assert run_cli("dashboards", "build", "--check").code == 0  # the committed JSON, through the CLI
    result = run_cli("dashboards", "build", "--out", tmp_path)
    assert result.code == 0, result
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(f"{n}.json" for n in DASHBOARDS)
    stale = tmp_path / "release-gates.json"
    stale.write_text(stale.read_text().replace("Failing now", "Failing"))
    result = run_cli("dashboards", "build", "--check", "--out", tmp_path)
    assert result.code == 1 and "release-gates.json" in result.err, result


def test_cli_lists_the_queries():
    result = run_cli("dashboards", "queries")
    assert result.code == 0, result
    assert "SHOW TAG VALUES" in result.out and '"edgebench_gate"' in result.out


def test_commands_import_only_the_standard_library():
    """`edgebench --help` on a board must not import grafanalib (nor need it installed)."""
    code = ("import sys; import edgebench.dashboards.commands; "
            "bad = [m for m in ('grafanalib', 'attr', 'edgebench.dashboards.common') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert "dashboards" in run_cli("--help").out


def test_rendering_is_deterministic():
    for name in DASHBOARDS:
        assert dumps(render(name)) == dumps(render(name))


@pytest.mark.parametrize("name", DASHBOARDS)
def test_targets_are_influxql_on_the_datasource_variable(committed, name):
    dash = committed[name]
    found = list(queries.panel_queries(dash))
    assert found, "a dashboard without queries"
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["rawQuery"] is True and target["resultFormat"] in ("time_series", "table")
            assert target["datasource"] == panel["datasource"]
            assert target["query"].startswith("SELECT "), target["query"]
            assert "$timeFilter" in target["query"] or "now() -" in target["query"], target["query"]
    variables = dash["templating"]["list"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "influxdb"
    for variable in queries.query_variables(dash):
        assert variable["query"].startswith("SHOW TAG VALUES FROM "), variable["query"]
        assert variable["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
    referenced = {v["name"] for v in variables}
    for query in found:  # every $variable a query uses is defined
        for word in set(re.findall(r"\$(\w+)", query.text)) - {"timeFilter", "__interval"}:
            assert word in referenced, f"{query.panel}: ${word} is not a variable of {name}"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_layout(committed, name):
    dash = committed[name]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area


def test_uids_and_titles_are_unique(committed):
    assert len({d["uid"] for d in committed.values()}) == len(committed)
    assert len({d["title"] for d in committed.values()}) == len(committed)
    for dash in committed.values():
        assert "edgebench" in dash["tags"] and 8 <= len(dash["uid"]) <= 40


def _fields(dash: dict) -> str:
    return " ".join(q.text for q in queries.panel_queries(dash))


def test_dashboards_show_what_the_issue_asks_for(committed):
    fleet = _fields(committed["fleet-overview"])
    for needle in ('"online"', '"agent_version"', '"job_id"', '"temp_max_c"', 'last("load1")'):
        assert needle in fleet, needle
    models = _fields(committed["model-comparison"])
    for needle in ('"p50_ms"', '"p90_ms"', '"p99_ms"', '"energy_per_inference_mj"', '"peak_steady_bytes"',
                   'GROUP BY "model", "label_class", "runtime", "delegate"', '"model_sha"'):
        assert needle in models, needle
    device = _fields(committed["device-detail"])
    for needle in ('"temp_max_c"', '"cpu_freq_hz"', '"power_w"', '"avg_w"', '"throttled" = true'):
        assert needle in device, needle
    assert committed["device-detail"]["graphTooltip"] == 1  # shared crosshair: the panels line up in time
    gates = _fields(committed["release-gates"])
    for needle in ('"edgebench_gate"', '"passed"', '"value"', '"message"', '"board_class"', '"rule"'):
        assert needle in gates, needle


def test_interpolation_follows_grafanas_influxdb_datasource():
    dash = {"templating": {"list": [
        {"name": "model", "type": "query", "multi": True, "includeAll": True, "allValue": ".*"},
        {"name": "device", "type": "query", "multi": False},
        {"name": "cls", "type": "query", "multi": True, "includeAll": True,
         "options": [{"value": "$__all"}, {"value": "a"}, {"value": "b"}]}]}}
    text = 'SELECT x FROM m WHERE $timeFilter AND "model" =~ /^$model$/ AND "device" =~ /^${device}$/ ' \
           'AND "c" =~ /^$cls$/ GROUP BY time($__interval)'
    out = queries.interpolate(text, dash, {"model": ["mobilenet_v2.tflite", "a/b"], "device": "rpi5-01",
                                           "cls": "$__all"}, "time > now() - 1h", "10s")
    assert out == (r'SELECT x FROM m WHERE time > now() - 1h AND "model" =~ /^(mobilenet_v2\.tflite|a\/b)$/ AND '
                   r'"device" =~ /^rpi5-01$/ AND "c" =~ /^(a|b)$/ GROUP BY time(10s)')
    assert queries.interpolate('"model" =~ /^$model$/', dash, {"model": "$__all", "device": "x", "cls": "a"}) \
        == '"model" =~ /^.*$/'
    with pytest.raises(KeyError):
        queries.interpolate("$device", dash, {})


def test_proposed_names_are_recognised(monkeypatch):
    monkeypatch.setattr(schema, "PROPOSED", {"edgebench_device": "a measurement", "power_w": "a field"})
    assert schema.proposed_names('SELECT last("online") FROM "edgebench_device"') == ["edgebench_device"]
    assert schema.proposed_names('SELECT mean("power_w") FROM "edgebench_telemetry"') == ["power_w"]
    assert schema.proposed_names('SELECT "avg_w" FROM "edgebench_result"') == []


def test_json_is_plain_json(committed):
    for dash in committed.values():
        assert json.loads(json.dumps(dash)) == dash
