"""Argument types, the option groups commands share, and the settings objects built from them.

Only argparse and the error types are imported here: the settings builders import their engine module when they
run, so ``edgebench --help`` stays cheap on a board.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, Union

from edgebench.agent.errors import EXIT_USAGE, UsageError

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
MAX_REPEATS = 10_000
# Run length: one run of 400 runs and 1 s resolves p99 (368 samples at 95%); with repeats (default 5) each repeat
# runs 100 and 0.3 s, and the pooled 500 samples still resolve it.
DEFAULT_REPEATS = 5
SINGLE_MIN_RUNS, SINGLE_MIN_DURATION_S = 400, 1.0
PER_REPEAT_MIN_RUNS, PER_REPEAT_MIN_DURATION_S = 100, 0.3


class FromConfig(list):
    """A repeatable option's values from the config file or the environment: the command line replaces them."""


class Append(argparse._AppendAction):
    """``action="append"`` whose first command-line value replaces a configured list instead of extending it
    (flag > environment > file holds for repeatable options too)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if isinstance(getattr(namespace, self.dest, None), FromConfig):
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are the one line docs/cli.md promises, not a usage block."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", "append", Append)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- argument types

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


def count_list(most: int, what: str) -> Callable[[str], list[int]]:
    """``4`` or ``1,2,4`` (a sweep): positive counts up to ``most``, each once, in the order given."""
    def parse(text: str) -> list[int]:
        counts = [positive_int(part, most) for part in comma_list(text)]
        if not counts:
            raise argparse.ArgumentTypeError(f"{text!r} names no {what}")
        return list(dict.fromkeys(counts))

    return parse


def threads_or_sweep(text: str) -> Union[int, list[int]]:
    """bench's --threads: one count, an int as every command's --threads is (config files and RuntimeOptions read it
    so), or several (``1,2,4``: a language model's sweep), a list, each once, in the order given."""
    counts = count_list(MAX_THREADS, "thread count")(text)
    return counts[0] if len(counts) == 1 else counts


MAX_CPU = 1023  # CPU ids a --cpus list may name (a kernel's CPU_SETSIZE is 1024)


def cpu_set(text: str) -> list[int]:
    """``"0"``, ``"0-3"``, ``"4,5"``, ``"0-1,6"`` -> sorted CPU ids (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()) or int(high or low) < int(low):
            raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list (examples: 0, 0-3, 4,5)")
        if int(high or low) > MAX_CPU:
            raise argparse.ArgumentTypeError(f"{text!r} names a CPU above {MAX_CPU}")
        cpus.update(range(int(low), int(high or low) + 1))
    return sorted(cpus)


def add_cpus_option(parser, help_text: str) -> None:
    parser.add_argument("--cpus", type=cpu_set, metavar="LIST",
                        help=f"pin the benchmark process to these CPUs before it loads the model, e.g. 0, 0-3, 4,5 "
                        f"(big.LITTLE boards: a big core or a little one, on purpose); {help_text}")


def key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def check_outputs(args: argparse.Namespace, *flags: str) -> None:
    """Output files are checked before any work: a typo in --json must not cost a whole benchmark."""
    from edgebench.agent.engine.report import check_writable

    for flag in flags:
        path = getattr(args, flag)
        if path and not (flag == "json" and path == "-"):
            check_writable(path, f"--{flag.replace('_', '-')}")


def check_url(url: Optional[str], flag: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url) if url else None
    except ValueError as exc:
        raise UsageError(f"{flag} {url!r}: not a URL ({exc})") from None
    if parts and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise UsageError(f"{flag} {url!r}: expected an http:// or https:// URL with a host")


# ---------------------------------------------------------------- shared option groups

DELEGATE_HELP = ("a TFLite delegate chain, tried in order: xnnpack, gpu, nnapi, edgetpu, hexagon, armnn, qnn, cpu, "
                 "ref, or a delegate .so path (e.g. gpu,xnnpack)")


def add_delegate_option(parser, help_text: str) -> None:
    """One convention for every command: each --delegate is one chain (comma-separated, tried in order)."""
    parser.add_argument("--delegate", dest="delegates", action="append", default=[], metavar="CHAIN",
                        help=f"{DELEGATE_HELP}; {help_text}")


def add_runtime_options(parser: argparse.ArgumentParser, thread_sweep: bool = False) -> None:
    """``thread_sweep``: --threads takes a list, a language model's sweep (bench); otherwise one count."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--runtime", help="litert, onnxruntime, or a plugin as module:Class "
                       "(default: chosen from the model file)")
    add_delegate_option(group, "give it once: bench measures one chain (default: xnnpack)")
    group.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                       help="option passed to external delegates (repeatable)")
    group.add_argument("--providers", type=comma_list, default=[], metavar="CHAIN",
                       help="ONNX Runtime execution providers to try in order, e.g. TensorRT,CUDA,CPU "
                       "(default: CPU)")
    if thread_sweep:
        group.add_argument("--threads", type=threads_or_sweep, metavar="N[,N...]",
                           help="intra-op threads (default: the runtime's); several, for a language model: a sweep, "
                           "one row per thread count and prompt length, their repeats interleaved")
    else:
        group.add_argument("--threads", type=count_up_to(MAX_THREADS), help="intra-op threads (default: the runtime's)")


