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
