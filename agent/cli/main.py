"""The ``edgebench`` command line.

Start-up stays cheap: only argparse and the error types are imported here; each subcommand imports its
module (and numpy, and a runtime) when it runs, so ``edgebench --help`` works on a board in milliseconds.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional, Sequence

from edgebench.agent import __version__
from edgebench.agent.errors import EXIT_CHILD_FAILED, EXIT_FAILURE, EXIT_USAGE, EdgebenchError, UsageError, first_line

log = logging.getLogger("edgebench")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*$")
_DURATION_SCALE = {None: 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
# Bounds of every numeric flag (docs/cli.md): beyond them a value is a typo, and sleep(), RLIMIT_AS or a C++
# harness's integers would overflow on it.
MAX_DURATION_S = 720 * 3600.0  # 30 days
MAX_SIZE = 2**50  # 1024T
MIN_MEMORY_LIMIT = 2**20  # 1M: a limit without a unit is bytes, and "--memory-limit 512" is a mistake
MAX_COUNT = 10**9  # runs, samples
MAX_THREADS = 1024
MAX_SAMPLES = 10_000  # generated input sets, each held in memory
MAX_SEED = 2**32 - 1


class Parser(argparse.ArgumentParser):
    """argparse whose errors are the one line docs/cli.md promises, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def duration(text: str) -> float:
    """``"10"``, ``"2.5s"``, ``"500ms"``, ``"10m"`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (examples: 10, 2.5s, 500ms, 10m)")
    value = float(match.group(1)) * _DURATION_SCALE[match.group(2)]
    if value > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 720h, the longest duration accepted")
    return value


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return value


def size_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"`` -> bytes (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 512M, 2G)")
    power = " kmgt".index(match.group(2).lower() or " ")
    value = float(match.group(1)) * 1024**power
    if value > MAX_SIZE:  # also inf, from a thousand digits
        raise argparse.ArgumentTypeError(f"{text!r} is more than 1024T, the largest size accepted")
    return int(value)


def memory_limit(text: str) -> int:
    value = size_bytes(text)
    if value < MIN_MEMORY_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is less than 1M: give a unit (examples: 512M, 2G)")
    return value


def positive_int(text: str, most: int = MAX_COUNT) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    if value > most:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {most:,}, the most accepted")
    return value


def count_up_to(most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return positive_int(text, most)

    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer from {low} to {high:,}")
        return value

    return parse


def number_in(low: float, high: float, unit: str) -> Callable[[str], float]:
    """A finite float within [low, high]: nan and inf are never a setting."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # false for nan too
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low:g} to {high:g} {unit}")
        return value

    return parse


def directory(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


# ---------------------------------------------------------------- shared option groups

def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--runtime", help="litert, onnxruntime, or a plugin as module:Class "
                       "(default: chosen from the model file)")
    group.add_argument("--delegate", dest="delegates", type=comma_list, default=[], metavar="CHAIN",
                       help="TFLite delegates to try in order: xnnpack, gpu, nnapi, edgetpu, hexagon, armnn, "
                       "qnn, cpu, ref, or a delegate .so path (default: xnnpack)")
    group.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                       help="option passed to external delegates (repeatable)")
    group.add_argument("--providers", type=comma_list, default=[], metavar="CHAIN",
                       help="ONNX Runtime execution providers to try in order, e.g. TensorRT,CUDA,CPU "
                       "(default: CPU)")
    group.add_argument("--threads", type=count_up_to(MAX_THREADS), help="intra-op threads (default: the runtime's)")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                       help="concrete shape for an input with dynamic dimensions, e.g. x=1x3x224x224")
    group.add_argument("--input", action="append", default=[], metavar="NAME=SOURCE",
                       help="input data: NAME=file.npy, NAME=<number>, NAME=zeros|ones|random "
                       "(default: random data fitting the dtype)")
    group.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for generated inputs (default 0)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run length (measured runs continue until both minimums are met)")
    group.add_argument("--min-runs", type=positive_int, default=400)
    group.add_argument("--min-duration", type=duration, default=1.0, metavar="SECONDS")
    group.add_argument("--max-duration", type=positive_duration, default=60.0, metavar="SECONDS",
                       help="stop the measured phase here even if the minimums are not met (default 60s)")
    group.add_argument("--warmup-runs", type=int_in(0, MAX_COUNT), default=5)
    group.add_argument("--warmup-duration", type=duration, default=0.5, metavar="SECONDS")
    group = parser.add_argument_group("isolation")
    group.add_argument("--timeout", type=positive_duration, metavar="SECONDS",
                       help="kill the benchmark process after this long (default: max duration x2 + 120s)")
    group.add_argument("--memory-limit", type=memory_limit, metavar="SIZE",
                       help="address-space limit for the benchmark process, e.g. 2G")
    group.add_argument("--memory-interval", type=duration, default=0.05, metavar="SECONDS",
                       help="how often this process samples the benchmark's RSS; 0 turns it off (default 0.05)")


