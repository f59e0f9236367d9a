"""HTTPS on the collector's API (server/tls_front.py): a real collector serving HTTPS with a certificate from a test
CA, behind which waitress serves as before, with a real broker (TLS, the same CA) and influxd.

Clients verify the collector: with the CA (`--server-ca`, `$EDGEBENCH_<COMMAND>_SERVER_CA`, the agent's `--tls-ca`)
they are served; without it they are refused with one line. Plain HTTP on the TLS port gets nothing; a handshake
that never completes holds nobody up. Nothing here measures time: socket timeouts only bound a hang.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from .conftest import FAST, make_ca, tls_fleet
from .services import wait_for

HANG = 30  # seconds a socket waits before the test calls it a hang
HANDSHAKE_S = 2  # the collector's --http-timeout, which also bounds a TLS handshake


@pytest.fixture(scope="module")
def https_fleet(tmp_path_factory, influxd):
    """A broker and a collector, both TLS with one test CA (the agents' --tls-ca serves both)."""
    broker, fleet, pki = tls_fleet(tmp_path_factory.mktemp("https"), influxd)
    try:
        fleet.start_collector(extra=("--http-timeout", str(HANDSHAKE_S)),
                              https=(pki["server.crt"], pki["server.key"], pki["ca.crt"]))
        yield fleet, pki
    finally:
        fleet.close()
        broker.stop()


def one_line_error(result) -> str:
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result
    return result.err


def test_https_serves_the_api_to_clients_with_the_ca(https_fleet, cli):
    fleet, pki = https_fleet
    collector = fleet.collector
    assert collector.url.startswith("https://")
    assert collector.health()["mqtt"]  # /healthz, verified with the CA (the launcher's requests)
    ready = json.loads(collector.ready.read_text())
    assert ready["http"] == collector.url  # the public URL defaults to https://HOST:PORT
    assert f"collector serving {collector.url}" in collector.log_path.read_text()
    assert not (collector.workdir / "data" / "api.sock").stat().st_mode & 0o077  # waitress: this user only

    common = ("--server", collector.url, "--token", collector.token, "--json", "-")
    result = cli("devices", *common, "--server-ca", pki["ca.crt"])
    assert result.code == 0 and isinstance(json.loads(result.out), list), result
    result = cli("jobs", *common, env={"EDGEBENCH_JOBS_SERVER_CA": str(pki["ca.crt"])})  # every flag: env too
    assert result.code == 0 and isinstance(json.loads(result.out), list), result


def test_a_client_without_the_ca_is_refused_in_one_line(https_fleet, cli, tmp_path):
    fleet, pki = https_fleet
    url, token = fleet.collector.url, fleet.collector.token
    result = cli("devices", "--server", url, "--token", token)  # the system's CAs only
    assert result.code == 1, result  # a collector that cannot be reached or trusted (docs/cli.md)
    assert "is not trusted" in one_line_error(result) and "--server-ca" in result.err
    result = cli("devices", "--server", url, "--token", token, "--server-ca", tmp_path / "missing.crt")
    assert result.code == 2 and "--server-ca" in one_line_error(result) and "not found" in result.err, result
    not_pem = tmp_path / "not-a-ca.crt"
    not_pem.write_text("not a certificate\n")
    result = cli("devices", "--server", url, "--token", token, "--server-ca", not_pem)
    assert result.code == 2 and "not a PEM CA certificate" in one_line_error(result), result
    rules = tmp_path / "gates.toml"
    rules.write_text('[[gate]]\nmodel = "*"\nmetric = "p50_ms"\nmax = 1000000.0\n')
    result = cli("gate", "--rules", rules, "--server", url, "--token", token, "--no-record")
    assert result.code == 2 and "is not trusted" in one_line_error(result) and "--server-ca" in result.err, result


def test_plain_http_on_the_tls_port_gets_no_api_data(https_fleet):
    collector = https_fleet[0].collector
    with socket.create_connection(("127.0.0.1", collector.http_port), timeout=HANG) as sock:
        sock.sendall(f"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {collector.token}\r\n\r\n"
                     .encode())
        received = b""
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"devices" not in received and b"200 OK" not in received, received


def client_hello() -> bytes:
    """The first flight of a real TLS client: what a client that stalls mid-handshake has sent."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_stalled_handshake_blocks_nobody(https_fleet):
    """One socket connects and sends nothing, another half a ClientHello; meanwhile another client is served, and
    the server closes both stalled sockets itself (its handshake timeout: --http-timeout)."""
    collector = https_fleet[0].collector
    silent = socket.create_connection(("127.0.0.1", collector.http_port), timeout=HANG)
    partial = socket.create_connection(("127.0.0.1", collector.http_port), timeout=HANG)
    hello = client_hello()
    partial.sendall(hello[:len(hello) // 2])
    try:
        assert "devices" in collector.get("/api/v1/devices")  # served while both stall
        for stalled in (silent, partial):
            assert stalled.recv(1) == b""  # closed by the server (the timeout only bounds a hang)
        assert "devices" in collector.get("/api/v1/devices")
    finally:
        silent.close()
        partial.close()


def test_an_agent_fetches_its_model_over_https_with_its_tls_ca(https_fleet, sine_model, cli, tmp_path):
    """The agent's --tls-ca (its broker's CA) verifies the collector's model URL: HTTP only, so a job done means
    the model came over HTTPS. Then the release gate reads the result over HTTPS with --server-ca."""
    fleet, pki = https_fleet
    collector = fleet.collector
    fleet.start_agent("https-board", extra=("--model-transport", "http"))
    out = tmp_path / "push.json"
    result = cli("push", sine_model, "--server", collector.url, "--token", collector.token, "--server-ca",
                 pki["ca.crt"], "--devices", "https-board", "--no-sensors", *FAST, "--wait", "--wait-timeout", "90",
                 "--json", out, timeout=150)
    assert result.code == 0, result
    jobs = json.loads(out.read_text())["jobs"]
    assert [job["state"] for job in jobs] == ["done"], jobs
    assert jobs[0]["spec"]["model"]["url"].startswith(collector.url + "/api/v1/models/")
    assert collector.metric("edgebench_model_requests_total") == 0  # nothing asked for over MQTT
    wait_for(lambda: fleet.results_in_influx(), 30, "the result in InfluxDB")

    rules = tmp_path / "gates.toml"
    rules.write_text('[[gate]]\nmodel = "sine*"\nmetric = "p50_ms"\nmax = 1000000.0\n')
    result = cli("gate", "--rules", rules, "--server", collector.url, "--token", collector.token, "--server-ca",
                 pki["ca.crt"], "--no-record", "--json", "-")
    assert result.code == 0, result
    assert [v["status"] for v in json.loads(result.out)["verdicts"]] == ["pass"], result.out


@pytest.mark.parametrize(("files", "says"), [
    (("--http-tls-cert", "missing.crt", "--http-tls-key", "server.key"), "missing.crt not found"),
    (("--http-tls-cert", "ca.crt", "--http-tls-key", "server.key"), "the key does not match the certificate"),
    (("--http-tls-cert", "server.crt", "--http-tls-key", "server.csr"), "not a PEM certificate and its private key"),
    (("--http-tls-key", "server.key"), "--http-tls-key needs --http-tls-cert"),
])
def test_bad_certificate_files_are_one_line_and_exit_2(cli, tmp_path, files, says):
    pki = make_ca(tmp_path / "pki")
    argv = [arg if arg.startswith("--") else pki.get(arg, tmp_path / arg) for arg in files]
    result = cli("server", "--data-dir", tmp_path / "data", "--mqtt", "mqtt://127.0.0.1:9", "--http", "127.0.0.1:0",
                 *argv, timeout=60)
    assert result.code == 2 and says in one_line_error(result), result
    assert not (tmp_path / "data").exists()  # refused before anything was made
