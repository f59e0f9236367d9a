"""One meaning per flag across commands: --delegate is one chain everywhere, push offers only what a fleet job
can do (and refuses the rest before uploading anything), one default job timeout."""

from __future__ import annotations

import pytest

from edgebench.agent.cli import push as push_cli
from edgebench.agent.cli.main import build_parser
from edgebench.agent.fleet.client import job_matrix
from edgebench.agent.fleet.protocol import DEFAULT_JOB_TIMEOUT_S

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: a push that tried to upload would fail with exit code 1


def test_each_delegate_is_one_chain(cli, models):
    """push: each --delegate is one configuration to compare; bench measures one configuration, so a second
    chain is refused instead of silently replacing the first."""
    args = build_parser().parse_args(["push", "m.tflite", "--delegate", "xnnpack", "--delegate", "gpu,xnnpack"])
    matrix = job_matrix(push_cli.job_options(args), ["0" * 64])
    assert matrix["delegates"] == [["xnnpack"], ["gpu", "xnnpack"]]
    result = cli("bench", models["sine_float.tflite"], "--delegate", "gpu,xnnpack", "--delegate", "cpu")
    assert result.code == 2 and "--delegate given 2 times: bench measures one chain" in result.err, result


def test_push_offers_no_memory_limit(cli):
    help_text = " ".join(cli("push", "--help").out.split())
    assert "--memory-limit" not in help_text and "--memory-interval" not in help_text
    assert "no files" in help_text
    result = cli("push", "m.onnx", "--memory-limit", "1G", "--server", UNREACHABLE)
    assert result.code == 2 and "unrecognized arguments: --memory-limit" in result.err, result


@pytest.mark.parametrize(("flags", "says"), [
    (["--input", "x=data.npy"], "--input 'x=data.npy': a fleet job generates its inputs"),
    (["--input", "data.npy"], "--input 'data.npy': a fleet job generates its inputs"),
    (["--shape", "x=1x?"], "--shape 'x=1x?': expected NAME=DIMS"),
    (["--threads", "1,four"], "--threads 1,four: expected numbers"),
    (["--label", "release"], "--label"),
])
def test_push_refuses_what_a_job_refuses_before_uploading(cli, tiny_onnx, flags, says):
    model, _, _ = tiny_onnx()
    result = cli("push", model, *flags, "--server", UNREACHABLE)
    assert result.code == 2 and says in result.err and "cannot reach the collector" not in result.err, result
    assert len(result.err.splitlines()) == 1, result


def test_push_accepts_generated_inputs():
    args = build_parser().parse_args(["push", "m.onnx", "--input", "sr=16000", "--input", "x=zeros",
                                      "--shape", "x=1x512"])
    push_cli.check_job_args(args.shape, args.input)
    assert job_matrix(push_cli.job_options(args), [])["options"]["input"] == ["sr=16000", "x=zeros"]


def test_one_default_job_timeout(cli):
    """The agent kills a job that names no timeout after DEFAULT_JOB_TIMEOUT_S; push leaves a job without one
    unless --timeout says otherwise, and says so."""
    from edgebench.agent.fleet.daemon import AgentConfig

    assert build_parser().parse_args(["agent"]).job_timeout == DEFAULT_JOB_TIMEOUT_S
    assert AgentConfig.__dataclass_fields__["default_timeout_s"].default == DEFAULT_JOB_TIMEOUT_S
    args = build_parser().parse_args(["push", "m.onnx"])
    assert "timeout_s" not in job_matrix(push_cli.job_options(args), [])["options"]
    args = build_parser().parse_args(["push", "m.onnx", "--timeout", "10m"])
    assert job_matrix(push_cli.job_options(args), [])["options"]["timeout_s"] == 600
    assert "agent's --job-timeout, 1h" in " ".join(cli("push", "--help").out.split())
