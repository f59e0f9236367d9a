"""Option defaults from a TOML config file and EDGEBENCH_<COMMAND>_<OPTION> environment variables."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from edgebench.agent.cli.config import GLOBAL_DESTS, apply_defaults, is_flag, is_list, option_names
from edgebench.agent.cli.main import all_commands, build_parser, main
from edgebench.agent.errors import UsageError


def parse(argv, config=None, environ=None):
    parser = build_parser()
    apply_defaults(parser.parse_known_args(argv)[0].subparsers["bench"], "bench", config, environ or {})
    return parser.parse_args(argv)


def test_precedence_flag_over_env_over_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[bench]\nmin-runs = 77\nmin-duration = "250ms"\nthreads = 2\nquiet = true\n')
    args = parse(["bench", "m.tflite"], str(config))
    assert (args.min_runs, args.min_duration, args.threads, args.quiet) == (77, 0.25, 2, True)
    args = parse(["bench", "m.tflite"], str(config), {"EDGEBENCH_BENCH_MIN_RUNS": "55"})
    assert args.min_runs == 55 and args.threads == 2
    args = parse(["bench", "m.tflite", "--min-runs", "9"], str(config), {"EDGEBENCH_BENCH_MIN_RUNS": "55"})
    assert args.min_runs == 9


def test_default_file_location_from_environment(tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text("[bench]\nwarmup-runs = 3\n")
    assert parse(["bench", "m.tflite"], None, {"EDGEBENCH_CONFIG": str(config)}).warmup_runs == 3


def test_unknown_keys_and_bad_files_are_named(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[bench]\nmin-runz = 3\n")
    with pytest.raises(UsageError, match="has no option 'min-runz'"):
        parse(["bench", "m.tflite"], str(config))
    config.write_text("[bench\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        parse(["bench", "m.tflite"], str(config))
    with pytest.raises(UsageError, match="EDGEBENCH_BENCH_SHAPES: bench has no option --shapes"):
        parse(["bench", "m.tflite"], None, {"EDGEBENCH_BENCH_SHAPES": "x=1"})


def test_bad_value_fails_like_the_flag(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[bench]\nmin-runs = -4\n")
    result = cli("--config", config, "bench", "m.tflite")
    assert result.code == 2 and "'-4' is not a positive integer" in result.err


@pytest.mark.parametrize(("text", "message"), [
    ("bench = 3\n", "bench = '3' is not a table"),
    ('[bench]\nquiet = "maybe"\n', "[bench] quiet: 'maybe' is not a boolean"),
    ('[bench]\nprogress = "loud"\n', "[bench] progress: 'loud' is not one of"),
    ("[bench]\nsensor-rate = nan\n", "[bench] sensor-rate: 'nan' is not a number"),
])
def test_wrong_types_name_file_table_and_key(tmp_path, text, message):
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=re.escape(f"config file {config}: {message}")):
        parse(["bench", "m.tflite"], str(config))


def test_binary_config_is_not_toml(tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UsageError, match="not valid TOML: not UTF-8"):
        parse(["bench", "m.tflite"], str(config))


def test_environment_booleans_are_strict():
    assert parse(["bench", "m.tflite"], None, {"EDGEBENCH_BENCH_QUIET": "yes"}).quiet is True
    assert parse(["bench", "m.tflite"], None, {"EDGEBENCH_BENCH_QUIET": "off"}).quiet is False
    with pytest.raises(UsageError, match="EDGEBENCH_BENCH_QUIET: 'sure' is not a boolean"):
        parse(["bench", "m.tflite"], None, {"EDGEBENCH_BENCH_QUIET": "sure"})


# ---------------------------------------------------------------- every option, under its own name

# the first one an option's own parser takes is its sample value
SAMPLES = ("3", "2G", "x=1", "0.0.0.0:9", "mqtt://broker:1883", "0.5")


def sample(action, tmp_path) -> tuple[str, object]:
    """A value the option accepts, as text and as parsed (a directory for the options that want one)."""
    if action.choices is not None:
        text = str(next(iter(action.choices)))
        return text, text
    for text in (*SAMPLES, str(tmp_path)):
        try:
            return text, action.type(text) if action.type else text
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
    raise AssertionError(f"no sample value for {action.option_strings}")


def expected(action, parsed):
    return [parsed] if is_list(action) else parsed


def commands_with_options():
    """Every (sub)command of the real parser that has options of its own, with its positional arguments."""
    for path, parser in all_commands(build_parser()):
        names = {name: action for name, action in option_names(parser).items() if f"--{name}" in action.option_strings}
        if names:
            positionals = ["x" for a in parser._actions if not a.option_strings and a.nargs != argparse.PARSER]
            yield pytest.param(path, positionals, id=" ".join(path))


def settable_options(path):
    """The command's parser (fresh: defaults are set on it) and its options by their own long names."""
    parser = dict(all_commands(build_parser()))[path]
    names = {name: action for name, action in option_names(parser).items() if f"--{name}" in action.option_strings}
    return parser, names


