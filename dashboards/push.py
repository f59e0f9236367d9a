"""Upload dashboards through Grafana's HTTP API: ``POST /api/dashboards/db`` with ``overwrite: true``, so a push
replaces the dashboard with the same uid (its version history stays in Grafana). Standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Optional


class PushError(Exception):
    pass


def push_dashboard(grafana_url: str, token: str, dashboard: dict, folder_uid: Optional[str] = None,
                   message: str = "edgebench dashboards push", timeout: float = 30.0) -> dict:
    """Create or replace one dashboard; returns Grafana's answer (``uid``, ``url``, ``version``, ``status``)."""
    body = {"dashboard": {k: v for k, v in dashboard.items() if k != "id"}, "overwrite": True, "message": message}
    if folder_uid:
        body["folderUid"] = folder_uid
    request = urllib.request.Request(
        grafana_url.rstrip("/") + "/api/dashboards/db", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Accept": "application/json"})
    title = dashboard.get("title", dashboard.get("uid", "?"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()[:500]
        try:
            detail = json.loads(raw).get("message") or raw.decode("utf-8", "replace")
        except ValueError:
            detail = raw.decode("utf-8", "replace") or exc.reason
        raise PushError(f"Grafana refused {title!r}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PushError(f"cannot reach Grafana at {grafana_url}: {getattr(exc, 'reason', exc)}") from None
