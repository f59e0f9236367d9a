"""The InfluxQL in a dashboard's JSON, and Grafana's interpolation of it, so the queries can be run outside Grafana
(the tests run every one against a real influxd; ``edgebench dashboards queries`` prints them).

Interpolation follows Grafana's InfluxDB datasource: ``$timeFilter`` becomes a time condition, ``$__interval`` the
GROUP BY time() interval, and a template variable inside a regex (``/^$model$/``) a regex alternation of its
escaped values, ``(a|b)``, or its ``allValue`` (``.*``) for All.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]/])")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


@dataclass(frozen=True)
class Query:
    dashboard: str  # uid
    panel: str  # title
    ref: str  # refId
    text: str  # InfluxQL with Grafana's macros and variables
    table: bool  # resultFormat table


def panel_queries(dash: dict) -> Iterator[Query]:
    for panel in dash.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            for t in sub.get("targets", []):
                yield Query(dash["uid"], sub.get("title", ""), t.get("refId", ""), t["query"],
                            t.get("resultFormat") == "table")


def query_variables(dash: dict) -> list[dict]:
    """The template variables whose values come from InfluxDB (type query), in dashboard order."""
    return [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "query"]


def escape_regex(value: str) -> str:
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def format_value(variable: dict, values: Union[str, Sequence[str]]) -> str:
    """A variable's value as Grafana's InfluxDB datasource writes it into a regex."""
    if values == "$__all" or (isinstance(values, (list, tuple)) and list(values) == ["$__all"]):
        if variable.get("allValue"):
            return str(variable["allValue"])
        values = [o["value"] for o in variable.get("options", []) if o.get("value") != "$__all"]
    if isinstance(values, str):
        values = [values]
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(text: str, dash: dict, values: dict[str, Union[str, Sequence[str]]],
                time_filter: str = "time > now() - 1h", interval: str = "1m") -> str:
    """``text`` with Grafana's macros and the dashboard's variables replaced; ``values`` maps variable names to
    the selected value(s) (``"$__all"`` for All). A variable without a value is an error."""
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    builtins = {"timeFilter": time_filter, "__interval": interval, "interval": interval}

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in builtins:
            return builtins[name]
        if name not in variables:
            return match.group(0)  # not a variable ($col, $tag_x in aliases; regex anchors never match \w)
        if name not in values:
            raise KeyError(f"no value for variable ${name}")
        return format_value(variables[name], values[name])

    return _VARIABLE.sub(replace, text)
