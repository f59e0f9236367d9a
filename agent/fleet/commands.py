"""Registers the fleet commands: `edgebench agent` (the board's daemon) and the engineers' `push`, `devices`,
`jobs`. Standard library only at import time: `edgebench --help` must stay cheap on a board."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="http://127.0.0.1:8780", metavar="URL",
                        help="the collector's HTTP API (default http://127.0.0.1:8780)")
    parser.add_argument("--json", metavar="FILE", help="write the answer as JSON; - for stdout")


def _add_agent(commands) -> None:
    from edgebench.agent.cli.main import count_up_to, duration, positive_duration, size_bytes
    from edgebench.agent.fleet import mqtt

    agent = commands.add_parser(
        "agent", help="run the fleet agent daemon on this board",
        description="Connect this board to the fleet: keep an MQTT v5 persistent session, report status, inventory, "
        "heartbeats and telemetry, and run benchmark jobs one at a time. Results wait in an on-disk outbox until "
        "the collector acknowledges them. See docs/fleet.md.")
    mqtt.add_arguments(agent)
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
    agent.add_argument("--model-chunk-timeout", type=duration, default=30.0, metavar="SECONDS",
                       help="ask again for a model window over MQTT after this long without a chunk; gives up "
                       "after 6 tries (default 30s)")
    agent.add_argument("--heartbeat", type=duration, default=30.0, metavar="SECONDS",
                       help="heartbeat period (default 30s)")
    agent.add_argument("--telemetry-interval", type=duration, default=10.0, metavar="SECONDS",
                       help="telemetry sampling period; a batch goes out every 6 samples (default 10s)")
    agent.add_argument("--cache-quota", type=size_bytes, default=2 * 1024**3, metavar="SIZE",
                       help="model cache size; least recently used models are evicted (default 2G)")
    agent.add_argument("--reports-quota", type=size_bytes, default=256 * 1024**2, metavar="SIZE",
                       help="full reports (every sample) kept in DATA_DIR/reports; the oldest are deleted first, "
                       "0 keeps none (default 256M)")
    agent.add_argument("--min-free-space", type=size_bytes, default=64 * 1024**2, metavar="SIZE",
                       help="free space the data dir's file system needs for a job to start; below it the agent "
                       "cleans up, then fails the job (default 64M; 0: no check)")
    agent.add_argument("--ack-wait", type=positive_duration, default=30.0, metavar="SECONDS",
                       help="publish an outbox message again when the collector has not acknowledged it after this "
                       "long, doubling each time up to 15 minutes (default 30s)")
    agent.add_argument("--max-unacked", type=count_up_to(100_000), default=100, metavar="N",
                       help="outbox messages waiting for the collector's acknowledgement at most; newer ones wait on "
                       "disk (default 100)")
    agent.add_argument("--job-timeout", type=duration, default=3600.0, metavar="SECONDS",
                       help="kill a job that runs longer, when the job sets no timeout (default 1h)")
    agent.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    from edgebench.agent.errors import UsageError
    from edgebench.agent.fleet import mqtt, protocol
    from edgebench.agent.fleet.daemon import Agent, AgentConfig, default_device_id

    try:
        labels = protocol.parse_labels(args.labels)
        device = protocol.check_device_id(args.device_id or default_device_id())
    except protocol.ProtocolError as exc:
        raise UsageError(str(exc)) from None
    config = AgentConfig(mqtt=mqtt.from_args(args), device_id=device, labels=labels,
                         data_dir=Path(os.path.expanduser(args.data_dir)), model_url=args.model_url,
                         heartbeat_s=args.heartbeat, telemetry_s=args.telemetry_interval,
                         cache_quota_bytes=args.cache_quota, default_timeout_s=args.job_timeout,
                         model_transport=args.model_transport, model_chunk_timeout_s=args.model_chunk_timeout,
                         reports_quota_bytes=args.reports_quota, min_free_bytes=args.min_free_space,
                         ack_wait_s=args.ack_wait, max_unacked=args.max_unacked)
    return Agent(config).run()


def _add_engineer_commands(commands) -> None:
    from edgebench.agent.cli.main import add_input_options, add_run_options, comma_list, duration

    push = commands.add_parser(
        "push", help="upload models and benchmark them on fleet devices",
        description="Upload MODEL files to the collector, dispatch a job per device x model x runtime x delegate "
        "chain x thread count, show progress per device and, with --wait, print the comparison table.")
    push.add_argument("models", nargs="+", metavar="MODEL")
    push.add_argument("--devices", default="", metavar="SELECTOR",
                      help="device ids (a,b), labels (class=rpi5,site=lab2) or 'all' (default: all)")
    push.add_argument("--runtime", dest="runtimes", type=comma_list, default=[], metavar="LIST",
                      help="runtimes to compare: litert, onnxruntime (default: from each model)")
    push.add_argument("--delegate", dest="delegates", action="append", default=[], metavar="CHAIN",
                      help="a TFLite delegate chain (xnnpack or gpu,xnnpack); repeat to compare chains")
    push.add_argument("--providers", type=comma_list, default=[], metavar="CHAIN")
    push.add_argument("--threads", type=comma_list, default=[], metavar="LIST", help="thread counts, e.g. 1,4")
    push.add_argument("--reference", metavar="REF", help="a reference model (.onnx/.tflite, e.g. the float32 "
                      "original): uploaded too, and each job also measures its model's output drift against it "
                      "(max/mean abs error, cosine, top-1 agreement on 8 generated input sets)")
    push.add_argument("--no-sensors", dest="sensors", action="store_false")
    push.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                      help="label every result of this push, e.g. release=v1.5.0 (release gates compare releases "
                      "by this label; repeatable)")
    add_input_options(push)
    add_run_options(push)
    push.add_argument("--wait", action="store_true", help="wait for every job and print the comparison")
    push.add_argument("--wait-timeout", type=duration, default=3600.0, metavar="SECONDS",
                      help="give up waiting after this long (default 1h; exit code 1)")
    _server_option(push)
    push.set_defaults(handler=_client_handler("push"))

    devices = commands.add_parser("devices", help="list the fleet's devices (from the collector)")
    _server_option(devices)
    devices.set_defaults(handler=_client_handler("devices"))

    jobs = commands.add_parser("jobs", help="list jobs and their state (from the collector)")
    jobs.add_argument("--batch", metavar="ID", help="only this batch (what push printed)")
    _server_option(jobs)
    jobs.set_defaults(handler=_client_handler("jobs"))


def _client_handler(name: str):
    def handler(args: argparse.Namespace) -> int:
        from edgebench.agent.fleet import client

        return getattr(client, f"cmd_{name}")(args)

    return handler


def register(commands) -> None:
    _add_agent(commands)
    _add_engineer_commands(commands)
