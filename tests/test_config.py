"""Option defaults from a TOML config file and EDGEBENCH_<COMMAND>_<OPTION> environment variables."""

from __future__ import annotations

import re

import pytest

from edgebench.agent.cli.config import apply_defaults
from edgebench.agent.cli.main import build_parser
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
    with pytest.raises(UsageError, match="EDGEBENCH_BENCH_SHAPE"):  # list options stay command-line only
        parse(["bench", "m.tflite"], None, {"EDGEBENCH_BENCH_SHAPE": "x=1"})


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