MAX_IMAGE_VALUE = 1e6  # --image-mean / --image-std: pixel statistics, never beyond this


def channel_values(positive: bool) -> Callable[[str], list[float]]:
    """``"127.5"`` or ``"123.7,116.3,103.5"`` (one per channel) -> floats; finite, and above 0 when ``positive``."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = [math.nan]
        low = 0.0 if positive else -MAX_IMAGE_VALUE
        if not values or not all(low <= v <= MAX_IMAGE_VALUE and (v > 0 or not positive) for v in values):
            what = "positive numbers" if positive else "numbers"
            raise argparse.ArgumentTypeError(f"{text!r} is not one or comma-separated {what} (one per channel) up to "
                                             f"{MAX_IMAGE_VALUE:g}")
        return values

    return parse


def add_input_options(parser: argparse.ArgumentParser, files: bool = True) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                       help="concrete shape for an input with dynamic dimensions, e.g. x=1x3x224x224")
    sources = "NAME=file.npy|file.npz|image (JPEG, PNG, BMP, GIF, WebP), NAME=<number>, NAME=zeros|ones|random" \
        if files else "NAME=<number>, NAME=zeros|ones|random (no files: a job runs on another machine)"
    group.add_argument("--input", action="append", default=[], metavar="NAME=SOURCE",
                       help=f"input data: {sources} (default: random data fitting the dtype)")
    group.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="seed for generated inputs (default 0)")
    if files:
        group.add_argument("--image-mean", type=channel_values(False), metavar="M[,M,M]",
                           help="image inputs into a float or int8 model: (pixel - mean) / std, one value or one per "
                           "channel (default: the model's TFLite metadata, else 127.5: pixels to [-1, 1])")
        group.add_argument("--image-std", type=channel_values(True), metavar="S[,S,S]",
                           help="the std of that normalisation (default: the model's TFLite metadata, else 127.5)")


def add_eval_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--eval (a labelled .npz or image folder) and --labels (class names for the folder's class folders)."""
    parser.add_argument("--eval", metavar="DATA.npz|DIR",
                        help=f"labelled set for {what}: an .npz with arrays 'x' (or per-input names) and 'y' (class "
                        "indices), or a folder of images DIR/<class>/<image>, <class> a class index or a label name")
    parser.add_argument("--labels", metavar="FILE",
                        help="class names, one per line (line N is class N), for --eval DIR's class folders "
                        "(default: the labels a TFLite model carries in its metadata)")


def add_run_options(parser: argparse.ArgumentParser, per_repeat: bool = False) -> None:
    """``per_repeat``: the minimums apply to each repeat (bench): left unset here, their defaults depend on
    --repeats (``run_settings``)."""
    group = parser.add_argument_group("run length (measured runs continue until both minimums are met)")
    if per_repeat:
        group.add_argument("--min-runs", type=positive_int, help=f"per repeat (default {PER_REPEAT_MIN_RUNS} with "
                           f"repeats, {SINGLE_MIN_RUNS} with --repeats 1)")
        group.add_argument("--min-duration", type=duration, metavar="SECONDS",
                           help=f"per repeat (default {PER_REPEAT_MIN_DURATION_S:g}s with repeats, "
                           f"{SINGLE_MIN_DURATION_S:g}s with --repeats 1)")
    else:
        group.add_argument("--min-runs", type=positive_int, default=SINGLE_MIN_RUNS)
        group.add_argument("--min-duration", type=duration, default=SINGLE_MIN_DURATION_S, metavar="SECONDS")
    group.add_argument("--max-duration", type=positive_duration, default=60.0, metavar="SECONDS",
                       help="stop the measured phase here even if the minimums are not met (default 60s)")
    group.add_argument("--warmup-runs", type=int_in(0, MAX_COUNT), default=5)
    group.add_argument("--warmup-duration", type=duration, default=0.5, metavar="SECONDS")


MAX_TOKENS = 1 << 20  # engine/generate.MAX_TOKENS: more than any model's context
token_counts = count_list(MAX_TOKENS, "token count")  # --prompt-tokens 128,512,2048


