"""Wire the collector together: registry, MQTT collector, HTTP API; run until SIGTERM/SIGINT."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgebench.agent.errors import UsageError
from edgebench.server.api import Api, serve
from edgebench.server.auth import first_admin_token
from edgebench.server.broker_admin import BrokerAdmin
from edgebench.server.collector import Collector, CollectorConfig
from edgebench.server.metrics import Metrics
from edgebench.server.registry import open_registry
from edgebench.server.tls_front import server_context

log = logging.getLogger(__name__)
ADMIN_TOKEN_FILE = "admin-token"  # in the data directory: the first admin token of a fresh registry


@dataclass
class ServerSettings:
    """Everything `edgebench server` runs with (built by edgebench.server.cli from its flags)."""

    collector: CollectorConfig  # public_url "": http(s)://HOST:PORT of the bound HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = 8780  # 0: a free port
    http_timeout_s: int = 30
    max_model_bytes: int = 2 * 1024**3
    gates_file: Optional[str] = None  # rules GET /api/gates/evaluate evaluates
    ready_file: Optional[str] = None  # {"http": URL, "pid": PID} is written here once serving
    registry: str = ""  # --registry: "" (DATA_DIR/registry.sqlite3), a SQLite file, or postgresql://... (shared)
    auth: bool = True  # bearer tokens on the HTTP API (False: --insecure-no-auth, loopback only)
    http_tls_cert: Optional[str] = None  # serve HTTPS with this certificate (chain), PEM
    http_tls_key: Optional[str] = None  # its private key (None: in http_tls_cert)
    broker_admin_user: Optional[str] = None  # a Dynamic Security admin: the API makes devices' MQTT credentials
    broker_admin_password: Optional[str] = None
    broker_device_url: Optional[str] = None  # the broker as boards reach it, given with their credentials


def serve_forever(settings: ServerSettings) -> int:
    config = settings.collector
    # a bad certificate or key fails the start before anything is opened
    tls = server_context(settings.http_tls_cert, settings.http_tls_key) if settings.http_tls_cert else None
    config.data_dir.mkdir(parents=True, exist_ok=True)
    registry, metrics = open_registry(settings.registry, config.data_dir), Metrics()
    if settings.gates_file:
        from edgebench.server.gates.rules import load_rules

        load_rules(settings.gates_file)  # a broken gates file fails the start, not the first request
    api = Api(registry, None, metrics, config.models_dir, "", settings.max_model_bytes, settings.gates_file,
              auth=settings.auth)
    if settings.auth:
        token_file = config.data_dir / ADMIN_TOKEN_FILE
        if first_admin_token(registry, token_file):
            log.warning("no API token existed: made an admin token, in %s (mode 0600); make others with `edgebench "
                        "server token create`", token_file)
    else:
        log.warning("the HTTP API runs without authentication (--insecure-no-auth): loopback only")
    host, port = settings.http_host, settings.http_port
    try:  # bind first: with port 0 the public URL needs the port the system picked
        httpd = serve(api, host, port, settings.http_timeout_s, spool=config.data_dir / "spool", tls=tls)
    except OSError as exc:
        raise UsageError(f"--http {host}:{port}: {exc.strerror}") from None
    served = f"{'https' if tls else 'http'}://{host}:{httpd.server_address[1]}"
    if tls and config.public_url.startswith("http://"):
        log.warning("--public-url %s is plain HTTP while the API serves HTTPS: agents' model downloads there fail "
                    "unless something else answers it", config.public_url)
    config.public_url = config.public_url or served
    collector = Collector(config, registry, metrics)
    api.collector, api.public_url = collector, config.public_url
    if settings.broker_admin_user:
        api.broker_admin = BrokerAdmin.for_collector(config.mqtt, settings.broker_admin_user,
                                                     settings.broker_admin_password or "", config.client_id)
    api.broker_device_url = settings.broker_device_url
    collector.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    log.info("collector serving %s%s (MQTT %s:%s, InfluxDB %s/%s, registry %r, models %s)", served,
             "" if config.public_url == served else f", public URL {config.public_url}",
             config.mqtt.host, config.mqtt.port, config.influx_url, config.influx_db, registry, config.models_dir)
    if settings.ready_file:
        Path(settings.ready_file).write_text(json.dumps({"http": config.public_url, "pid": os.getpid()}))
    stop.wait()
    httpd.shutdown()
    collector.close()
    registry.close()
    return 0