@pytest.mark.parametrize(("path", "positionals"), list(commands_with_options()))
@pytest.mark.parametrize("source", ["file", "environment"])
def test_every_option_is_settable_under_its_own_name(tmp_path, path, positionals, source):
    """Each option that takes a value and each flag (store_true and store_false alike), set from the file or
    the environment under the option's own long name, reaches the parsed arguments: required options included
    (the command line below names none), repeatable ones as lists."""
    parser, names = settable_options(path)
    options = [a for a in parser._actions if a.option_strings and a.dest not in GLOBAL_DESTS]
    assert set(options) == set(names.values()), "an option without a long name cannot be configured"
    config, environ, wanted = tmp_path / "c.toml", {}, {}
    lines = [f"[{'.'.join(path)}]"]
    for name, action in names.items():
        if is_flag(action):
            text, value = "true", action.const  # no-sensors = true: sensors off
        else:
            text, parsed = sample(action, tmp_path)
            value = expected(action, parsed)
        wanted[action.dest] = value
        lines.append(f"{name} = {'true' if text == 'true' else json.dumps(text)}")
        environ["EDGEBENCH_" + "_".join(path).upper().replace("-", "_") + "_" + name.upper().replace("-", "_")] = text
    config.write_text("\n".join(lines) + "\n")
    if source == "file":
        apply_defaults(parser, path, str(config), {})
    else:
        apply_defaults(parser, path, None, environ)
    args = parser.parse_args(positionals)
    assert {dest: getattr(args, dest) for dest in wanted} == wanted


@pytest.mark.parametrize(("path", "positionals"), list(commands_with_options()))
def test_an_unknown_key_is_one_clear_error(tmp_path, path, positionals):
    parser, _ = settable_options(path)
    config = tmp_path / "c.toml"
    config.write_text(f"[{'.'.join(path)}]\nno-such-option = 1\n")
    with pytest.raises(UsageError) as info:
        apply_defaults(parser, path, str(config), {})
    assert str(info.value) == f"config file {config}: [{'.'.join(path)}] has no option 'no-such-option'"
    variable = "EDGEBENCH_" + "_".join(path).upper().replace("-", "_") + "_NO_SUCH_OPTION"
    with pytest.raises(UsageError) as info:
        apply_defaults(parser, path, None, {variable: "1"})
    assert str(info.value) == f"environment variable {variable}: {' '.join(path)} has no option --no-such-option"


def test_the_documented_example_and_old_spellings(tmp_path):
    """docs/cli.md's example; the dests that were the only working keys before (delegates, runtimes) still work."""
    config = tmp_path / "config.toml"
    config.write_text('[bench]\nmin-runs = 1000\nmin-duration = "5s"\nthreads = 4\ndelegate = "gpu,xnnpack"\n'
                      'no-sensors = true\nlabel = ["release=v1", "class=rpi5"]\n')
    args = parse(["bench", "m.tflite"], str(config))
    assert (args.min_runs, args.min_duration, args.threads, args.delegates, args.sensors, args.label) == \
        (1000, 5.0, 4, ["gpu,xnnpack"], False, ["release=v1", "class=rpi5"])
    environ = {"EDGEBENCH_BENCH_DELEGATES": "xnnpack", "EDGEBENCH_BENCH_NO_SENSORS": "0"}
    args = parse(["bench", "m.tflite"], None, environ)
    assert args.delegates == ["xnnpack"] and args.sensors is True


def test_the_example_in_the_docs_loads(tmp_path):
    from .conftest import REPO

    section = (REPO / "docs" / "cli.md").read_text().split("## Configuration file and environment", 1)[1]
    config = tmp_path / "config.toml"
    config.write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    for command, argv in ((["bench"], ["bench", "m.onnx"]), (["variants"], ["variants", "m.onnx"]),
                          (["adb", "sensors"], ["adb", "sensors", "--serial", "S"])):
        parser = build_parser()
        apply_defaults(dict(all_commands(parser))[tuple(command)], command, str(config), {})
        args = parser.parse_args(argv)
    assert args.adb_exe == "/opt/platform-tools/adb"


