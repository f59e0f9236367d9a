"""Defaults for command-line options from a TOML file and environment variables.

Precedence: command-line flag > environment variable > config file > built-in default. The file is
``--config FILE``, else ``$EDGEBENCH_CONFIG``, else ``~/.config/edgebench/config.toml`` if it exists; one table
per command (``[bench]``, ``[compare]``...) whose keys are option names (``min-runs = 1000``). Environment
variables are ``EDGEBENCH_<COMMAND>_<OPTION>`` (``EDGEBENCH_BENCH_MIN_RUNS=1000``). Values go through the
same parsing as the flags, so a bad value fails with the flag's own message.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Optional

from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import file_problem

DEFAULT_PATH = Path("~/.config/edgebench/config.toml")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _load_toml(path: Path, what: str = "config file") -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10 boards
        import tomli as tomllib
    problem = file_problem(path)  # a FIFO would block open() forever
    if problem:
        raise UsageError(f"{what} {path} {problem}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes before it parses: a binary file fails here
        raise UsageError(f"{what} {path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None


def config_path(explicit: Optional[str], environ: Mapping[str, str]) -> Optional[Path]:
    if explicit:
        return Path(explicit)
    if environ.get("EDGEBENCH_CONFIG"):
        return Path(environ["EDGEBENCH_CONFIG"])
    default = DEFAULT_PATH.expanduser()
    return default if default.is_file() else None


def _settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Options that take one value (append/list flags stay command-line only), by dest."""
    return {a.dest: a for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._AppendAction)
            and (a.nargs is None or isinstance(a, argparse._StoreTrueAction))}


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _command_table(document: dict, command: str, path: Path) -> dict:
    """The command's table; a top-level key that is not a table (``bench = 3``) can never be valid."""
    for key, value in document.items():
        if not isinstance(value, dict):
            raise UsageError(f"config file {path}: {key} = {_as_text(value)!r} is not a table: options go in a "
                             f"table named after their command, e.g. [bench]")
    return document.get(command, {})


def _convert(action: argparse.Action, value: object, where: str) -> object:
    """The value as the flag would parse it, now, so an error names where the value came from."""
    text = _as_text(value)
    if isinstance(action, argparse._StoreTrueAction):
        if text.lower() not in _TRUE + _FALSE:
            raise UsageError(f"{where}: {text!r} is not a boolean (true or false)")
        return text.lower() in _TRUE
    try:
        converted = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise UsageError(f"{where}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def apply_defaults(parser: argparse.ArgumentParser, command: str, explicit_path: Optional[str],
                   environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Set the subcommand parser's defaults from the config file and environment; return the file used."""
    actions = _settable(parser)
    values: dict[str, object] = {}
    path = config_path(explicit_path, environ)
    if path is not None:
        table = _command_table(_load_toml(path), command, path)
        for key, value in table.items():
            dest = key.replace("-", "_")
            if dest not in actions:
                raise UsageError(f"config file {path}: [{command}] has no option {key!r}")
            values[dest] = _convert(actions[dest], value, f"config file {path}: [{command}] {key}")
    prefix = f"EDGEBENCH_{command.upper()}_"
    for name, value in environ.items():
        if name.startswith(prefix):
            dest = name[len(prefix):].lower()
            if dest not in actions:
                raise UsageError(f"environment variable {name}: {command} has no option --{dest.replace('_', '-')}")
            values[dest] = _convert(actions[dest], value, f"environment variable {name}")
    parser.set_defaults(**values)
    return path
