"""Shared fixtures: the real model cache, a CLI runner, and tiny ONNX models built on the spot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import fetch_models  # noqa: E402

# A run's report depends on this machine's history of earlier runs (agent/engine/history.py): tests keep none, so
# no test sees another's (or the user's) runs; tests of the history give their own folder with --history.
os.environ["EDGEBENCH_BENCH_HISTORY"] = "off"

# Short runs: tests check behaviour, not speed (speed is measured in bench/). RUN_LENGTH for every command that
# measures (variants too); FAST for bench: one repeat, one child process (tests/test_repeats.py asks for more).
RUN_LENGTH = ["--min-runs", "40", "--min-duration", "0.1", "--warmup-runs", "2", "--warmup-duration", "0.05"]
FAST = [*RUN_LENGTH, "--repeats", "1"]


@pytest.fixture(scope="session")
def models() -> dict:
    """Paths of the real pretrained models, fetched once into the cache by the project's own script."""
    names = [*fetch_models.MODELS, *fetch_models.DERIVED]
    return {name: Path(path) for name, path in fetch_models.fetch(names).items()}


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr

    def json(self) -> dict:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def cli_env(extra: Optional[dict] = None) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra or {}))


def cli_argv(*args: str) -> list:
    return [sys.executable, "-m", "edgebench.agent.cli", *map(str, args)]


def run_cli(*args: str, timeout: float = 300, env: Optional[dict] = None) -> CliResult:
    proc = subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=cli_env(env))
    return CliResult(proc)


@pytest.fixture
def cli():
    return run_cli


def save_onnx(model, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_model(weights: np.ndarray, bias: np.ndarray, batch="N", opset: int = 17):
    """y = softmax(x @ W + b): a tiny float classifier with a dynamic batch dimension."""
    from onnx import TensorProto, helper, numpy_helper

    features, classes = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"),
         numpy_helper.from_array(bias.astype(np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture
def tiny_onnx(tmp_path):
    """Build a tiny linear classifier; returns (path, W, b)."""

    def build(seed: int = 0, features: int = 8, classes: int = 4, name: str = "linear.onnx", noise: float = 0.0):
        rng = np.random.default_rng(seed)
        weights = rng.normal(size=(features, classes))
        bias = rng.normal(size=classes)
        if noise:
            weights = weights + np.random.default_rng(seed + 1).normal(scale=noise, size=weights.shape)
        return save_onnx(linear_model(weights, bias), tmp_path / name), weights, bias

    return build