def add_generation_options(parser: argparse.ArgumentParser, local: bool = True) -> None:
    """``local``: this machine runs it (bench): a sweep of prompt lengths and a prompt file; a fleet job carries one
    length and no file (push)."""
    group = parser.add_argument_group("language models (GGUF): a generation (prompt prefill, then decode) per repeat")
    sweep = "; several: a sweep, one row each, their repeats interleaved" if local else ""
    group.add_argument("--prompt-tokens", type=token_counts if local else count_up_to(MAX_TOKENS),
                       metavar="N[,N...]" if local else "N", help=f"the prompt's length in tokens (default 512){sweep}")
    group.add_argument("--gen-tokens", type=count_up_to(MAX_TOKENS), metavar="N",
                       help="tokens decoded after the prompt, each step timed (default 128)")
    if local:
        group.add_argument("--prompt-file", metavar="FILE",
                           help="the prompt's text, cut or repeated to --prompt-tokens (default: a section of the "
                           "Python language reference shipped with edgebench)")


def generation_settings(args: argparse.Namespace) -> list:
    """One GenerationSettings per prompt length asked for; none when no generation option is given (a language
    model then gets the defaults, any other model runs as usual)."""
    from edgebench.agent.engine.generate import GenerationSettings

    lengths = getattr(args, "prompt_tokens", None)
    lengths = [lengths] if isinstance(lengths, int) else lengths
    gen_tokens, prompt_file = getattr(args, "gen_tokens", None), getattr(args, "prompt_file", None)
    if lengths is None and gen_tokens is None and prompt_file is None:
        return []
    defaults = GenerationSettings()
    return [GenerationSettings(prompt_tokens=length, gen_tokens=gen_tokens or defaults.gen_tokens,
                               prompt_file=prompt_file) for length in (lengths or [defaults.prompt_tokens])]


DEFAULT_PROFILE_RUNS = 20


def add_placement_options(parser: argparse.ArgumentParser, local: bool = True) -> None:
    """Where the nodes ran and where the time goes (docs/report.md, "placement" and "ops"). ``local``: a run on this
    machine, which can also fail on placement and write the per-op CSV (a fleet job gates on delegate_coverage)."""
    group = parser.add_argument_group("placement and per-op profile")
    group.add_argument("--profile-ops", action="store_true",
                       help="after each repeat's measured phase, run the model under the runtime's own per-op "
                       "profiler and report each node's time, the sum by op type and the top 10 (the profiled runs "
                       "never count in the latency figures; the report says what profiling cost)")
    group.add_argument("--profile-runs", type=positive_int, default=DEFAULT_PROFILE_RUNS, metavar="N",
                       help=f"profiled inferences per repeat with --profile-ops (default {DEFAULT_PROFILE_RUNS})")
    if not local:
        return
    group.add_argument("--require-delegate", action="store_true",
                       help="fail (exit 7, after writing the report) unless the chain's first delegate or provider "
                       "took every node of the model (or --min-coverage of them)")
    group.add_argument("--min-coverage", type=number_in(0, 1, ""), metavar="F",
                       help="with --require-delegate: the fraction of nodes the first choice must take (default 1)")
    group.add_argument("--ops-csv", metavar="FILE",
                       help="with --profile-ops: write one row per node (name, op, where it ran, mean and median µs, "
                       "share) as CSV")


def required_coverage(args: argparse.Namespace) -> Optional[float]:
    """The fraction of nodes --require-delegate asks of the first choice, or None when nothing is required."""
    if args.min_coverage is not None and not args.require_delegate:
        raise UsageError("--min-coverage needs --require-delegate")
    return (1.0 if args.min_coverage is None else args.min_coverage) if args.require_delegate else None


def add_repeat_options(parser: argparse.ArgumentParser, gap: bool = True, interleaved: bool = False) -> None:
    group = parser.add_argument_group("repeats (each a fresh process: load, warm-up and measured phase again)")
    what = ("each candidate N times, interleaved with the others (A B A B ...), each repeat a fresh process"
            if interleaved else "the benchmark N times, each in a fresh process")
    group.add_argument("--repeats", type=count_up_to(MAX_REPEATS), metavar="N",
                       help=f"run {what}, and report every repeat and the spread between them (default "
                       f"{DEFAULT_REPEATS}{'' if interleaved else '; 1 with --sustained'})")
    if gap:
        group.add_argument("--repeat-gap", type=duration, default=0.0, metavar="SECONDS",
                           help="sleep this long between repeats (default 0; --max-start-temp applies before each "
                           "repeat)")


def add_isolation_options(parser: argparse.ArgumentParser) -> None:
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


