"""``edgebench dashboards push`` against a stand-in for Grafana's HTTP API (no Grafana server can run here): a local
HTTP server that answers ``POST /api/dashboards/db`` as Grafana documents it and records what it was sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

import pytest

from edgebench.dashboards.build import DASHBOARDS, JSON_DIR

from ..conftest import run_cli


class FakeGrafana:
    def __init__(self, status: int = 200, answer: Optional[dict] = None):
        self.requests: list[dict] = []
        self.status, self.answer = status, answer
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                uid = body.get("dashboard", {}).get("uid", "")
                reply = owner.answer or {"id": len(owner.requests), "uid": uid, "url": f"/d/{uid}/x",
                                         "status": "success", "version": 1, "slug": "x"}
                data = json.dumps(reply).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana():
    servers = []

    def make(**kwargs) -> FakeGrafana:
        servers.append(FakeGrafana(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_push_uploads_every_dashboard_with_overwrite(grafana, committed):
    server = grafana()
    result = run_cli("dashboards", "push", "--grafana-url", server.url + "/", "--token", "glsa_test",
                     "--folder-uid", "edgebench")
    assert result.code == 0, result
    assert len(server.requests) == len(DASHBOARDS)
    by_uid = {r["body"]["dashboard"]["uid"]: r for r in server.requests}
    for name, dash in committed.items():
        request = by_uid[dash["uid"]]
        assert request["path"] == "/api/dashboards/db"
        assert request["headers"]["Authorization"] == "Bearer glsa_test"
        assert request["headers"]["Content-Type"] == "application/json"
        body = request["body"]
        assert body["overwrite"] is True and body["folderUid"] == "edgebench" and body["message"]
        assert body["dashboard"] == dash, f"{name}: pushed JSON differs from the committed JSON"
        assert "id" not in body["dashboard"]  # a new id would make Grafana refuse an update by uid
        assert f"/d/{dash['uid']}/" in result.out


def test_push_from_a_folder_and_token_from_file(grafana, tmp_path, committed):
    server = grafana()
    token = tmp_path / "token"
    token.write_text("glsa_file\n")
    result = run_cli("dashboards", "push", "--grafana-url", server.url, "--token-file", token, "--from", JSON_DIR)
    assert result.code == 0, result
    assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer glsa_file"}
    assert sorted(r["body"]["dashboard"]["uid"] for r in server.requests) == sorted(d["uid"]
                                                                                   for d in committed.values())
    assert all("folderUid" not in r["body"] for r in server.requests)


def test_push_reports_grafanas_refusal(grafana):
    server = grafana(status=401, answer={"message": "invalid API key"})
    result = run_cli("dashboards", "push", "--grafana-url", server.url, "--token", "wrong")
    assert result.code == 1, result
    assert "HTTP 401" in result.err and "invalid API key" in result.err
    assert len(server.requests) == 1  # stops at the first refusal


def test_push_needs_a_token_and_a_reachable_grafana(grafana, monkeypatch):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    result = run_cli("dashboards", "push", "--grafana-url", "http://127.0.0.1:9")
    assert result.code == 2 and "token" in result.err, result
    server = grafana()
    server.close()
    result = run_cli("dashboards", "push", "--grafana-url", server.url, "--token", "t")
    assert result.code == 1 and "cannot reach Grafana" in result.err, result
