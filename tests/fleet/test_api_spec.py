"""The OpenAPI description covers every route the collector serves."""

from __future__ import annotations

import re

from edgebench.server.api import ROUTES
from edgebench.server.openapi import OPENAPI, document


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "X", path)


def test_every_route_is_described():
    described = {(method.lower(), _shape(path)) for path, ops in OPENAPI["paths"].items() for method in ops}
    for method, path, name, _ in ROUTES:
        if name == "openapi":
            continue
        assert (method.lower(), _shape(path)) in described, (method, path)
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(OPENAPI)))
    assert refs <= set(OPENAPI["components"]["schemas"])


def test_every_described_route_is_served():
    served = {(method.lower(), _shape(path)) for method, path, _, _ in ROUTES}
    for path, ops in OPENAPI["paths"].items():
        for method in ops:
            assert (method, _shape(path)) in served, (method, path)


def test_the_description_is_served_at_both_paths(tmp_path):
    """/openapi.json (where OpenAPI tools look first) and /api/v1/openapi.json (the versioned path) are the same."""
    import json
    import threading
    import urllib.request

    from edgebench.server.api import Api, serve
    from edgebench.server.metrics import Metrics
    from edgebench.server.registry import Registry

    registry = Registry(tmp_path / "registry.sqlite3")
    httpd = serve(Api(registry, None, Metrics(), tmp_path / "models", "", 1024, auth=False), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        for path in ("/openapi.json", "/api/v1/openapi.json"):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                served = json.loads(response.read())
                assert response.status == 200 and served == json.loads(json.dumps(document(ROUTES)))
    finally:
        httpd.shutdown()
        registry.close()
