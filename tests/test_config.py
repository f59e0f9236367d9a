"""Option defaults from a TOML config file and EDGEBENCH_<COMMAND>_<OPTION> environment variables."""

from __future__ import annotations

import pytest

from edgebench.agent.cli import build_parser
from edgebench.agent.config import apply_defaults
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
