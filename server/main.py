"""Wire the collector together: registry, MQTT collector, HTTP API; run until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from edgebench.agent.errors import UsageError
from edgebench.agent.fleet import mqtt
from edgebench.server.api import Api, serve
from edgebench.server.collector import Collector, CollectorConfig
from edgebench.server.metrics import Metrics
from edgebench.server.registry import Registry

log = logging.getLogger(__name__)


def serve_forever(args: argparse.Namespace) -> int:
    data_dir = Path(os.path.expanduser(args.data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.receive_maximum < 1 or args.receive_maximum > 65535 or args.batch_size < 1:
        raise UsageError("--receive-maximum must be 1..65535 and --batch-size positive")
    if args.influx_bucket and not args.influx_org:
        raise UsageError("--influx-bucket needs --influx-org (InfluxDB 2.x/3.x)")
    settings = mqtt.from_args(args)
    registry, metrics = Registry(data_dir / "registry.sqlite3"), Metrics()
    if args.gates:
        from edgebench.server.gates.rules import load_rules

        load_rules(args.gates)  # a broken gates file fails the start, not the first request
    api = Api(registry, None, metrics, data_dir / "models", "", args.max_model_size, args.gates)
    host, port = args.http
    try:  # bind first: with port 0 the public URL needs the port the system picked
        httpd = serve(api, host, port, args.http_timeout)
    except OSError as exc:
        raise UsageError(f"--http {host}:{port}: {exc.strerror}") from None
    public_url = args.public_url or f"http://{host}:{httpd.server_address[1]}"
    config = CollectorConfig(
        mqtt=settings, influx_url=args.influx_url, influx_db=args.influx_db, data_dir=data_dir,
        influx_username=args.influx_username, influx_password=os.environ.get("EDGEBENCH_INFLUX_PASSWORD"),
        client_id=args.client_id, share_group=args.share_group, batch_size=args.batch_size,
        receive_maximum=args.receive_maximum, public_url=public_url,
        influx_token=args.influx_token or os.environ.get("EDGEBENCH_INFLUX_TOKEN"), influx_org=args.influx_org,
        influx_bucket=args.influx_bucket, model_bytes_per_s=args.model_rate, stall_after_s=args.stall_after)
    collector = Collector(config, registry, metrics)
    api.collector, api.public_url = collector, public_url
    collector.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    log.info("collector serving %s (MQTT %s:%s, InfluxDB %s/%s)", public_url, settings.host, settings.port,
             args.influx_url, args.influx_db)
    if args.ready_file:
        Path(args.ready_file).write_text(json.dumps({"http": public_url, "pid": os.getpid()}))
    stop.wait()
    httpd.shutdown()
    collector.close()
    registry.close()
    return 0

