"""The engineers' commands: ``edgebench push``, ``devices`` and ``jobs``, through the collector's HTTP API
(edgebench.agent.fleet.client). Standard library only at import time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Optional, Sequence

from edgebench.agent.cli import args as cli_args
from edgebench.agent.cli.budgets import add_budget_options, budgets
from edgebench.agent.errors import UsageError
from edgebench.agent.fleet.protocol import (
    DEFAULT_JOB_TIMEOUT_S,
    GENERATION_SETTINGS,
    generation_problem,
    runtime_problem,
)
from edgebench.agent.modelfile import identify


def _server_option(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """--server, --token, --server-ca, --json. A subcommand's are SUPPRESSed when absent, so the same flags given
    to its parent command (or set in its table) stay."""
    unset = {"default": argparse.SUPPRESS} if subcommand else {}
    parser.add_argument("--server", **(unset or {"default": "http://127.0.0.1:8780"}), metavar="URL",
                        help="the collector's HTTP API (default http://127.0.0.1:8780)")
    parser.add_argument("--token", **(unset or {"default": os.environ.get("EDGEBENCH_TOKEN")}), metavar="TOKEN",
                        help="the API's bearer token (default $EDGEBENCH_TOKEN, which the process list does not show; "
                        "`edgebench server token create`)")
    cli_args.add_server_ca_option(parser, **unset)
    parser.add_argument("--json", metavar="FILE", help="write the answer as JSON; - for stdout", **unset)


def collector(args: argparse.Namespace):
    from edgebench.agent.fleet.client import Server

    return Server(args.server, args.token, args.server_ca)


def register(commands) -> None:
    push = commands.add_parser(
        "push", help="upload models and benchmark them on fleet devices",
        description="Upload MODEL files to the collector, dispatch a job per device x model x runtime x delegate "
        "chain x thread count, show progress per device and, with --wait, print the comparison table.")
    push.add_argument("models", nargs="+", metavar="MODEL")
    push.add_argument("--devices", default="", metavar="SELECTOR",
                      help="device ids (a,b), labels (class=rpi5,site=lab2) or 'all' (default: all)")
    push.add_argument("--runtime", dest="runtimes", type=cli_args.comma_list, default=[], metavar="LIST",
                      help="runtimes to compare: litert, onnxruntime, executorch, torchscript (default: each "
                           "model's own)")
    cli_args.add_delegate_option(push, "repeat to compare chains: each --delegate is one configuration")
    push.add_argument("--providers", type=cli_args.comma_list, default=[], metavar="CHAIN")
    push.add_argument("--threads", type=cli_args.comma_list, default=[], metavar="LIST",
                      help="thread counts, e.g. 1,4")
    cli_args.add_cpus_option(push, "the same CPUs on every device (a board that lacks one fails the job)")
    push.add_argument("--reference", metavar="REF", help="a reference model (.onnx/.tflite, e.g. the float32 "
                      "original): uploaded too, and each job also measures its model's output drift against it "
                      "(max/mean abs error, cosine, top-1 agreement on 8 generated input sets)")
    push.add_argument("--no-sensors", dest="sensors", action="store_false")
    push.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                      help="label every result of this push, e.g. release=v1.5.0 (release gates compare releases "
                      "by this label; repeatable)")
    cli_args.add_input_options(push, files=False)
    cli_args.add_generation_options(push, local=False)  # one prompt length; no --prompt-file: a job carries no files
    cli_args.add_run_options(push, per_repeat=True)  # no --memory-limit: a job's memory is the board's business
    cli_args.add_repeat_options(push, gap=False)
    cli_args.add_placement_options(push, local=False)
    add_budget_options(push, "the variant to ship on each board class (--reference, --wait)")
    push.add_argument("--timeout", type=cli_args.positive_duration, metavar="SECONDS",
                      help=f"kill a job's benchmark after this long (default: the agent's --job-timeout, "
                      f"{DEFAULT_JOB_TIMEOUT_S / 3600:g}h unless the board sets another)")
    push.add_argument("--wait", action="store_true", help="wait for every job and print the comparison (with "
                      "--reference REF among the models pushed: the variant to ship per board class)")
    push.add_argument("--wait-timeout", type=cli_args.duration, default=3600.0, metavar="SECONDS",
                      help="give up waiting after this long (default 1h; exit code 1)")
    _server_option(push)
    push.set_defaults(handler=run_push)

    devices = commands.add_parser("devices", help="list the fleet's devices (from the collector)")
    _server_option(devices)
    devices.set_defaults(handler=run_devices)
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION")
    credentials = actions.add_parser(
        "credentials", help="make a device's MQTT credentials on the broker, or revoke them (an admin token)",
        description="Make the device's MQTT user on the broker (user name = ID, client id edgebench-agent-ID, its "
        "own topics only), or reset its password, and print the agent's flags; the password is shown once. "
        "--revoke removes the user (the broker disconnects the device). Needs a token with the admin role and a "
        "collector given a broker admin account (edgebench server --broker-admin-user).")
    credentials.add_argument("device_id", metavar="ID")
    credentials.add_argument("--revoke", action="store_true", help="remove the device's MQTT user and role")
    _server_option(credentials, subcommand=True)
    credentials.set_defaults(handler=run_credentials)

    jobs = commands.add_parser("jobs", help="list jobs and their state (from the collector)")
    jobs.add_argument("--batch", metavar="ID", help="only this batch (what push printed)")
    _server_option(jobs)
    jobs.set_defaults(handler=run_jobs)


def check_job_args(shapes: Sequence[str], inputs: Sequence[str]) -> None:
    """What a job refuses, refused before anything is uploaded: a job runs on another machine, from data only."""
    from edgebench.agent.fleet.protocol import INPUT_SOURCE, SHAPE_ARG

    for item in shapes:
        if not SHAPE_ARG.match(item):
            raise UsageError(f"--shape {item!r}: expected NAME=DIMS (e.g. x=1x3x224x224) or NAME=scalar")
    for item in inputs:
        if not INPUT_SOURCE.match(item.rpartition("=")[2]):
            raise UsageError(f"--input {item!r}: a fleet job generates its inputs: give zeros, ones, random or a "
                             "number (files stay on this machine)")


def check_runtimes(paths: Sequence[str], runtimes: Sequence[Optional[str]], generates: bool = False) -> None:
    """A model that no runtime of the push can run, or that is given generation settings and is no language model
    (``generates``), is refused here, before its upload (the collector refuses it too)."""
    for path in paths:
        model_format = identify(path).format
        for runtime in runtimes:
            problem = runtime_problem(runtime, model_format) or (
                generation_problem(runtime, model_format) if generates else None)
            if problem:
                raise UsageError(f"{Path(path).name}: {problem}")


def job_generation(args: argparse.Namespace) -> Optional[dict]:
    """The generation settings every job carries (a language model's: --prompt-tokens N, --gen-tokens M), None
    when none is given (a language model then runs with the engine's defaults). One prompt length per push, and the
    prompt is the text shipped with edgebench: a job cannot read this machine's files (push has no --prompt-file,
    and --prompt-tokens takes one length)."""
    sweep = cli_args.generation_settings(args)
    return {key: getattr(sweep[0], key) for key in GENERATION_SETTINGS} if sweep else None


def check_job_settings(settings) -> None:
    """The run settings a job carries, within the bounds a job allows (protocol.SETTINGS_LIMITS), refused before
    anything is uploaded: ``--profile-runs 200000`` names its flag here rather than failing at the collector."""
    from edgebench.agent.fleet.protocol import SETTINGS_LIMITS

    for key, (low, high) in SETTINGS_LIMITS.items():
        value = getattr(settings, key)
        if not low <= value <= high:
            flag = "--" + key.removesuffix("_s").replace("_", "-")
            raise UsageError(f"{flag} {_shown(value)}: a fleet job allows {_shown(low)} to {_shown(high)}")


def _shown(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def job_options(args: argparse.Namespace):
    from edgebench.agent.fleet.client import JobOptions

    repeats = cli_args.repeat_count(args)
    settings = cli_args.run_settings(args, repeats)
    check_job_settings(settings)
    return JobOptions(devices=args.devices, runtimes=args.runtimes, delegates=args.delegates, threads=args.threads,
                      providers=args.providers, shape=args.shape, input=args.input, seed=args.seed,
                      sensors=args.sensors, timeout=args.timeout, label=args.label, min_runs=settings.min_runs,
                      min_duration=settings.min_duration_s, max_duration=settings.max_duration_s,
                      warmup_runs=settings.warmup_runs, warmup_duration=settings.warmup_duration_s, cpus=args.cpus,
                      repeats=repeats, profile_runs=settings.profile_runs, generation=job_generation(args))


def run_push(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.fleet.client import (
        FINAL,
        comparison,
        job_matrix,
        recommendation_lines,
        recommendations,
        render,
        request,
        upload,
        wait_for,
    )

    server = collector(args)
    check_job_args(args.shape, args.input)
    options = job_options(args)
    job_matrix(options, [])  # every other refusal (--threads, --devices, --label) before the uploads too
    check_runtimes(args.models, args.runtimes or [None], generates=options.generation is not None)
    models = [upload(server, Path(model)) for model in args.models]
    reference = upload(server, Path(args.reference)) if args.reference else None
    quiet = args.json == "-"
    for model in models + ([reference] if reference else []):
        if not quiet:
            print(f"uploaded {model['name']} ({model['format']}, {model['size_bytes']} bytes) sha256 "
                  f"{model['sha256'][:12]}", file=sys.stderr)
    matrix = job_matrix(options, [m["sha256"] for m in models])
    if reference:
        matrix["reference"] = reference["sha256"]  # every job measures its model's drift against it
    batch = request(server, "POST", "/api/v1/jobs", json.dumps(matrix).encode())
    if not quiet:
        print(f"batch {batch['batch_id']}: {len(batch['jobs'])} job(s) dispatched", file=sys.stderr)
    if not args.wait:
        emit_json(batch, args.json)
        if not args.json:
            print(batch["batch_id"])
        return 0
    jobs = wait_for(server, batch["batch_id"], args.wait_timeout, show=not quiet)
    results = request(server, "GET", f"/api/v1/results?batch={batch['batch_id']}")["results"]
    table = comparison(jobs, results)
    verdicts = recommendations(jobs, results, reference["sha256"], budgets(args)) if reference else []
    emit_json({"batch_id": batch["batch_id"], "rows": table, "jobs": jobs, "recommendations": verdicts}, args.json)
    if not quiet:
        print(render(table))
        for line in recommendation_lines(verdicts):
            print(line)
    pending = [job for job in jobs if job["state"] not in FINAL]
    if pending:
        print(f"edgebench: error: {len(pending)} job(s) still unfinished after {args.wait_timeout:g}s "
              f"(edgebench jobs --batch {batch['batch_id']})", file=sys.stderr)
        return 1
    return 0


def run_devices(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.fleet.client import request

    server = collector(args)
    devices = request(server, "GET", "/api/v1/devices")["devices"]
    emit_json(devices, args.json)
    if args.json != "-":
        now = time.time()
        print(f"{'device':<28} {'state':<8} {'last seen':>10}  labels")
        for d in devices:
            labels = ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
            print(f"{d['device_id'][:28]:<28} {d['state']:<8} {now - d['last_seen']:>9.0f}s  {labels}")
    return 0


def run_credentials(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.fleet.client import device_credentials
    from edgebench.agent.fleet.protocol import ProtocolError, check_device_id

    try:
        check_device_id(args.device_id)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from None
    answer = device_credentials(collector(args), args.device_id, revoke=args.revoke)
    emit_json(answer, args.json)
    if args.json == "-":
        return 0
    if args.revoke:
        print(f"device {args.device_id}: MQTT credentials revoked (the broker disconnected it)")
        return 0
    device, password = answer["device"], answer["password"]
    print(f"device {device}: MQTT password {password} (shown once; {'reset' if answer.get('reset') else 'new'})\n"
          f"on the board: echo '{password}' > /etc/edgebench/mqtt-password && chmod 600 /etc/edgebench/mqtt-password\n"
          f"  edgebench agent {('--mqtt ' + answer['mqtt_url'] + ' ') if answer.get('mqtt_url') else ''}"
          f"--device-id {device} --username {answer['username']} --password-file /etc/edgebench/mqtt-password ...")
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.fleet.client import request

    server = collector(args)
    path = "/api/v1/jobs" + (f"?batch={urllib.parse.quote(args.batch)}" if args.batch else "")
    jobs = request(server, "GET", path)["jobs"]
    emit_json(jobs, args.json)
    if args.json != "-":
        print(f"{'job':<34} {'device':<24} {'model':<28} state")
        for job in jobs:
            reason = f": {job['reason'][:60]}" if job.get("reason") and job["state"] != "done" else ""
            print(f"{job['job_id']:<34} {job['device_id'][:24]:<24} {job['spec']['model']['name'][:28]:<28} "
                  f"{job['state']}{reason}")
    return 0
