"""The HTTP API's authentication: every route but /healthz needs a bearer token of a high enough role; boards
download models through the signed URL their job carries; refusals are 401/403 with a reason, counted in
/metrics; tokens are made, listed and revoked from the command line and the API, and kept hashed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from edgebench.server import auth
from edgebench.server.api import ROUTES, Api, serve
from edgebench.server.metrics import Metrics
from edgebench.server.registry import Registry

from .services import REPO

ONNX_HEADER = b"\x08\x07\x12\x07pytorch"  # enough of an ONNX protobuf for identify(): upload accepts it


class Served:
    """An Api on a real waitress server on a free loopback port, its registry in tmp_path."""

    def __init__(self, tmp_path, enabled: bool = True):
        self.registry = Registry(tmp_path / "registry.sqlite3")
        self.api = Api(self.registry, None, Metrics(), tmp_path / "models", "http://127.0.0.1:1", 1 << 20,
                       auth=enabled)
        self.httpd = serve(self.api, "127.0.0.1", 0)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.tokens = {}
        for role in auth.ROLES:
            token = auth.new_token()
            assert self.registry.add_token(f"{role}-token", role, auth.token_hash(token))
            self.tokens[role] = token

    def call(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, Any, bytes]:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def close(self):
        self.httpd.shutdown()
        self.registry.close()


@pytest.fixture
def served(tmp_path):
    server = Served(tmp_path)
    yield server
    server.close()


def concrete(path: str) -> str:
    return path.replace("{sha}", "0" * 64).replace("{job}", "b1-0001").replace("{name}", "nobody") \
        .replace("{device_id}", "rpi5-01")


def metric(served: Served, name: str) -> float:
    """The counter as GET /metrics renders it (its text; no collector runs here to serve the route)."""
    return float(re.search(rf"^{name} (\S+)$", served.api.metrics.render(), re.M).group(1))


def test_every_route_but_healthz_refuses_a_request_without_a_token(served):
    before = metric(served, "edgebench_http_unauthorized_total")
    checked = 0
    for method, path, _, role in ROUTES:
        status, headers, body = served.call(method, concrete(path), body=b"{}" if method == "POST" else None)
        if role is None:
            assert status not in (401, 403), path  # /healthz (no collector runs here: its answer is not the point)
            continue
        assert status == 401, (method, path, status)
        assert "needs a token with the" in json.loads(body)["error"]
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        checked += 1
    assert checked == len(ROUTES) - 1
    assert metric(served, "edgebench_http_unauthorized_total") == before + checked


@pytest.mark.parametrize("header, reason", [
    ("Basic dXNlcjpwYXNz", "must be 'Bearer TOKEN'"),
    ("Bearer", "must be 'Bearer TOKEN'"),
    ("Bearer ebt_not-a-token", "unknown or revoked"),
    ("Bearer " + "x" * 5000, "unknown or revoked"),
])
def test_a_bad_authorization_header_is_a_401_with_its_reason(served, header, reason):
    status, _, body = served.call("GET", "/api/v1/devices", headers={"Authorization": header})
    assert status == 401 and reason in json.loads(body)["error"]


def test_roles_read_submit_admin(served):
    """A read token reads and cannot upload, submit, cancel or record verdicts; submit can; only admin manages
    tokens. Each 403 names the token's role and the one needed, and is counted."""
    read, submit, admin = (served.tokens[r] for r in auth.ROLES)
    before = metric(served, "edgebench_http_forbidden_total")
    assert served.call("GET", "/api/v1/devices", read)[0] == 200
    assert served.call("GET", "/api/v1/results", read)[0] == 200
    refused = [("POST", "/api/v1/models?name=m.onnx", ONNX_HEADER), ("POST", "/api/v1/jobs", b"{}"),
               ("POST", "/api/v1/jobs/b1-0001/cancel", b""), ("POST", "/api/gates/verdicts", b"{}"),
               ("POST", "/api/gates/evaluate?record=true", b"[[gate]]\nname='x'\nmodel='*'\nmax_p90_ms=1\n")]
    for method, path, body in refused:
        status, _, answer = served.call(method, path, read, body)
        assert status == 403, (path, status, answer)
        assert json.loads(answer)["error"] == "token 'read-token' has the read role; this route needs submit"
    for method, path in (("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens/x/revoke")):
        assert served.call(method, path, submit, b"" if method == "POST" else None)[0] == 403
    assert metric(served, "edgebench_http_forbidden_total") == before + len(refused) + 2
    status, _, body = served.call("POST", "/api/v1/models?name=m.onnx", submit, ONNX_HEADER,
                                  {"Content-Type": "application/octet-stream"})
    assert status == 201, body
    assert served.call("POST", "/api/v1/jobs", submit, b'{"models": []}')[0] == 400  # past auth: the matrix's turn
    assert served.call("GET", "/api/v1/tokens", admin)[0] == 200


