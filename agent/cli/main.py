"""The ``edgebench`` command line: the dispatcher.

Start-up stays cheap: only argparse and the error types are imported here; each subcommand imports its
module (and numpy, and a runtime) when it runs, so ``edgebench --help`` works on a board in milliseconds.
Each command lives in its own module of this package (the collector's ``server`` and ``gate`` and the
``dashboards`` command register from their own packages, by name, where they are installed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

from edgebench.agent import __version__
from edgebench.agent.cli import agent, bench, compare, diff, push, report, sensors, variants
from edgebench.agent.cli.args import Parser
from edgebench.agent.cli.config import subparsers
from edgebench.agent.errors import EXIT_CHILD_FAILED, EXIT_FAILURE, EdgebenchError, UsageError, first_line

log = logging.getLogger("edgebench")

# Registered by name: the agent package never imports server code; a board without the server or dashboards
# extra simply has no such command.
EXTERNAL_COMMANDS = ("edgebench.server.cli", "edgebench.dashboards.commands")


def add_external_commands(commands) -> None:
    for module_name in EXTERNAL_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not installed here
            raise
        module.register(commands)


def add_global_options(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """--debug, -v and --config, before the command or after it (``edgebench bench m.onnx --debug``). After the
    command they are SUPPRESSed when absent, so they never undo the same flag given before it."""
    default = {"default": argparse.SUPPRESS} if after_command else {}
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks", **default)
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging", **default)
    parser.add_argument("--config", metavar="FILE", help="TOML file with option defaults per command "
                        "(default: $EDGEBENCH_CONFIG or ~/.config/edgebench/config.toml; see docs/cli.md)", **default)


def all_commands(parser: argparse.ArgumentParser, path: tuple = ()) -> Iterator[tuple[tuple, argparse.ArgumentParser]]:
    """Every (sub)command below ``parser``, as (("adb", "sensors"), its parser), parents before children."""
    action = subparsers(parser)
    for name, child in (action.choices.items() if action else ()):
        yield (*path, name), child
        yield from all_commands(child, (*path, name))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgebench", description="Benchmark AI models on edge boards: latency, memory and accuracy drift.")
    parser.add_argument("--version", action="version", version=f"edgebench {__version__}")
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(subparsers=commands.choices)  # for callers that apply defaults to one command's parser
    for module in (bench, compare, diff, report, variants, sensors, agent, push):
        module.register(commands)
    add_external_commands(commands)
    adb = commands.add_parser("adb", help="work with an Android device from this host over adb")
    sensors.register(adb.add_subparsers(dest="adb_command", metavar="COMMAND", required=True), adb=True)
    for _, command in all_commands(parser):
        add_global_options(command, after_command=True)
    return parser


def command_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, Parser]]:
    """The chosen command and its subcommands with their parsers: [("adb", ...), ("sensors", ...)]."""
    chain = []
    while True:
        action = subparsers(parser)
        name = getattr(args, action.dest, None) if action else None
        if name not in getattr(action, "choices", {}):
            return chain
        parser = action.choices[name]
        chain.append((name, parser))


def configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def error_line(exc: BaseException) -> str:
    """One line: a message that spans several (a library's) keeps its first; --debug shows the rest."""
    line = first_line(exc)
    return line if line == str(exc).strip() else f"{line} [...] (the rest with --debug)"


@contextmanager
def nothing_required(parser: argparse.ArgumentParser) -> Iterator[None]:
    """For the first look at the arguments (which command, which config file): a required option may still come
    from the config file (gate's --rules), so nothing is required yet."""
    required = [action for command in (parser, *(p for _, p in all_commands(parser)))
                for action in command._actions if action.required]
    for action in required:
        action.required = False
    try:
        yield
    finally:
        for action in required:
            action.required = True


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Arguments with defaults from the config file and the environment (docs/cli.md)."""
    from edgebench.agent.cli.config import apply_defaults, option_names

    with nothing_required(parser):
        first, _ = parser.parse_known_args(argv)
    chain = command_path(parser, first)
    below = subparsers(chain[-1][1]) if chain else None
    if chain and (below is None or not below.required):  # `edgebench adb` alone: argparse asks for a subcommand
        names, parsers = [name for name, _ in chain], [p for _, p in chain]
        for depth in range(1, len(chain) + 1):  # a parent's own options too (`server token list`: [server] registry)
            if depth == len(chain) or option_names(parsers[depth - 1]):
                apply_defaults(parsers[depth - 1], names[:depth], first.config, parents=parsers[:depth - 1])
    args, extra = parser.parse_known_args(argv)
    if extra:
        (chain[-1][1] if chain else parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except UsageError as exc:
        print(f"edgebench: error: {error_line(exc)}", file=sys.stderr)
        return exc.exit_code
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
