"""A runtime that segfaults, aborts, hangs, runs out of memory or is OOM-killed: a clear error, and the
calling process carries on. The plugins in tests/plugins.py do these things for real in the child."""

from __future__ import annotations

import os

import pytest

from edgebench.agent.engine import bench
from edgebench.agent.engine.isolation import ChildLimits, describe_death
from edgebench.agent.engine.measure import RunSettings
from edgebench.agent.errors import ChildFailed

from .conftest import FAST


@pytest.mark.parametrize(("plugin", "needle"), [
    ("Segfault", "segmentation fault (SIGSEGV)"),
    ("Abort", "aborted (SIGABRT)"),
    ("Killed", "killed (SIGKILL)"),
    ("LoadSegfault", "while loading the model"),
])
def test_child_death_is_named(cli, tiny_onnx, plugin, needle):
    path, _, _ = tiny_onnx()
    result = cli("bench", path, *FAST, "--runtime", f"tests.plugins:{plugin}")
    assert result.code == 5, result
    assert needle in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_hang_is_killed_after_timeout(cli, tiny_onnx):
    path, _, _ = tiny_onnx()
    result = cli("bench", path, *FAST, "--runtime", "tests.plugins:Hang", "--timeout", "3")
    assert result.code == 5, result
    assert "hung" in result.err and "3s" in result.err


def test_out_of_memory_under_a_memory_limit(cli, tiny_onnx):
    path, _, _ = tiny_onnx()
    result = cli("bench", path, *FAST, "--runtime", "tests.plugins:OutOfMemory", "--memory-limit", "1500M")
    assert result.code == 5, result
    assert "ran out of memory" in result.err


def test_parent_survives_and_keeps_working(tiny_onnx):
    """Through the API, as the agent daemon will call it: the crash raises, the next run works."""
    path, _, _ = tiny_onnx()
    settings = RunSettings(min_runs=20, min_duration_s=0.05, warmup_runs=1, warmup_duration_s=0.0)
    crash = bench.BenchRequest(str(path), runtime="tests.plugins:Segfault", settings=settings,
                               limits=ChildLimits(timeout_s=60))
    with pytest.raises(ChildFailed, match="SIGSEGV"):
        bench.run(crash)
    report = bench.run(bench.BenchRequest(str(path), settings=settings, limits=ChildLimits(timeout_s=60)))
    assert report["stats"]["count"] >= 20
    assert os.getpid()  # still here


def test_describe_death_messages():
    assert "out of memory" in describe_death(-6, "measure", "terminate called after throwing std::bad_alloc")
    assert "illegal instruction" in describe_death(-4, "load", "")
    assert "exited with status 3" in describe_death(3, "load", "Traceback...\nValueError: boom")
    assert "ValueError: boom" in describe_death(3, "load", "Traceback...\nValueError: boom")