def test_tokens_are_made_revoked_and_stored_hashed_through_the_api(served):
    admin = served.tokens["admin"]
    status, _, body = served.call("POST", "/api/v1/tokens", admin, b'{"name": "ci", "role": "submit"}')
    assert status == 201
    made = json.loads(body)
    assert made["token"].startswith("ebt_") and len(made["token"]) == 47
    assert served.call("GET", "/api/v1/jobs", made["token"])[0] == 200
    assert served.call("POST", "/api/v1/tokens", admin, b'{"name": "ci", "role": "read"}')[0] == 409
    assert served.call("POST", "/api/v1/tokens", admin, b'{"name": "a b", "role": "read"}')[0] == 400
    assert served.call("POST", "/api/v1/tokens", admin, b'{"name": "x", "role": "root"}')[0] == 400
    listed = json.loads(served.call("GET", "/api/v1/tokens", admin)[2])["tokens"]
    assert {t["name"] for t in listed} == {"read-token", "submit-token", "admin-token", "ci"}
    assert made["token"] not in json.dumps(listed) and all("hash" not in t for t in listed)
    stored = served.registry._all("SELECT hash FROM tokens WHERE name = 'ci'")[0]["hash"]
    assert stored == auth.token_hash(made["token"]) and made["token"] not in stored
    assert served.call("POST", "/api/v1/tokens/ci/revoke", admin, b"")[0] == 200
    status, _, body = served.call("GET", "/api/v1/jobs", made["token"])
    assert status == 401 and "revoked" in json.loads(body)["error"]
    assert served.call("POST", "/api/v1/tokens/ci/revoke", admin, b"")[0] == 404


def test_boards_download_models_through_the_signed_url_of_their_job(served):
    """A job's model URL is signed: no token needed; a signature for another model, a changed expiry or an
    expired URL is refused like a request without a token."""
    submit = served.tokens["submit"]
    _, _, body = served.call("POST", "/api/v1/models?name=m.onnx", submit, ONNX_HEADER,
                             {"Content-Type": "application/octet-stream"})
    sha = json.loads(body)["sha256"]
    url = served.api.content_url(sha)
    path = url[len("http://127.0.0.1:1"):]
    status, _, content = served.call("GET", path)
    assert status == 200 and content == ONNX_HEADER
    assert served.call("GET", path, headers={"Range": "bytes=2-"})[2] == ONNX_HEADER[2:]
    query = dict(urllib.parse.parse_qsl(path.partition("?")[2]))
    forged = [
        f"/api/v1/models/{'1' * 64}/content?{urllib.parse.urlencode(query)}",  # another model's
        f"/api/v1/models/{sha}/content?" + urllib.parse.urlencode(dict(query, expires=int(query["expires"]) + 1)),
        f"/api/v1/models/{sha}/content?" + urllib.parse.urlencode(dict(query, sig="0" * 64)),
        f"/api/v1/models/{sha}/content?{served.api.auth.sign(sha, now=time.time() - auth.SIGNED_URL_TTL_S - 5)}",
        f"/api/v1/models/{sha}/content",
    ]
    for forged_path in forged:
        assert served.call("GET", forged_path)[0] == 401, forged_path
    assert served.call("GET", f"/api/v1/models/{sha}/content", served.tokens["read"])[0] == 200


