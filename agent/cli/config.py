"""Defaults for command-line options from a TOML file and environment variables.

Precedence: command-line flag > environment variable > config file > built-in default. The file is
``--config FILE``, else ``$EDGEBENCH_CONFIG``, else ``~/.config/edgebench/config.toml`` if it exists; one table
per command (``[bench]``, ``[compare]``, ``[adb.sensors]``...) whose keys are the options' own long names
(``min-runs = 1000``, ``delegate = "gpu,xnnpack"``, ``no-sensors = true``, ``label = ["release=v1"]``).
Environment variables are ``EDGEBENCH_<COMMAND>_<OPTION>`` (``EDGEBENCH_BENCH_MIN_RUNS=1000``,
``EDGEBENCH_BENCH_NO_SENSORS=1``); a repeatable option takes whitespace-separated values there (shell quoting
for a value with spaces). Values go through the same parsing as the flags, so a bad value fails with the
flag's own message.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from edgebench.agent.cli.args import FromConfig
from edgebench.agent.errors import UsageError
from edgebench.agent.modelfile import load_toml

DEFAULT_PATH = Path("~/.config/edgebench/config.toml")
GLOBAL_DESTS = ("debug", "verbose", "config", "help", "version")  # the dispatcher's flags: never a default
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_load_toml = load_toml  # the name server/gates/rules.py still imports; edgebench.agent.modelfile.load_toml is the one


def config_path(explicit: Optional[str], environ: Mapping[str, str]) -> Optional[Path]:
    if explicit:
        return Path(explicit)
    if environ.get("EDGEBENCH_CONFIG"):
        return Path(environ["EDGEBENCH_CONFIG"])
    default = DEFAULT_PATH.expanduser()
    return default if default.is_file() else None


def is_flag(action: argparse.Action) -> bool:
    """store_true / store_false: set by ``key = true``."""
    return action.nargs == 0


def is_list(action: argparse.Action) -> bool:
    """Repeatable (append) or multi-valued (nargs="+"): a TOML array, or several values in a variable."""
    return isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")


def subparsers(parser: argparse.ArgumentParser) -> Optional[argparse._SubParsersAction]:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def option_names(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every option a key or variable may set, by each of its long names (``delegate``, ``no-sensors``). A
    value option's dest is accepted too where no option has that name (``delegates``: the old spelling)."""
    names: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in GLOBAL_DESTS or action.dest == argparse.SUPPRESS:
            continue
        names.update({option[2:]: action for option in action.option_strings if option.startswith("--")})
    for action in list(names.values()):
        if not is_flag(action):  # never for flags: "sensors = true" would turn the sensors off
            names.setdefault(action.dest.replace("_", "-"), action)
    return names


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _check_tables(document: dict, path: Sequence[str], file: Path, parents: Sequence[set[str]] = ()) -> dict:
    """The command's table; a top-level key that is not a table (``bench = 3``) can never be valid, nor can an
    option in the table of a command that has subcommands (``[dashboards] token``: it goes in [dashboards.push]),
    unless that command takes it itself (``parents``: the option names of each command above this one;
    ``[server] registry`` while ``server token list`` runs)."""
    gate = document.get("gate")
    if isinstance(gate, list) and gate and all(isinstance(rule, dict) for rule in gate):
        raise UsageError(f"config file {file} holds [[gate]] rules, not option defaults: give it to gate as "
                         f"--rules {file} (--config is the defaults file of every command)")
    for key, value in document.items():
        if not isinstance(value, dict):
            raise UsageError(f"config file {file}: {key} = {_as_text(value)!r} is not a table: options go in a "
                             f"table named after their command, e.g. [bench]")
    table = document
    for depth, name in enumerate(path[:-1], 1):
        table = table.get(name, {})
        own = parents[depth - 1] if depth <= len(parents) else set()
        for key, value in table.items():
            if not isinstance(value, dict) and key not in own:
                parent = ".".join(path[:depth])
                raise _not_an_option(file, parent, key, path[depth])
    return table.get(path[-1], {})