def add_physics_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("board physics (temperature, clocks, power, throttling)")
    group.add_argument("--no-sensors", dest="sensors", action="store_false",
                       help="do not sample the board's sensors during the run")
    group.add_argument("--sensor-rate", type=number_in(0.01, 1000, "Hz"), default=10.0, metavar="HZ",
                       help="sampling rate (default 10)")
    group.add_argument("--sensors-root", type=directory, default="/", metavar="DIR",
                       help="read sensors under DIR instead of / (a recorded board tree, a mounted /sys)")
    group.add_argument("--idle-baseline", type=duration, default=1.0, metavar="SECONDS",
                       help="measure idle power this long before the run, to report the inference's own energy "
                       "(default 1s; 0 skips; only where a power sensor exists)")
    group.add_argument("--max-start-temp", type=number_in(-50, 150, "°C"), metavar="C",
                       help="before measuring, wait until every temperature is at or below C and nothing throttles")
    group.add_argument("--cooldown-timeout", type=duration, default=300.0, metavar="SECONDS",
                       help="give up waiting for --max-start-temp after this long (default 300s)")
    group.add_argument("--sustained", type=positive_duration, metavar="DURATION",
                       help="run continuously this long (e.g. 10m) and report latency and temperature over time")
    group.add_argument("--window", type=positive_duration, metavar="SECONDS",
                       help="window length for --sustained (default: a twentieth of the run, at least 1s)")


def physics_settings(args: argparse.Namespace):
    if not args.sensors:
        return None
    from edgebench.agent.engine.physics import PhysicsSettings

    return PhysicsSettings(rate_hz=args.sensor_rate, root=args.sensors_root, idle_s=args.idle_baseline,
                           max_start_temp_c=args.max_start_temp, cooldown_timeout_s=args.cooldown_timeout)


def runtime_options(args: argparse.Namespace):
    from edgebench.agent.runtimes.base import RuntimeOptions

    return RuntimeOptions(threads=args.threads, delegates=args.delegates, providers=args.providers,
                          delegate_options=key_values(args.delegate_option, "--delegate-option"))


def run_settings(args: argparse.Namespace):
    from edgebench.agent.engine.measure import RunSettings

    return RunSettings(min_runs=args.min_runs, min_duration_s=args.min_duration, max_duration_s=args.max_duration,
                       warmup_runs=args.warmup_runs, warmup_duration_s=args.warmup_duration)


def child_limits(args: argparse.Namespace, run_seconds: float):
    from edgebench.agent.engine.isolation import ChildLimits

    timeout = args.timeout if args.timeout is not None else run_seconds * 2 + 120
    return ChildLimits(timeout_s=timeout, memory_bytes=args.memory_limit,
                       rss_interval_s=args.memory_interval or None)


def check_outputs(args: argparse.Namespace, *flags: str) -> None:
    """Output files are checked before any work: a typo in --json must not cost a whole benchmark."""
    from edgebench.agent.engine.report import check_writable

    for flag in flags:
        path = getattr(args, flag)
        if path and not (flag == "json" and path == "-"):
            check_writable(path, f"--{flag}")


def check_url(url: Optional[str], flag: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url) if url else None
    except ValueError as exc:
        raise UsageError(f"{flag} {url!r}: not a URL ({exc})") from None
    if parts and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise UsageError(f"{flag} {url!r}: expected an http:// or https:// URL with a host")


# ---------------------------------------------------------------- subcommands