def test_repeatable_options_from_the_environment_and_the_command_line(tmp_path):
    """Whitespace-separated in a variable (shell quoting for spaces); a flag on the command line replaces the
    configured list instead of adding to it: flag > environment > file."""
    environ = {"EDGEBENCH_BENCH_INPUT": "x=zeros 'y=my file.npy'", "EDGEBENCH_BENCH_LABEL": "a=1 b=2"}
    args = parse(["bench", "m.tflite"], None, environ)
    assert args.input == ["x=zeros", "y=my file.npy"] and args.label == ["a=1", "b=2"]
    args = parse(["bench", "m.tflite", "--label", "c=3", "--label", "d=4"], None, environ)
    assert args.label == ["c=3", "d=4"] and args.input == ["x=zeros", "y=my file.npy"]


def test_global_flags_work_after_the_command(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("[bench]\nmin-runs = -4\n")
    parser = build_parser()
    args = parser.parse_args(["bench", "m.onnx", "--debug", "-v", "--config", str(config)])
    assert (args.debug, args.verbose, args.config) == (True, True, str(config))
    args = parser.parse_args(["--debug", "bench", "m.onnx"])  # absent after the command: not undone
    assert args.debug is True and args.verbose is False
    assert main(["bench", "m.onnx", "--config", str(config)]) == 2  # the file after the command is read
    assert "[bench] min-runs: '-4' is not a positive integer" in capsys.readouterr().err


def test_gate_rules_are_not_a_defaults_file(cli, tmp_path):
    """gate's rules file is --rules; --config names the defaults file, as everywhere, and a rules file given
    as --config says so."""
    rules = tmp_path / "gates.toml"
    rules.write_text('[[gate]]\nmodel = "*"\nmetric = "p90_ms"\nmax = 5\n')
    result = cli("gate", "--config", rules, "--reports", tmp_path / "r.json")
    assert result.code == 2 and f"holds [[gate]] rules, not option defaults: give it to gate as --rules {rules}" \
        in result.err, result
    config = tmp_path / "config.toml"
    config.write_text(f'[gate]\nrules = "{rules}"\n')
    result = cli("--config", config, "gate")  # --rules from the file satisfies "required"
    assert result.code == 2 and "give the results to judge" in result.err, result


def test_a_command_with_options_and_subcommands_keeps_both(tmp_path, monkeypatch):
    """`server` takes options and has subcommands (`token`, `copy-registry`): its own options may stay in [server]
    while a subcommand runs, and a subcommand's variables are not the parent's unknown options."""
    from edgebench.agent.cli.main import build_parser
    from edgebench.agent.cli.main import parse as main_parse

    config = tmp_path / "config.toml"
    config.write_text('[server]\nregistry = "postgresql://db/x"\n[server.token.list]\njson = "-"\n'
                      '[server.copy-registry]\non-conflict = "keep"\n')
    monkeypatch.setenv("EDGEBENCH_SERVER_TOKEN_CREATE_NAME", "ci")
    monkeypatch.setenv("EDGEBENCH_SERVER_COPY_REGISTRY_FROM", "old.sqlite3")
    args = main_parse(build_parser(), ["--config", str(config), "server", "token", "list"])
    assert args.json == "-" and args.registry == "postgresql://db/x"
    args = main_parse(build_parser(), ["--config", str(config), "server", "copy-registry", "--to", "postgresql://db/y"])
    assert (args.source, args.on_conflict) == ("old.sqlite3", "keep")
    args = main_parse(build_parser(), ["--config", str(config), "server"])
    assert args.registry == "postgresql://db/x"
    config.write_text("[dashboards]\ntoken = 3\n")  # dashboards takes no option itself: still refused
    with pytest.raises(UsageError, match=r"\[dashboards\] has no option 'token'"):
        main_parse(build_parser(), ["--config", str(config), "dashboards", "push"])
    monkeypatch.setenv("EDGEBENCH_SERVER_REGISTRY_TYPO", "x")
    with pytest.raises(UsageError, match="EDGEBENCH_SERVER_REGISTRY_TYPO: server has no option --registry-typo"):
        main_parse(build_parser(), ["server"])