def add_mqtt_options(parser: argparse.ArgumentParser) -> None:
    """The broker connection of the agent daemon and the collector."""
    from edgebench.agent.fleet.mqtt import DEFAULT_SESSION_EXPIRY_S

    group = parser.add_argument_group("MQTT broker")
    group.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL",
                       help="broker, mqtt://host:port or mqtts://host:port (default mqtt://127.0.0.1:1883)")
    group.add_argument("--username", help="MQTT user name (default: none, or from the URL)")
    group.add_argument("--password-file", metavar="FILE",
                       help="file holding the MQTT password (or $EDGEBENCH_MQTT_PASSWORD)")
    group.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the broker (implies TLS)")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate for TLS client authentication")
    group.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    group.add_argument("--session-expiry", type=int, default=DEFAULT_SESSION_EXPIRY_S, metavar="SECONDS",
                       help="how long the broker keeps this client's session and queued messages while it is "
                       "away (default 7 days)")


def add_server_ca_option(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """The CA that verifies an https:// collector: push, devices, jobs and gate --server (``kwargs``: e.g. a
    subcommand's default=SUPPRESS)."""
    parser.add_argument("--server-ca", metavar="FILE", help="verify an https:// collector with this CA certificate "
                        "(PEM; deploy/compose: secrets/tls/ca.crt) (default: the system's trusted CAs)", **kwargs)


# ---------------------------------------------------------------- settings objects from the options

def delegate_chain(chains: Sequence[str]) -> list[str]:
    """The one chain a single-configuration command (bench) measures; push compares several."""
    if len(chains) > 1:
        raise UsageError(f"--delegate given {len(chains)} times: bench measures one chain, tried in order "
                         "(--delegate gpu,xnnpack); to compare chains, push them (edgebench push --delegate A "
                         "--delegate B)")
    return comma_list(chains[0]) if chains else []


def runtime_options(args: argparse.Namespace, threads: Optional[int] = None):
    """The runtime's options, with ``threads`` threads where given (one count of bench's --threads list, a request
    each), else --threads."""
    from edgebench.agent.runtimes.base import RuntimeOptions

    return RuntimeOptions(threads=args.threads if threads is None else threads,
                          delegates=delegate_chain(args.delegates), providers=args.providers,
                          delegate_options=key_values(args.delegate_option, "--delegate-option"))


def repeat_count(args: argparse.Namespace, sustained: bool = False) -> int:
    """--repeats, or its default: DEFAULT_REPEATS, and 1 for a sustained run (one continuous measured phase)."""
    repeats = getattr(args, "repeats", None)
    if repeats is None:
        return 1 if sustained else DEFAULT_REPEATS
    if sustained and repeats > 1:
        raise UsageError(f"--sustained is one continuous measured phase: it cannot run with --repeats {repeats}")
    return repeats


def run_settings(args: argparse.Namespace, repeats: int = 1):
    """The run-length rules; with ``repeats`` > 1, the unset minimums get their per-repeat defaults."""
    from edgebench.agent.engine.measure import RunSettings

    single = repeats == 1
    min_runs = args.min_runs if args.min_runs is not None else SINGLE_MIN_RUNS if single else PER_REPEAT_MIN_RUNS
    min_duration = args.min_duration if args.min_duration is not None else \
        SINGLE_MIN_DURATION_S if single else PER_REPEAT_MIN_DURATION_S
    profile_runs = args.profile_runs if getattr(args, "profile_ops", False) else 0
    return RunSettings(min_runs=min_runs, min_duration_s=min_duration, max_duration_s=args.max_duration,
                       warmup_runs=args.warmup_runs, warmup_duration_s=args.warmup_duration, profile_runs=profile_runs)


def child_limits(args: argparse.Namespace, run_seconds: float):
    from edgebench.agent.engine.isolation import ChildLimits

    timeout = args.timeout if args.timeout is not None else run_seconds * 2 + 120
    return ChildLimits(timeout_s=timeout, memory_bytes=args.memory_limit,
                       rss_interval_s=args.memory_interval or None)


def physics_settings(args: argparse.Namespace):
    if not args.sensors:
        return None
    from edgebench.agent.engine.physics import PhysicsSettings

    return PhysicsSettings(rate_hz=args.sensor_rate, root=args.sensors_root, idle_s=args.idle_baseline,
                           max_start_temp_c=args.max_start_temp, cooldown_timeout_s=args.cooldown_timeout)


def mqtt_settings(args: argparse.Namespace):
    from edgebench.agent.fleet import mqtt

    return mqtt.configure(args.mqtt, username=args.username, password_file=args.password_file,
                          ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key,
                          session_expiry_s=args.session_expiry)


def add_progress_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``-q`` and ``--progress``: the progress of a long command on stderr (agent/cli/progress.py)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no table, no progress line")
    parser.add_argument("--progress", choices=("auto", "line", "json", "off"),
                        help=f"progress on stderr {what}: auto (a line on a terminal; default, off with -q), line, "
                        "json (one JSON object per update, for programs) or off")


def progress_mode(args: argparse.Namespace) -> str:
    return args.progress or ("off" if args.quiet else "auto")