def _not_an_option(file: Path, table: str, key: str, subcommand: Optional[str] = None) -> UsageError:
    """``key`` in ``[table]`` is none of its command's options; ``subcommand``: the one running, below a command
    that takes no options itself (their options go in their own tables)."""
    hint = (f": {table} has subcommands, their options go in their own tables, e.g. [{table}.{subcommand}]"
            if subcommand else "")
    return UsageError(f"config file {file}: [{table}] has no option {key!r}{hint}")


def _one(action: argparse.Action, value: object, where: str) -> object:
    """One value as the flag would parse it, now, so an error names where the value came from."""
    if isinstance(value, dict):
        raise UsageError(f"{where}: a table is not a value")
    text = _as_text(value)
    try:
        converted = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise UsageError(f"{where}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def _convert(action: argparse.Action, value: object, where: str, from_environment: bool) -> object:
    if is_flag(action):
        text = _as_text(value).lower()
        if text not in _TRUE + _FALSE:
            raise UsageError(f"{where}: {_as_text(value)!r} is not a boolean (true or false)")
        return action.const if text in _TRUE else not action.const  # no-sensors = true: sensors off
    if not is_list(action):
        return _one(action, value, where)
    if isinstance(value, list):
        items = value
    elif from_environment:
        try:
            items = shlex.split(str(value))
        except ValueError as exc:
            raise UsageError(f"{where}: {exc} (values are separated by spaces, quoted as in a shell)") from None
    else:
        items = [value]
    values = [_one(action, item, where) for item in items]
    return FromConfig(values) if isinstance(action, argparse._AppendAction) else values


def _environment(environ: Mapping[str, str], path: Sequence[str]) -> dict[str, str]:
    """``EDGEBENCH_ADB_SENSORS_ADB_EXE`` -> {"adb-exe": ...} for the command path ("adb", "sensors")."""
    prefix = "EDGEBENCH_" + "_".join(name.upper().replace("-", "_") for name in path) + "_"
    return {name: value for name, value in environ.items() if name.startswith(prefix) and len(name) > len(prefix)}


def apply_defaults(parser: argparse.ArgumentParser, command: Union[str, Sequence[str]], explicit_path: Optional[str],
                   environ: Mapping[str, str] = os.environ,
                   parents: Sequence[argparse.ArgumentParser] = ()) -> Optional[Path]:
    """Set the (sub)command parser's defaults from the config file and environment; return the file used.
    ``command`` is its name, or the path of names of a subcommand (``["adb", "sensors"]``); ``parents``: the
    parsers of the commands above it, whose own options may stay in their tables."""
    path = [command] if isinstance(command, str) else list(command)
    names = option_names(parser)
    values: dict[str, object] = {}
    file = config_path(explicit_path, environ)
    table_name = ".".join(path)
    below = subparsers(parser)
    if file is not None:
        for key, value in _check_tables(load_toml(file), path, file, [set(option_names(p)) for p in parents]).items():
            if isinstance(value, dict) and below and key in below.choices:
                continue  # a subcommand's table ([server.token.list] while `server` applies its own)
            if key not in names:
                raise _not_an_option(file, table_name, key)
            values[names[key].dest] = _convert(names[key], value, f"config file {file}: [{table_name}] {key}", False)
    prefix_len = len("EDGEBENCH_" + "_".join(path) + "_")
    subcommands = tuple(name.upper().replace("-", "_") + "_" for name in (below.choices if below else ()))
    for name, value in sorted(_environment(environ, path).items()):
        key = name[prefix_len:].lower().replace("_", "-")
        if key not in names and name[prefix_len:].startswith(subcommands):
            continue  # a subcommand's (EDGEBENCH_SERVER_TOKEN_CREATE_NAME while `server` runs)
        if key not in names:
            raise UsageError(f"environment variable {name}: {' '.join(path)} has no option --{key}")
        values[names[key].dest] = _convert(names[key], value, f"environment variable {name}", True)
    for action in names.values():
        if action.dest in values:
            action.required = False  # a required option (gate --rules) may come from the file
    parser.set_defaults(**values)
    return file
