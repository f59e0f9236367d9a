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

from .errors import UsageError

DEFAULT_PATH = Path("~/.config/edgebench/config.toml")


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10 boards
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None


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


def apply_defaults(parser: argparse.ArgumentParser, command: str, explicit_path: Optional[str],
                   environ: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Set the subcommand parser's defaults from the config file and environment; return the file used."""
    actions = _settable(parser)
    values: dict[str, object] = {}
    path = config_path(explicit_path, environ)
    if path is not None:
        table = _load_toml(path).get(command, {})
        for key, value in table.items():
            dest = key.replace("-", "_")
            if dest not in actions:
                raise UsageError(f"config file {path}: [{command}] has no option {key!r}")
            values[dest] = value
    prefix = f"EDGEBENCH_{command.upper()}_"
    for name, value in environ.items():
        if name.startswith(prefix):
            dest = name[len(prefix):].lower()
            if dest not in actions:
                raise UsageError(f"environment variable {name}: {command} has no option --{dest.replace('_', '-')}")
            values[dest] = value
    for dest, value in values.items():
        action = actions[dest]
        if isinstance(action, argparse._StoreTrueAction):
            parser.set_defaults(**{dest: _as_text(value).lower() in ("1", "true", "yes", "on")})
        else:  # strings go through the option's own type conversion when argparse applies the default
            parser.set_defaults(**{dest: _as_text(value)})
    return path