def cmd_bench(args: argparse.Namespace) -> int:
    from edgebench.agent.cli.progress import ProgressLine
    from edgebench.agent.engine import bench
    from edgebench.agent.engine.report import emit_json, render

    check_outputs(args, "json")
    settings = run_settings(args)
    window = None
    if args.window and not args.sustained:
        raise UsageError("--window sets the windows of a --sustained run: give --sustained too")
    if args.window and args.window > args.sustained:
        raise UsageError(f"--window ({args.window:g}s) is longer than --sustained ({args.sustained:g}s)")
    if args.sustained:  # one long measured phase: exactly the requested duration
        settings.min_runs, settings.min_duration_s, settings.max_duration_s = 1, args.sustained, args.sustained
        window = args.window or max(1.0, args.sustained / 20)
    physics = physics_settings(args)
    if window and physics is None:
        raise UsageError("--sustained reports temperature over time: it cannot run with --no-sensors")
    request = bench.BenchRequest(
        model=args.model, runtime=args.runtime, options=runtime_options(args), settings=settings,
        shape_args=args.shape, input_args=args.input, seed=args.seed,
        limits=child_limits(args, settings.max_duration_s + settings.warmup_duration_s),
        physics=physics, sustained_window_s=window,
    )
    mode = args.progress or ("off" if args.quiet else "auto")
    progress = ProgressLine(args.model, settings.min_duration_s, mode=mode)
    labels = key_values(args.label, "--label")
    try:
        report = bench.run(request, progress)
    finally:
        progress.close()
    report["labels"] = labels
    emit_json(report, args.json)
    if args.json != "-" and not args.quiet:
        print(render(report))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from edgebench.agent.optimize import compare

    check_outputs(args, "json")
    return compare.main(args)


def cmd_variants(args: argparse.Namespace) -> int:
    from edgebench.agent.optimize import variants

    check_outputs(args, "json")
    return variants.main(args)


def cmd_sensors(args: argparse.Namespace) -> int:
    import shutil

    from edgebench.agent.cli import sensors as sensors_cli

    if args.adb and not shutil.which(args.adb_exe):
        raise UsageError(f"--adb-exe {args.adb_exe}: no such executable (install adb or set $EDGEBENCH_ADB)")
    if not args.adb and not Path(args.root).is_dir():  # a recorded tree that is not there reads as "no sensors"
        raise UsageError(f"--root {args.root} is not a directory")
    return sensors_cli.run(args)


def add_sensors_command(commands, adb: bool = False) -> None:
    """`edgebench sensors` (this machine or a recorded tree) and `edgebench adb sensors --serial S`."""
    from edgebench.agent.cli import sensors as sensors_cli  # argparse set-up only: imports no numpy, no runtime

    if adb:
        sensors = commands.add_parser("sensors", help="read an Android device's sensors over adb",
                                      description="Discover and read an Android device's sensors from this host "
                                      "through `adb -s SERIAL shell`.")
        sensors_cli.add_arguments(sensors)
        sensors.add_argument("--serial", dest="adb", required=True, metavar="SERIAL", help="adb device serial")
    else:
        sensors = commands.add_parser("sensors", help="discover this board's sensors and print current readings",
                                      description="Discover temperature, clock, power and throttling sensors "
                                      "(thermal zones, hwmon/INA rails, cpufreq, vcgencmd, Jetson, Android, RAPL, "
                                      "NVML) and print their current readings with units.")
        sensors_cli.add_arguments(sensors)
    sensors.set_defaults(handler=cmd_sensors)


