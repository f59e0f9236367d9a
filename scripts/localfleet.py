"""A local fleet on one machine: Mosquitto, influxd, collector and agent processes.

Used by `make demo` (scripts/demo.py), the fleet tests and the fleet benchmarks; not part of the installed package
(a deployment runs its own services): they import it with scripts/ on sys.path. Each service runs on a free
loopback port with its own config under a work directory and is stopped by its PID (never by name). Waiting
is by polling with a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional


class ServiceError(RuntimeError):
    """A service did not start or answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def binary(name: str) -> Optional[str]:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)


def dynsec_plugin() -> Optional[str]:
    """Mosquitto's Dynamic Security plugin on this machine (Debian: /usr/lib/<arch>/; mosquitto.org builds and the
    eclipse-mosquitto image: /usr/lib/), or None."""
    import glob

    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")) + \
        [p for p in ("/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so")
         if os.path.exists(p)]
    return found[0] if found else None


class Service:
    """A child process started in its own session, stopped (or killed) by PID."""

    cwd: Optional[Path] = None  # where processes start (the tests set their checkout, for tests.plugins)

    def __init__(self, argv: list[str], log_path: Path, env: Optional[dict] = None):
        self.argv, self.log_path, self.env = argv, log_path, env
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True, cwd=self.cwd)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, for the fault tests."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.log.close()

    def _check_alive(self) -> None:
        if not self.alive():
            raise ServiceError(f"{Path(self.argv[0]).name} exited while starting:\n{self.log_text()}")

    def _started_when(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        """Wait until ``ready()`` or until the process exits (then fail, with its log)."""
        wait_for(lambda: ready() or not self.alive(), timeout, what)
        self._check_alive()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class Mosquitto(Service):
    def __init__(self, workdir: Path, port: Optional[int] = None, extra: str = ""):
        self.workdir, self.port = workdir, port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        # `user root`: run as root, mosquitto would switch to user mosquitto and lose access to the files here.
        conf.write_text(f"user root\nlistener {self.port} 127.0.0.1\npersistence true\n"
                        f"persistence_location {workdir}/\nautosave_interval 1\nmax_queued_messages 0\n"
                        f"max_inflight_messages 0\nlog_dest stdout\nlog_type error\nlog_type warning\n"
                        f"{extra or 'allow_anonymous true'}\n")
        super().__init__([binary("mosquitto") or "mosquitto", "-c", str(conf)], workdir / "mosquitto.log")

    def start(self) -> None:
        super().start()
        self._started_when(lambda: port_open(self.port), 10, "mosquitto to listen")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class HttpService(Service):
    """A service that is up once an HTTP endpoint of its own answers."""

    port: int
    health_path = "/"

    def start(self) -> None:
        super().start()
        self._started_when(self.answers, 30, f"{Path(self.argv[0]).name} to answer {self.health_path}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{self.health_path}", timeout=1):
                return True
        except OSError:
            return False


class Influxd(HttpService):
    health_path = "/ping"

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        super().__init__([binary("influxd") or "influxd", "-config", str(conf)], workdir / "influxd.log")

    ping = HttpService.answers

    def query(self, db: str, text: str) -> list:
        url = f"{self.url}/query?" + urllib.parse.urlencode({"db": db, "q": text, "epoch": "ns"})
        with urllib.request.urlopen(url, timeout=10) as response:
            result = json.loads(response.read())["results"][0]
        if "error" in result:
            raise ServiceError(f"InfluxQL {text!r}: {result['error']}")
        return result.get("series", [])

    def rows(self, db: str, text: str) -> list[dict]:
        series = self.query(db, text)
        return [dict(zip(s["columns"], v)) for s in series for v in s["values"]]


class VictoriaMetrics(HttpService):
    """Debian's victoria-metrics: accepts line protocol on InfluxDB 2.x's ``/api/v2/write`` (no InfluxQL); read
    back through its own export API."""

    health_path = "/health"

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([binary("victoria-metrics") or "victoria-metrics", f"-httpListenAddr=127.0.0.1:{self.port}",
                          f"-storageDataPath={workdir / 'data'}", "-retentionPeriod=100y", "-loggerLevel=ERROR",
                          "-search.latencyOffset=0s"], workdir / "victoria-metrics.log")

    healthy = HttpService.answers

    def export(self, match: str) -> list[dict]:
        """Every sample of the series matching a selector (``{__name__=~"edgebench_.*"}``), as JSON lines."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        url = f"{self.url}/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(url, timeout=10) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def edgebench_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgebench.agent.cli", *args]


class Collector(Service):
    def __init__(self, workdir: Path, mqtt_url: str, influx_url: str, db: str, extra: tuple = (),
                 http_port: Optional[int] = None, token: Optional[str] = None, https: Optional[tuple] = None):
        """``https``: (certificate, key, CA): the API serves HTTPS with the first two (--http-tls-cert/-key),
        and this launcher's requests verify it with the CA."""
        self.workdir, self.http_port, self.db, self.given_token = workdir, http_port or free_port(), db, token
        self.ca = str(https[2]) if https else None
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready = workdir / "ready.json"
        tls = ("--http-tls-cert", str(https[0]), "--http-tls-key", str(https[1])) if https else ()
        super().__init__(edgebench_argv("-v", "server", "--mqtt", mqtt_url, "--influx-url", influx_url,
                                        "--influx-db", db, "--data-dir", str(workdir / "data"),
                                        "--http", f"127.0.0.1:{self.http_port}", "--ready-file", str(self.ready),
                                        *tls, *extra), workdir / "collector.log")

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def token(self) -> Optional[str]:
        """The API token this launcher uses: one given, else the first admin token the collector made in its data
        directory (a fresh registry), else None (a collector sharing a registry whose token another made)."""
        if self.given_token:
            return self.given_token
        path = self.workdir / "data" / "admin-token"
        return path.read_text().strip() if path.exists() else None

    def start(self, wait_mqtt: bool = True) -> None:
        self.ready.unlink(missing_ok=True)
        super().start()
        self._started_when(self.ready.exists, 30, "the collector to serve")
        if wait_mqtt:
            wait_for(lambda: self.health().get("mqtt"), 30, "the collector to connect to the broker")

    def request(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json",
                token: Optional[str] = "", timeout: float = 30) -> bytes:
        """The response body; ``token`` "" (default): the launcher's token; None: no Authorization header."""
        token = self.token if token == "" else token
        headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        context = ssl.create_default_context(cafile=self.ca) if self.ca else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read()

    def get(self, path: str):
        body = self.request("GET", path, timeout=10)
        return json.loads(body) if path != "/metrics" else body.decode()

    def health(self) -> dict:
        try:
            return self.get("/healthz")
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except OSError:
            return {}

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


class Agent(Service):
    def __init__(self, workdir: Path, mqtt_url: str, device: str, labels: str = "", extra: tuple = ()):
        self.device = device
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(edgebench_argv("-v", "agent", "--mqtt", mqtt_url, "--device-id", device, "--labels", labels,
                                        "--data-dir", str(workdir / "data"), "--heartbeat", "2",
                                        "--telemetry-interval", "0.5", *extra), workdir / "agent.log")
