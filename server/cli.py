"""Registers the collector's commands: `edgebench server` and `edgebench gate` (server/gates/cli.py). Standard
library only at import time; the flags become a ServerSettings (server/main.py) here and nowhere deeper."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Optional

from edgebench.agent.cli import args as cli_args
from edgebench.agent.errors import UsageError

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


def _broker_url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.username:
        raise argparse.ArgumentTypeError(f"{text!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT (no user in it: "
                                         "each board has its own)")
    return text


def _rate(text: str) -> int:
    return 0 if text == "0" else cli_args.size_bytes(text)


def register(commands) -> None:
    from edgebench.server.gates import cli as gates_cli

    gates_cli.register(commands)

    server = commands.add_parser(
        "server", help="run the fleet collector: MQTT -> InfluxDB, registry, HTTP API",
        description="Collect what the fleet's agents publish (MQTT v5 shared subscription), validate it, store "
        "results and telemetry in InfluxDB (v1 HTTP API) and devices/models/jobs in the registry (SQLite, or "
        "PostgreSQL shared by several collectors: --registry), and serve the HTTP API "
        "engineers use (edgebench push/devices/jobs). See docs/fleet.md.")
    cli_args.add_mqtt_options(server)
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
                       help="the registry (SQLite) and uploaded models unless --registry and --models-dir say "
                       "otherwise (default ~/.local/share/edgebench/server)")
    group.add_argument("--registry", default="", metavar="FILE|postgresql://...",
                       help="devices, models, jobs, results, tokens: a SQLite file, one collector's (default "
                       "DATA_DIR/registry.sqlite3), or a PostgreSQL database that every collector of a share group "
                       "is given (postgresql://USER@HOST/DB; its password better in $PGPASSWORD or ~/.pgpass)")
    group.add_argument("--models-dir", metavar="DIR", help="uploaded models, by sha256 (default DATA_DIR/models); "
                       "collectors sharing a --registry need one directory they all reach (a shared file system)")
    group = server.add_argument_group("service")
    group.add_argument("--http", type=_host_port, default=("127.0.0.1", 8780), metavar="HOST:PORT",
                       help="HTTP API address (default 127.0.0.1:8780; port 0 picks a free one)")
    group.add_argument("--http-timeout", type=_seconds, default=30, metavar="S",
                       help="close an HTTP connection that sends and receives nothing for S seconds: half-open, "
                       "stalled or idle between requests (default 30)")
    group.add_argument("--public-url", metavar="URL",
                       help="URL agents reach the HTTP API at, for model downloads (default http://HOST:PORT, "
                       "https://HOST:PORT with --http-tls-cert)")
    group.add_argument("--http-tls-cert", metavar="FILE", help="serve the HTTP API over HTTPS (TLS 1.2+) with this "
                       "certificate, PEM (its chain after it); clients verify it with the CA that signed it")
    group.add_argument("--http-tls-key", metavar="FILE", help="the private key of --http-tls-cert, PEM, unencrypted "
                       "(default: in the --http-tls-cert file)")
    group.add_argument("--client-id", default="edgebench-collector", help="MQTT client id: each collector "
                       "of a group needs its own, stable across restarts (default edgebench-collector)")
    group.add_argument("--share-group", default="edgebench-collectors",
                       help="shared-subscription group: collectors in one group split the messages")
    group.add_argument("--batch-size", type=cli_args.positive_int, default=5000,
                       help="points per InfluxDB write at most")
    group.add_argument("--influx-writers", type=cli_args.int_in(1, 16), default=2, metavar="N",
                       help="batches written to InfluxDB at once: InfluxDB parses one while the next is sent "
                       "(acknowledged in the order they came all the same; default 2)")
    group.add_argument("--receive-maximum", type=cli_args.int_in(1, 65535), default=2000,
                       help="unacknowledged messages held in memory at most (MQTT v5 ReceiveMaximum)")
    group.add_argument("--max-model-size", type=cli_args.size_bytes, default=2 * 1024**3, metavar="SIZE",
                       help="largest model upload (default 2G)")
    group.add_argument("--model-rate", type=_rate, default=2 * 1024**2, metavar="SIZE",
                       help="model bytes served over MQTT per device and second, after a burst of 8 MiB (default 2M; "
                       "0: the burst only)")
    group.add_argument("--stall-after", type=_seconds, default=60, metavar="S",
                       help="/healthz reports the pipeline stalled when a message is held unacknowledged this long "
                       "(default 60)")
    group.add_argument("--gates", metavar="GATES.toml", help="release gate rules that GET /api/gates/evaluate "
                       "evaluates (docs/gates.md); read at each request, checked at start-up")
    group = server.add_argument_group("authentication (docs/fleet.md)")
    group.add_argument("--insecure-no-auth", action="store_true",
                       help="serve the HTTP API without tokens: anyone who reaches it may upload models, run jobs on "
                       "the boards and cancel them; refused unless --http is a loopback address")
    group = server.add_argument_group("devices' MQTT credentials (docs/fleet.md)")
    group.add_argument("--broker-admin-user", metavar="NAME",
                       help="a Dynamic Security admin of the broker (fleet-auth.py init's admin): the API's admin role "
                       "then makes and revokes devices' MQTT credentials (POST and DELETE "
                       "/api/v1/devices/ID/credentials), through the broker URL and TLS settings above")
    group.add_argument("--broker-admin-password-file", metavar="FILE",
                       help="the broker admin's password (or $EDGEBENCH_BROKER_ADMIN_PASSWORD)")
    group.add_argument("--broker-device-url", metavar="URL", type=_broker_url,
                       help="the broker as boards reach it (mqtts://lab-server:8883), given with a device's "
                       "credentials (default: none; the collector's own --mqtt is often an internal address)")
    server.add_argument("--ready-file", metavar="FILE", help="write {\"http\": URL} here once serving")
    server.set_defaults(handler=run)
    server_commands = server.add_subparsers(dest="server_command", metavar="COMMAND")
    register_tokens(server_commands)
    from edgebench.server import registry_copy  # `server copy-registry`; the registry is imported when it runs

    registry_copy.register(server_commands)


def register_tokens(commands) -> None:
    """`edgebench server token create|list|revoke`: the API's bearer tokens, in the collector's registry."""
    token = commands.add_parser("token", help="create, list and revoke the HTTP API's bearer tokens",
                                description="Tokens for the collector's HTTP API, kept (hashed) in its registry. "
                                "Roles: read (results, devices, gates), submit (upload, push, cancel, record gate "
                                "verdicts; includes read), admin (tokens; includes submit).")
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a token and print it (shown once)")
    create.add_argument("--name", required=True, help="what the token is for (ci, grafana, alice): unique")
    create.add_argument("--role", required=True, choices=("read", "submit", "admin"))
    create.add_argument("--json", metavar="FILE", help="write {name, role, token} as JSON; - for stdout")
    listing = actions.add_parser("list", help="the tokens: name, role, created, last used, revoked")
    listing.add_argument("--json", metavar="FILE", help="write the list as JSON; - for stdout")
    revoke = actions.add_parser("revoke", help="revoke a token by name (at once, on every collector)")
    revoke.add_argument("name")
    for action in (create, listing, revoke):  # the collector's own flags, settable here too (SUPPRESS: unset
        # here, the value given to `server` or its default stays)
        action.add_argument("--data-dir", default=argparse.SUPPRESS, metavar="DIR",
                            help="the collector's data directory (as `edgebench server --data-dir`)")
        action.add_argument("--registry", default=argparse.SUPPRESS, metavar="URL|FILE",
                            help="the collector's registry (as `edgebench server --registry`): postgresql://... for "
                            "a registry collectors share")
        action.set_defaults(handler=run_token)


def run_token(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.server import auth
    from edgebench.server.registry import open_registry

    registry = open_registry(getattr(args, "registry", "") or "", Path(os.path.expanduser(args.data_dir)))
    try:
        if args.token_command == "create":
            token = auth.new_token()
            if not registry.add_token(args.name, args.role, auth.token_hash(token)):
                raise UsageError(f"a token named {args.name!r} exists; revoke it first")
            answer = {"name": args.name, "role": args.role, "token": token}
            if args.json:
                emit_json(answer, args.json)
            if args.json != "-":
                print(token)
            return 0
        if args.token_command == "list":
            tokens = registry.tokens()
            if args.json:
                emit_json({"tokens": tokens}, args.json)
            if args.json != "-":
                print(f"{'name':24} {'role':7} {'created':20} {'last used':20} revoked")
                for t in tokens:
                    print(f"{t['name']:24} {t['role']:7} {_when(t['created']):20} {_when(t['last_used']):20} "
                          f"{_when(t['revoked'])}")
            return 0
        if not registry.revoke_token(args.name):
            raise UsageError(f"no unrevoked token named {args.name!r}")
        print(f"revoked {args.name}")
        return 0
    finally:
        registry.close()


def _when(ts) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def settings(args: argparse.Namespace):
    from edgebench.server.auth import is_loopback
    from edgebench.server.collector import CollectorConfig
    from edgebench.server.main import ServerSettings

    if args.influx_bucket and not args.influx_org:
        raise UsageError("--influx-bucket needs --influx-org (InfluxDB 2.x/3.x)")
    collector = CollectorConfig(
        mqtt=cli_args.mqtt_settings(args), influx_url=args.influx_url, influx_db=args.influx_db,
        data_dir=Path(os.path.expanduser(args.data_dir)), influx_username=args.influx_username,
        influx_password=os.environ.get("EDGEBENCH_INFLUX_PASSWORD"), client_id=args.client_id,
        share_group=args.share_group, batch_size=args.batch_size, receive_maximum=args.receive_maximum,
        influx_writers=args.influx_writers,
        public_url=args.public_url or "", influx_token=args.influx_token or os.environ.get("EDGEBENCH_INFLUX_TOKEN"),
        influx_org=args.influx_org, influx_bucket=args.influx_bucket, model_bytes_per_s=args.model_rate,
        stall_after_s=args.stall_after,
        models_dir=Path(os.path.expanduser(args.models_dir)) if args.models_dir else None)
    host, port = args.http
    if args.http_tls_key and not args.http_tls_cert:
        raise UsageError("--http-tls-key needs --http-tls-cert (the certificate it belongs to)")
    if args.insecure_no_auth and not is_loopback(host):
        raise UsageError(f"--insecure-no-auth is refused on {host}: without tokens anyone who reaches the API runs "
                         "models on the boards; serve on a loopback address (127.0.0.1) or drop the flag")
    return ServerSettings(collector=collector, http_host=host, http_port=port, http_timeout_s=args.http_timeout,
                          max_model_bytes=args.max_model_size, gates_file=args.gates, ready_file=args.ready_file,
                          auth=not args.insecure_no_auth, registry=args.registry, http_tls_cert=args.http_tls_cert,
                          http_tls_key=args.http_tls_key, broker_admin_user=args.broker_admin_user,
                          broker_admin_password=_broker_admin_password(args),
                          broker_device_url=args.broker_device_url)


def _broker_admin_password(args: argparse.Namespace) -> Optional[str]:
    """--broker-admin-password-file, else $EDGEBENCH_BROKER_ADMIN_PASSWORD (never a flag: the process list shows
    flags); None without --broker-admin-user."""
    from edgebench.agent.fleet.mqtt import read_password

    if not args.broker_admin_user:
        if args.broker_admin_password_file:
            raise UsageError("--broker-admin-password-file needs --broker-admin-user (the account it belongs to)")
        return None
    password = read_password(args.broker_admin_password_file, "--broker-admin-password-file") \
        if args.broker_admin_password_file else os.environ.get("EDGEBENCH_BROKER_ADMIN_PASSWORD")
    if not password:
        raise UsageError("--broker-admin-user needs its password: --broker-admin-password-file FILE or "
                         "$EDGEBENCH_BROKER_ADMIN_PASSWORD")
    return password


def run(args: argparse.Namespace) -> int:
    from edgebench.server.main import serve_forever

    return serve_forever(settings(args))