def add_fleet_commands(commands) -> None:
    """The fleet's commands register themselves: the agent daemon and engineers' commands (edgebench.agent
    .fleet, when present) and the collector (edgebench.server, only where the server extra is installed).
    The agent package never imports server code at start-up; ``server`` is found by name, if it is there."""
    import importlib

    for module_name in ("edgebench.agent.fleet.commands", "edgebench.server.commands", "edgebench.dashboards.commands"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not installed here (a board without the server extra, or not built yet)
            raise
        module.register(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgebench", description="Benchmark AI models on edge boards: latency, memory and accuracy drift.")
    parser.add_argument("--version", action="version", version=f"edgebench {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    parser.add_argument("--config", metavar="FILE", help="TOML file with option defaults per command "
                        "(default: $EDGEBENCH_CONFIG or ~/.config/edgebench/config.toml; see docs/cli.md)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(subparsers=commands.choices)

    bench = commands.add_parser("bench", help="benchmark one model on this machine",
                                description="Benchmark one model: load time, first inference, latency "
                                "percentiles with a confidence interval, memory; each run in a child process.")
    bench.add_argument("model", help="a .tflite or .onnx model file")
    add_runtime_options(bench)
    add_input_options(bench)
    add_run_options(bench)
    add_physics_options(bench)
    bench.add_argument("--json", metavar="FILE", help="write the full report (every sample) as JSON; - for stdout")
    bench.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                       help="tag the report, e.g. release=v1.4.0 or class=rpi5 (release gates select on labels)")
    bench.add_argument("-q", "--quiet", action="store_true", help="no table, no progress line")
    bench.add_argument("--progress", choices=("auto", "line", "json", "off"),
                       help="progress on stderr: auto (a line on a terminal; default, off with -q), line, json "
                       "(one JSON object per update, for programs) or off")
    bench.set_defaults(handler=cmd_bench)

    compare = commands.add_parser("compare", help="output drift between two models on the same inputs",
                                  description="Run a reference and a candidate model (e.g. float32 vs int8) "
                                  "on the same inputs and report drift; with --eval, accuracy of both.")
    compare.add_argument("reference")
    compare.add_argument("candidate")
    compare.add_argument("--samples", type=count_up_to(MAX_SAMPLES), default=16,
                         help="generated input sets (default 16)")
    compare.add_argument("--eval", metavar="DATA.npz", help="labelled set: arrays 'x' (or per-input names) "
                         "and 'y' (class indices)")
    compare.add_argument("--output", metavar="NAME", help="the output to compare (default: the first)")
    compare.add_argument("--reference-runtime", help="runtime for the reference (default: from the file)")
    compare.add_argument("--candidate-runtime", help="runtime for the candidate (default: from the file)")
    add_input_options(compare)
    compare.add_argument("--threads", type=count_up_to(MAX_THREADS))
    compare.add_argument("--timeout", type=positive_duration, default=600.0, metavar="SECONDS")
    compare.add_argument("--json", metavar="FILE", help="write the drift report as JSON; - for stdout")
    compare.set_defaults(handler=cmd_compare)

    variants = commands.add_parser("variants", help="make float16 / int8 variants of an ONNX model and "
                                   "benchmark them against the float model",
                                   description="Produce float16, dynamic int8 and static int8 (QDQ) variants "
                                   "with onnxruntime.quantization, benchmark each, and print size, latency "
                                   "and drift against the float model.")
    variants.add_argument("model", help="a float32 .onnx model")
    variants.add_argument("--out-dir", metavar="DIR", help="where the variants are written "
                          "(default: next to the model, in MODEL.variants/)")
    variants.add_argument("--only", type=comma_list, metavar="LIST",
                          help="subset of: fp16,dynamic-int8,static-int8")
    variants.add_argument("--calibration", metavar="DATA.npz",
                          help="calibration inputs for static int8 (default: generated inputs)")
    variants.add_argument("--calibration-samples", type=count_up_to(MAX_SAMPLES), default=16)
    variants.add_argument("--samples", type=count_up_to(MAX_SAMPLES), default=16,
                          help="input sets for drift (default 16)")
    add_input_options(variants)
    add_run_options(variants)
    variants.add_argument("--threads", type=count_up_to(MAX_THREADS))
    variants.add_argument("--providers", type=comma_list, default=[], metavar="CHAIN")
    variants.add_argument("--json", metavar="FILE", help="write the table and every report as JSON; - for stdout")
    variants.set_defaults(handler=cmd_variants)

    add_sensors_command(commands)
    add_fleet_commands(commands)
    adb = commands.add_parser("adb", help="work with an Android device from this host over adb")
    add_sensors_command(adb.add_subparsers(dest="adb_command", metavar="COMMAND", required=True), adb=True)
    return parser


def configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command's own parser (``edgebench adb sensors``), so its errors name the command."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action else None
        if name not in getattr(action, "choices", {}):
            return parser
        parser = action.choices[name]


def error_line(exc: BaseException) -> str:
    """One line: a message that spans several (a library's) keeps its first; --debug shows the rest."""
    line = first_line(exc)
    return line if line == str(exc).strip() else f"{line} [...] (the rest with --debug)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.command:
        from edgebench.agent.cli.config import apply_defaults

        try:
            apply_defaults(first.subparsers[first.command], first.command, first.config)
        except UsageError as exc:
            print(f"edgebench: error: {error_line(exc)}", file=sys.stderr)
            return exc.exit_code
    args, extra = parser.parse_known_args(argv)
    if extra:
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    configure_logging(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except EdgebenchError as exc:
        if args.debug:
            raise
        print(f"edgebench: error: {error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:  # e.g. compare holding many large generated input sets
        if args.debug:
            raise
        print("edgebench: error: out of memory: use a smaller --shape or fewer --samples", file=sys.stderr)
        return EXIT_CHILD_FAILED
    except KeyboardInterrupt:
        print("edgebench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (`| head`) went away: stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except Exception as exc:  # noqa: BLE001 - an unexpected bug still gets one line, not a traceback
        if args.debug:
            raise
        print(f"edgebench: internal error: {type(exc).__name__}: {first_line(exc)} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_FAILURE
