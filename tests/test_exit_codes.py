"""Every exit code docs/cli.md documents, each derived from a real command that produces it: the table below has
one row (or more) per documented code, and the documented codes and the table's must be the same set."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from .conftest import FAST, REPO, cli_argv, cli_env, linear_model, save_onnx

QUICK = (*FAST, "--no-sensors", "-q")


def documented_codes() -> set[int]:
    text = (REPO / "docs" / "cli.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}


def huge_sparse_onnx(path):
    """A 150-byte model whose one initializer is sparse: ONNX Runtime makes it dense, 1 GiB, while loading it."""
    values = numpy_helper.from_array(np.array([1.0], np.float32), "W")
    indices = numpy_helper.from_array(np.array([0], np.int64), "W_idx")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["W"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])],
        "sparse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        sparse_initializer=[helper.make_sparse_tensor(values, indices, [2**28])])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@dataclass
class Row:
    code: int
    args: Callable[[dict], list]  # the files below -> the command line
    says: str  # what stderr says


ROWS = {
    "a report is printed": Row(0, lambda f: ["bench", f["sine"], *QUICK], ""),
    "recorded board sensors": Row(0, lambda f: ["sensors", "--root", f["rpi4"]], ""),
    "the board did not cool down": Row(1, lambda f: ["bench", f["sine"], *FAST, "--sensors-root", f["jetson"],
                                                     "--max-start-temp", "40", "--cooldown-timeout", "0"],
                                       "still at 47.7 °C"),
    "a gate rule fails": Row(1, lambda f: ["gate", "--rules", f["tight_rules"], "--reports", f["report"],
                                           "--no-record"], ""),
    "a gate cannot tell a regression yet": Row(6, lambda f: ["gate", "--rules", f["regression_rules"], "--reports",
                                                              f["report"], f["candidate"], "--no-record"], ""),
    "an unknown flag": Row(2, lambda f: ["bench", f["sine"], "--bogus"], "unrecognized arguments: --bogus"),
    "sensors --root that is not there": Row(2, lambda f: ["sensors", "--root", "/nonexistent"],
                                            "--root /nonexistent is not a directory"),
    "a rules file as --config": Row(2, lambda f: ["gate", "--config", f["tight_rules"], "--reports", f["report"]],
                                    "give it to gate as --rules"),
    "a bench delegate chain given twice": Row(2, lambda f: ["bench", f["sine"], "--delegate", "cpu", "--delegate",
                                                            "xnnpack"], "bench measures one chain"),
    "a model that is not there": Row(3, lambda f: ["bench", "/nonexistent/m.onnx"], "not found"),
    "models that take different inputs": Row(3, lambda f: ["compare", f["lin"], f["sine"], "--samples", "1"],
                                             "do not take the same inputs"),
    "no delegate can run it": Row(4, lambda f: ["bench", f["sine"], *QUICK, "--delegate", "/nonexistent/libd.so"],
                                  "no delegate in the chain"),
    "the delegate did not take every node": Row(7, lambda f: ["bench", f["effnet"], *QUICK, "--require-delegate"],
                                                "--require-delegate: xnnpack took"),
    "out of memory while loading": Row(5, lambda f: ["bench", f["sparse"], *QUICK, "--memory-limit", "1G"],
                                       "ran out of memory loading the model"),
}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exit-codes")
    jetson = root / "jetson"
    shutil.copytree(REPO / "tests" / "fixtures" / "boards" / "jetson-orin-nano", jetson)
    rng = np.random.default_rng(0)
    (root / "tight.toml").write_text('[[gate]]\nmodel = "*"\nmetric = "p90_ms"\nmax = 0.5\n')
    (root / "regression.toml").write_text('[[gate]]\nmodel = "*"\nmetric = "p90_ms"\nbaseline = "v1"\n'
                                          'max_regression_pct = 5\n')
    report = {"schema": "edgebench.bench/1", "created": "2024-05-01T00:00:00Z", "model": {"name": "m.onnx"},
              "runtime": {"runtime": "onnxruntime", "requested": ["CPU"], "used": ["CPU"]},
              "labels": {"class": "ci", "release": "v1"}, "stats": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0},
              "samples": {"latency_ns": [2_000_000] * 50}}
    (root / "r.json").write_text(json.dumps(report))
    # one run a side, without repeats: one unit each, fewer than a regression needs (3)
    (root / "candidate.json").write_text(json.dumps({**report, "created": "2024-05-02T00:00:00Z",
                                                     "labels": {"class": "ci", "release": "v2"}}))
    return {"sine": models["sine_float.tflite"], "effnet": models["efficientnet_lite0_int8.tflite"],
            "rpi4": REPO / "tests" / "fixtures" / "boards" / "rpi4",
            "jetson": jetson, "tight_rules": root / "tight.toml", "report": root / "r.json",
            "regression_rules": root / "regression.toml", "candidate": root / "candidate.json",
            "lin": save_onnx(linear_model(rng.normal(size=(8, 4)), rng.normal(size=4)), root / "lin.onnx"),
            "sparse": huge_sparse_onnx(root / "sparse.onnx")}


def test_the_table_covers_every_documented_code():
    documented = documented_codes()
    assert documented >= {0, 1, 2, 3, 4, 5, 6, 7, 130}
    assert {row.code for row in ROWS.values()} | {130} == documented  # 130: test_interrupted below


@pytest.mark.parametrize("name", list(ROWS))
def test_exit_code(cli, files, name):
    row = ROWS[name]
    result = cli(*row.args(files), timeout=300)
    assert result.code == row.code, result
    assert row.says in result.err, result
    if row.code:
        assert "Traceback" not in result.err and "internal error" not in result.err, result


def test_interrupted(files):
    """130: Ctrl-C (SIGINT) while the measured phase runs; the bench's own progress event says when. The child gets
    SIGINT's default disposition, as a command typed at a terminal has: started from a background job of a
    non-interactive shell (a CI runner's ``make test &``), it would inherit SIGINT ignored and, rightly, not stop."""
    proc = subprocess.Popen(cli_argv("bench", files["sine"], "--no-sensors", "--min-duration", "10m", "--max-duration",
                                     "10m", "--progress", "json", "-q"),
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    phases = []
    for line in proc.stderr:
        phases.append(json.loads(line)["phase"])
        if phases[-1] == "measure":
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130 and "interrupted" in rest, (phases, rest)
