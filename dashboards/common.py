"""Building blocks shared by the dashboards, and the post-processing that turns grafanalib 0.7.1's output into
JSON that Grafana's own published types (``@grafana/schema``) accept.

Every target is raw InfluxQL against the datasource chosen by the ``datasource`` variable, so the dashboards run
unchanged on InfluxDB 1.x, 2.x (through its DBRP mapping) and 3.x, and on any Grafana whose InfluxDB datasource
has another uid than the provisioned one.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import attr
from grafanalib import core as g
from grafanalib.influxdb import InfluxDBTarget

SCHEMA_VERSION = 42  # the dashboard schema version of @grafana/schema 13.2.3 (Grafana 13.2)
DATASOURCE_UID = "edgebench-influxdb"  # the provisioned datasource (deploy/grafana/provisioning/datasources)
DATASOURCE_NAME = "edgebench"
DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
TAGS = ["edgebench"]

# ---------------------------------------------------------------- InfluxQL pieces


def match(tag: str, variable: str) -> str:
    """A tag filter on a (multi-value) template variable, as Grafana's InfluxDB datasource expects it: the
    variable expands to a regex alternation of the escaped values, or to ``.*`` for All."""
    return f'"{tag}" =~ /^${variable}$/'


def where(*conditions: str) -> str:
    return " AND ".join(["$timeFilter", *conditions])


def target(query: str, ref: str = "A", table: bool = False, alias: str = "") -> InfluxDBTarget:
    return InfluxDBTarget(query=query, refId=ref, format="table" if table else "time_series", alias=alias)


# ---------------------------------------------------------------- variables


def datasource_variable() -> g.Template:
    return g.Template(name="datasource", label="InfluxDB", type="datasource", query="influxdb",
                      default=DATASOURCE_UID)


def tag_variable(name: str, label: str, measurement: str, key: str, condition: str = "",
                 multi: bool = True) -> g.Template:
    """A variable listing the values of one tag (``SHOW TAG VALUES``); a multi-value one has All (= ``.*``, which
    also matches points without the tag)."""
    source = measurement if measurement.startswith("/") else f'"{measurement}"'
    query = f'SHOW TAG VALUES FROM {source} WITH KEY = "{key}"' + (f" WHERE {condition}" if condition else "")
    return g.Template(name=name, label=label, query=query, dataSource=DATASOURCE, multi=multi, includeAll=multi,
                      allValue=".*" if multi else None, default="$__all" if multi else None,
                      refresh=g.REFRESH_ON_TIME_RANGE_CHANGE, sort=g.SORT_ALPHA_ASC)


# ---------------------------------------------------------------- panels


def grid(rows: Iterable[tuple[int, list[tuple[g.Panel, int]]]]) -> list[g.Panel]:
    """Lay panels out row by row: ``[(height, [(panel, width), ...]), ...]`` (24 columns)."""
    panels, y = [], 0
    for height, row in rows:
        x = 0
        for panel, width in row:
            panel.gridPos = g.GridPos(h=height, w=width, x=x, y=y)
            panels.append(panel)
            x += width
        y += height
    return panels


def thresholds(*steps: tuple[str, Optional[float]]) -> list[dict]:
    """Threshold steps; the first one's value is null (from -Infinity)."""
    return [{"color": color, "value": None if index == 0 else value}
            for index, (color, value) in enumerate(steps)]


def value_map(mapping: dict[str, tuple[str, str]]) -> list[dict]:
    """A value mapping: raw value (text) -> (display text, color)."""
    return [{"type": "value", "options": {raw: {"text": text, "color": color, "index": index}
                                          for index, (raw, (text, color)) in enumerate(mapping.items())}}]


def override(matcher_id: str, matcher: str, **properties: Any) -> dict:
    return {"matcher": {"id": matcher_id, "options": matcher},
            "properties": [{"id": key.replace("__", "."), "value": value} for key, value in properties.items()]}


# The ends of a confidence interval (series named "... ci low" / "... ci high") beside their percentile: thin dashed
# lines joining the runs.
INTERVAL_ENDS = override("byRegexp", "/ ci (low|high)/", custom__drawStyle="line", custom__lineWidth=1,
                         custom__lineStyle={"fill": "dash", "dash": [6, 4]}, custom__showPoints="never",
                         custom__spanNulls=True)


# A percentile's confidence interval as a filled band: the "... ci high" series is filled down to the "... ci low"
# one (Grafana's fillBelowTo names the other series by its display name, so the names must be static: the panels
# that use it show one model's interval each, repeated per model), both ends without a line of their own.
def interval_band(percentile: str) -> list[dict]:
    low, high = f"{percentile} ci low", f"{percentile} ci high"
    return [override("byName", high, custom__fillBelowTo=low, custom__fillOpacity=25, custom__lineWidth=0,
                     custom__showPoints="never", custom__spanNulls=True),
            override("byName", low, custom__lineWidth=0, custom__showPoints="never", custom__spanNulls=True,
                     custom__hideFrom={"legend": True, "tooltip": False, "viz": False})]


