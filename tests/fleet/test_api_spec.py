"""The OpenAPI description covers every route the collector serves."""

from __future__ import annotations

import re

from edgebench.server.api import ROUTES
from edgebench.server.openapi import OPENAPI


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "X", path)


def test_every_route_is_described():
    described = {(method.lower(), _shape(path)) for path, ops in OPENAPI["paths"].items() for method in ops}
    for method, path, name in ROUTES:
        if name == "openapi":
            continue
        assert (method.lower(), _shape(path)) in described, (method, path)
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(OPENAPI)))
    assert refs <= set(OPENAPI["components"]["schemas"])


def test_every_described_route_is_served():
    served = {(method.lower(), _shape(path)) for method, path, _ in ROUTES}
    for path, ops in OPENAPI["paths"].items():
        for method in ops:
            assert (method, _shape(path)) in served, (method, path)