def test_collectors_of_one_registry_share_the_signing_key(tmp_path):
    first = Registry(tmp_path / "registry.sqlite3")
    second = Registry(tmp_path / "registry.sqlite3")
    try:
        a, b = auth.Authenticator(first), auth.Authenticator(second)
        query = dict(urllib.parse.parse_qsl(a.sign("2" * 64)))
        assert b.signed("2" * 64, query["expires"], query["sig"])
    finally:
        first.close()
        second.close()


def test_without_auth_every_route_answers_and_the_first_admin_token_is_made_once(tmp_path):
    open_server = Served(tmp_path / "open", enabled=False)
    try:
        assert open_server.call("GET", "/api/v1/devices")[0] == 200
    finally:
        open_server.close()
    registry = Registry(tmp_path / "fresh" / "registry.sqlite3")
    try:
        path = tmp_path / "fresh" / "admin-token"
        token = auth.first_admin_token(registry, path)
        assert token and path.read_text().strip() == token and (path.stat().st_mode & 0o777) == 0o600
        assert registry.token_by_hash(auth.token_hash(token)) == {"name": "admin", "role": "admin"}
        assert auth.first_admin_token(registry, path) is None
    finally:
        registry.close()


def edgebench(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.agent.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)


def test_token_commands_create_list_revoke(tmp_path):
    data = str(tmp_path / "data")
    made = edgebench("server", "token", "create", "--name", "ci", "--role", "submit", "--data-dir", data)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ebt_")
    again = edgebench("server", "token", "create", "--name", "ci", "--role", "read", "--data-dir", data)
    assert again.returncode == 2 and again.stderr.strip() == \
        "edgebench: error: a token named 'ci' exists; revoke it first"
    listed = edgebench("server", "token", "list", "--json", "-", "--data-dir", data)
    assert [(t["name"], t["role"], t["revoked"]) for t in json.loads(listed.stdout)["tokens"]] == [
        ("ci", "submit", None)]
    assert token not in listed.stdout
    assert edgebench("server", "token", "revoke", "ci", "--data-dir", data).returncode == 0
    gone = edgebench("server", "token", "revoke", "ci", "--data-dir", data)
    assert gone.returncode == 2 and "no unrevoked token named 'ci'" in gone.stderr
    bad = edgebench("server", "token", "create", "--name", "x", "--role", "root", "--data-dir", data)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_no_auth_is_refused_off_loopback(tmp_path):
    done = edgebench("server", "--http", "0.0.0.0:0", "--insecure-no-auth", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edgebench: error: --insecure-no-auth is refused on 0.0.0.0: without tokens anyone who reaches the API runs "
        "models on the boards; serve on a loopback address (127.0.0.1) or drop the flag"]
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("10.0.0.5") and not auth.is_loopback("::")


def test_token_commands_reach_the_shared_registry(tmp_path):
    """With --registry postgresql://..., a token made from the command line is the one every collector of that
    registry checks (not a file of this machine's data directory)."""
    from ..pgdb import temporary_database

    with temporary_database() as url:
        made = edgebench("server", "token", "create", "--name", "ci", "--role", "read", "--registry", url,
                         "--data-dir", str(tmp_path / "here"))
        assert made.returncode == 0, made.stderr
        from edgebench.server.registry import open_registry

        registry = open_registry(url, tmp_path / "elsewhere")
        try:
            assert registry.token_by_hash(auth.token_hash(made.stdout.strip())) == {"name": "ci", "role": "read"}
        finally:
            registry.close()
        assert not (tmp_path / "here" / "registry.sqlite3").exists()