@attr.s
class PluginPanel(g.Panel):
    """A panel of a Grafana core plugin grafanalib 0.7.1 has no class for (``xychart``): its options and field
    config as the plugin's own types (``@grafana/schema`` composable/<plugin>/panelcfg) declare them."""

    type = attr.ib(default="xychart", validator=attr.validators.instance_of(str))
    options = attr.ib(factory=dict, validator=attr.validators.instance_of(dict))
    defaults = attr.ib(factory=dict, validator=attr.validators.instance_of(dict))
    overrides = attr.ib(factory=list, validator=attr.validators.instance_of(list))

    def to_json_data(self) -> dict:
        return self.panel_json({"type": self.type, "options": self.options,
                                "fieldConfig": {"defaults": self.defaults, "overrides": self.overrides}})


def repeat_per(variable: str, per_row: int = 2) -> g.Repeat:
    """One copy of a panel per selected value of ``variable``, side by side (Grafana sets the variable to that one
    value in each copy)."""
    return g.Repeat(direction="h", variable=variable, maxPerRow=per_row)


def dashboard(title: str, uid: str, description: str, variables: list[g.Template], panels: list[g.Panel],
              time_from: str = "now-7d", shared_crosshair: bool = False) -> g.Dashboard:
    links = [g.DashboardLink(title="edgebench", type="dashboards", tags=TAGS, asDropdown=True, includeVars=False,
                             keepTime=True)]
    return g.Dashboard(
        title=title, uid=uid, description=description, tags=TAGS, timezone="browser", refresh="1m",
        time=g.Time(time_from, "now"), links=links, panels=panels,
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR if shared_crosshair else g.GRAPH_TOOLTIP_MODE_NOT_SHARED,
        templating=g.Templating(list=[datasource_variable(), *variables]),
    ).auto_panel_ids()


# ---------------------------------------------------------------- grafanalib 0.7.1 -> Grafana's schema

# Keys grafanalib emits that Grafana's current dashboard schema does not have (legacy or per-plugin leftovers).
_DASHBOARD_DROP = ("__inputs", "hideControls", "rows", "sharedCrosshair", "style", "gnetId", "id")
_PANEL_DROP = ("editable", "error", "height", "minSpan", "span", "columns", "fontSize", "color", "mappings")
_VARIABLE_DROP = ("useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def _fix_panel(panel: dict) -> dict:
    for key in _PANEL_DROP:
        panel.pop(key, None)
    if panel.get("repeat") is None:
        for key in ("repeat", "repeatDirection", "maxPerRow"):
            panel.pop(key, None)
    panel["datasource"] = dict(DATASOURCE)
    panel = _drop_none(panel)
    for key in ("description", "interval", "timeFrom", "timeShift", "cacheTimeout"):
        if panel.get(key) == "":
            panel.pop(key)
    field_config = panel.setdefault("fieldConfig", {})
    field_config.setdefault("overrides", [])
    defaults = field_config.setdefault("defaults", {})
    steps = (defaults.get("thresholds") or {}).get("steps")
    if not isinstance(steps, list) or not steps:  # Stat's default is "", others an empty list
        steps = thresholds(("green", None))
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    panel["targets"] = [_fix_target(t) for t in panel.get("targets", [])]
    return panel


def _fix_target(data: dict) -> dict:
    out = {key: value for key, value in data.items() if value not in ("", None)}
    out["datasource"] = dict(DATASOURCE)
    return out


def _fix_variable(variable: dict) -> dict:
    for key in _VARIABLE_DROP:
        variable.pop(key, None)
    variable = _drop_none(variable)
    current = variable.pop("current", {})
    if variable["type"] == "datasource":
        variable["current"] = {"text": DATASOURCE_NAME, "value": DATASOURCE_UID}
        variable.pop("datasource", None)
    elif variable.get("includeAll"):
        variable["current"] = {"text": ["All"], "value": ["$__all"]}
    elif current.get("text"):
        variable["current"] = {"text": current["text"], "value": current["value"]}
    if variable.get("regex") == "":
        variable.pop("regex")
    return variable


def to_json(dash: g.Dashboard) -> dict:
    """grafanalib's JSON, post-processed for the schema: no nulls, no legacy keys, a current schemaVersion, every
    target and panel on the ``datasource`` variable, threshold steps as Grafana writes them."""
    import json

    from grafanalib._gen import DashboardEncoder

    data = json.loads(json.dumps(dash.to_json_data(), cls=DashboardEncoder))
    for key in _DASHBOARD_DROP:
        data.pop(key, None)
    data["schemaVersion"] = SCHEMA_VERSION
    data["timepicker"].pop("time_options", None)  # gone from Grafana's model (quick_ranges replaced it)
    data["panels"] = [_fix_panel(panel) for panel in data.get("panels", [])]
    data["templating"] = {"list": [_fix_variable(v) for v in data["templating"]["list"]]}
    data["links"] = [_drop_none(link) for link in data.get("links", [])]
    for link in data["links"]:
        if link.get("url") == "":
            link.pop("url")
    data = {key: value for key, value in _drop_none(data).items() if value != ""}
    for panel in data["panels"]:  # the first step's value is null (-Infinity), which _drop_none took out
        for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]:
            step.setdefault("value", None)
    return data
