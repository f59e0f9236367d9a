"""``edgebench agent``: the fleet daemon on a board (edgebench.agent.fleet.daemon). Standard library only at import
time: ``edgebench --help`` must stay cheap on a board."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgebench.agent.cli import args as cli_args
from edgebench.agent.fleet.protocol import DEFAULT_JOB_TIMEOUT_S


def register(commands) -> None:
    agent = commands.add_parser(
        "agent", help="run the fleet agent daemon on this board",
        description="Connect this board to the fleet: keep an MQTT v5 persistent session, report status, inventory, "
        "heartbeats and telemetry, and run benchmark jobs one at a time. Results wait in an on-disk outbox until "
        "the collector acknowledges them. See docs/fleet.md.")
    cli_args.add_mqtt_options(agent)
    agent.add_argument("--device-id", metavar="ID", help="this board's id (default: hostname + a hash of "
                       "/etc/machine-id)")
    agent.add_argument("--labels", default="", metavar="K=V,...", help="labels engineers select boards by, "
                       "e.g. class=rpi5,site=lab2")
    agent.add_argument("--data-dir", default="~/.local/share/edgebench/agent", metavar="DIR",
                       help="outbox, job table, model cache, reports (default ~/.local/share/edgebench/agent)")
    agent.add_argument("--model-url", metavar="URL", help="collector HTTP API for model downloads when a job "
                       "names no URL")
    agent.add_argument("--model-transport", choices=("auto", "http", "mqtt"), default="auto",
                       help="how models are fetched from the collector: auto (HTTP, then in chunks over MQTT when "
                       "there is no URL or HTTP is unreachable), http, or mqtt (default auto)")
    agent.add_argument("--model-chunk-timeout", type=cli_args.duration, default=30.0, metavar="SECONDS",
                       help="ask again for a model window over MQTT after this long without a chunk; gives up "
                       "after 6 tries (default 30s)")
    agent.add_argument("--heartbeat", type=cli_args.duration, default=30.0, metavar="SECONDS",
                       help="heartbeat period (default 30s)")
    agent.add_argument("--telemetry-interval", type=cli_args.duration, default=10.0, metavar="SECONDS",
                       help="telemetry sampling period; a batch goes out every 6 samples (default 10s)")
    agent.add_argument("--cache-quota", type=cli_args.size_bytes, default=2 * 1024**3, metavar="SIZE",
                       help="model cache size; least recently used models are evicted (default 2G)")
    agent.add_argument("--reports-quota", type=cli_args.size_bytes, default=256 * 1024**2, metavar="SIZE",
                       help="full reports (every sample) kept in DATA_DIR/reports; the oldest are deleted first, "
                       "0 keeps none (default 256M)")
    agent.add_argument("--min-free-space", type=cli_args.size_bytes, default=64 * 1024**2, metavar="SIZE",
                       help="free space the data dir's file system needs for a job to start; below it the agent "
                       "cleans up, then fails the job (default 64M; 0: no check)")
    agent.add_argument("--ack-wait", type=cli_args.positive_duration, default=30.0, metavar="SECONDS",
                       help="publish an outbox message again when the collector has not acknowledged it after this "
                       "long, doubling each time up to 15 minutes (default 30s)")
    agent.add_argument("--max-unacked", type=cli_args.count_up_to(100_000), default=100, metavar="N",
                       help="outbox messages waiting for the collector's acknowledgement at most; newer ones wait on "
                       "disk (default 100)")
    agent.add_argument("--sensors-root", type=cli_args.directory, default="/", metavar="DIR",
                       help="read the board's sensors under DIR instead of / (telemetry, heartbeats and jobs): a "
                       "mounted /sys, a recorded board tree")
    agent.add_argument("--job-timeout", type=cli_args.duration, default=DEFAULT_JOB_TIMEOUT_S, metavar="SECONDS",
                       help=f"kill a job that runs longer, when the job sets no timeout (default "
                       f"{DEFAULT_JOB_TIMEOUT_S / 3600:g}h)")
    agent.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.errors import UsageError
    from edgebench.agent.fleet import protocol
    from edgebench.agent.fleet.daemon import Agent, AgentConfig, default_device_id

    try:
        labels = protocol.parse_labels(args.labels)
        device = protocol.check_device_id(args.device_id or default_device_id())
    except protocol.ProtocolError as exc:
        raise UsageError(str(exc)) from None
    config = AgentConfig(mqtt=cli_args.mqtt_settings(args), device_id=device, labels=labels,
                         data_dir=Path(os.path.expanduser(args.data_dir)), model_url=args.model_url,
                         heartbeat_s=args.heartbeat, telemetry_s=args.telemetry_interval,
                         cache_quota_bytes=args.cache_quota, default_timeout_s=args.job_timeout,
                         model_transport=args.model_transport, model_chunk_timeout_s=args.model_chunk_timeout,
                         reports_quota_bytes=args.reports_quota, min_free_bytes=args.min_free_space,
                         ack_wait_s=args.ack_wait, max_unacked=args.max_unacked, sensors_root=args.sensors_root)
    return Agent(config).run()
