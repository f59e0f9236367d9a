"""Every committed dashboard validates against the JSON Schema generated from Grafana's published types
(npm @grafana/schema, pinned in grafana_schema.py; generated once into the cache)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from edgebench.dashboards.build import DASHBOARDS


def _errors(schema: dict, document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]


def test_the_schema_is_grafanas_dashboard(grafana_schema):
    definitions = grafana_schema["definitions"]
    assert grafana_schema["$ref"] == "#/definitions/Dashboard"
    for name in ("Dashboard", "Panel", "RowPanel", "VariableModel", "FieldConfigSource", "ThresholdsConfig"):
        assert name in definitions
    assert definitions["Panel"]["additionalProperties"] is False  # strict: unknown keys are errors


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_validates(grafana_schema, committed, name):
    errors = _errors(grafana_schema, committed[name])
    assert not errors, f"{name}.json does not match Grafana's dashboard schema:\n" + "\n".join(errors[:30])


def test_the_check_bites(grafana_schema):
    """grafanalib's output before post-processing (schemaVersion 12, legacy keys, nulls) is refused: the
    validation above is not vacuous."""
    from grafanalib._gen import DashboardEncoder

    from edgebench.dashboards import gates

    raw = json.loads(json.dumps(gates.build().to_json_data(), cls=DashboardEncoder))
    errors = _errors(grafana_schema, raw)
    assert any("rows" in e or "sharedCrosshair" in e for e in errors), errors[:10]
    assert any("None is not of type" in e for e in errors), errors[:10]


_INHERITED = {"OptionsWithLegend": {"legend"}, "OptionsWithTooltip": {"tooltip"}}


def _plugin_options(panel_type: str) -> set[str]:
    """The option names a core panel plugin declares in @grafana/schema (composable/<plugin>/panelcfg): its
    ``Options`` interface's own fields and those of the common interfaces it extends."""
    import re

    from .grafana_schema import cache_dir

    types = (cache_dir() / "node_modules/@grafana/schema/dist/types/raw/composable" / panel_type / "panelcfg/x"
             / "types.gen.d.ts")
    assert types.is_file(), f"no panel plugin {panel_type!r} in @grafana/schema"
    declared = re.search(r"export interface Options(?: extends ([^{]*))?\{(.*?)\n\}", types.read_text(), re.S)
    assert declared, types
    names = set(re.findall(r"^    (\w+)\??:", declared.group(2), re.M))
    for base in re.findall(r"common\.(\w+)", declared.group(1) or ""):
        names |= _INHERITED.get(base, set())
    return names


@pytest.mark.parametrize("panel_type", ["xychart", "histogram"])
def test_plugin_panels_use_their_declared_options(grafana_schema, committed, panel_type):
    """The panels whose options grafanalib does not model (the trade-off XY chart, the latency histogram) exist in
    Grafana's published types and set only options the plugin declares (the dashboard schema leaves panel options
    open)."""
    panels = [p for dash in committed.values() for p in dash["panels"] if p["type"] == panel_type]
    assert panels, f"no {panel_type} panel"
    declared = _plugin_options(panel_type)
    for panel in panels:
        assert set(panel["options"]) <= declared, (panel["title"], set(panel["options"]) - declared)
