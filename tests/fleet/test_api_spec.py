"""The OpenAPI description covers every route the collector serves."""

from __future__ import annotations

import re

from edgebench.server.api import ROUTES
from edgebench.server.openapi import OPENAPI


def test_every_route_is_described():
    described = {(method.lower(), re.sub(r"\{[^}]+\}", "X", path)) for path, ops in OPENAPI["paths"].items()
                 for method in ops}
    for method, pattern, name in ROUTES:
        if name == "openapi":
            continue
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "X", pattern.pattern.strip("^$")).replace("\\.", ".")
        assert (method.lower(), path) in described, (method, path)
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(OPENAPI)))
    assert refs <= set(OPENAPI["components"]["schemas"])
