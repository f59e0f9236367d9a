"""Registers `edgebench server` (the collector). Standard library only at import time."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def _seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole seconds, at least 1")
    return int(text)


def register(commands) -> None:
    from edgebench.agent.cli.main import size_bytes
    from edgebench.agent.fleet import mqtt
    from edgebench.server.gates import cli as gates_cli

    gates_cli.register(commands)

    server = commands.add_parser(
        "server", help="run the fleet collector: MQTT -> InfluxDB, registry, HTTP API",
        description="Collect what the fleet's agents publish (MQTT v5 shared subscription), validate it, store "
        "results and telemetry in InfluxDB (v1 HTTP API) and devices/models/jobs in SQLite, and serve the HTTP API "
        "engineers use (edgebench push/devices/jobs). See docs/fleet.md.")
    mqtt.add_arguments(server)
    group = server.add_argument_group("storage")
    group.add_argument("--influx-url", default="http://127.0.0.1:8086", metavar="URL",
                       help="InfluxDB base URL; the v1 /write and /query API (InfluxDB 1.x, or 2.x/3.x with a DBRP "
                       "mapping) (default http://127.0.0.1:8086)")
    group.add_argument("--influx-db", default="edgebench", metavar="NAME", help="database (default edgebench)")
    group.add_argument("--influx-username", help="InfluxDB user (password from $EDGEBENCH_INFLUX_PASSWORD)")
    group.add_argument("--influx-bucket", metavar="NAME", help="InfluxDB 2.x/3.x: write through the native "
                       "/api/v2/write API (influxdb-client) into this bucket instead of the v1 API")
    group.add_argument("--influx-org", metavar="NAME", help="InfluxDB 2.x/3.x organization (with --influx-bucket)")
    group.add_argument("--influx-token", metavar="TOKEN", help="InfluxDB 2.x/3.x API token (with --influx-bucket; "
                       "better: $EDGEBENCH_INFLUX_TOKEN, which is not visible in the process list)")
    group.add_argument("--data-dir", default="~/.local/share/edgebench/server", metavar="DIR",
                       help="registry (SQLite) and uploaded models (default ~/.local/share/edgebench/server)")
    group = server.add_argument_group("service")
    group.add_argument("--http", type=_host_port, default=("127.0.0.1", 8780), metavar="HOST:PORT",
                       help="HTTP API address (default 127.0.0.1:8780; port 0 picks a free one)")
    group.add_argument("--http-timeout", type=_seconds, default=30, metavar="S",
                       help="close an HTTP connection that sends and receives nothing for S seconds: half-open, "
                       "stalled or idle between requests (default 30)")
    group.add_argument("--public-url", metavar="URL",
                       help="URL agents reach the HTTP API at, for model downloads (default http://HOST:PORT)")
    group.add_argument("--client-id", default="edgebench-collector", help="MQTT client id: each collector "
                       "of a group needs its own, stable across restarts (default edgebench-collector)")
    group.add_argument("--share-group", default="edgebench-collectors",
                       help="shared-subscription group: collectors in one group split the messages")
    group.add_argument("--batch-size", type=int, default=5000, help="points per InfluxDB write at most")
    group.add_argument("--receive-maximum", type=int, default=2000,
                       help="unacknowledged messages held in memory at most (MQTT v5 ReceiveMaximum)")
    group.add_argument("--max-model-size", type=size_bytes, default=2 * 1024**3, metavar="SIZE",
                       help="largest model upload (default 2G)")
    group.add_argument("--model-rate", type=lambda text: 0 if text == "0" else size_bytes(text),
                       default=2 * 1024**2, metavar="SIZE",
                       help="model bytes served over MQTT per device and second, after a burst of 8 MiB (default 2M; "
                       "0: the burst only)")
    group.add_argument("--stall-after", type=_seconds, default=60, metavar="S",
                       help="/healthz reports the pipeline stalled when a message is held unacknowledged this long "
                       "(default 60)")
    group.add_argument("--gates", metavar="GATES.toml", help="release gate rules that GET /api/gates/evaluate "
                       "evaluates (docs/gates.md); read at each request, checked at start-up")
    server.add_argument("--ready-file", metavar="FILE", help="write {\"http\": URL} here once serving")
    server.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.server.main import serve_forever

    return serve_forever(args)
