"""Bad input across every command, table-driven: one line on stderr naming the problem, a documented exit
code, never a traceback or an internal error. tests/test_bad_input.py has the model-file basics (missing,
directory, empty, random bytes, truncated real models, .npy misfits); this matrix covers the rest.

Each case runs the real CLI in a subprocess. Placeholders in arguments name files made once per module
({lin}: a tiny float ONNX classifier, {custom}: an ONNX with an unregistered op, {fifo}, {dir}, ...) or, for
{tmp}, files a case writes into its own folder first. Nothing here benchmarks for long: most cases fail at
argument parsing, the rest when the model is described.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pytest
from onnx import TensorProto, helper

from .conftest import linear_model, save_onnx

USAGE, BAD_INPUT, RUNTIME, MISSING = 2, 3, 5, 2  # docs/cli.md; gate: 2 is "data missing" as well
ONE_LINE = re.compile(r"^edgebench( [a-z]+)*: error: \S")
FAST_ARGS = ("--min-runs", "5", "--min-duration", "0", "--warmup-runs", "1", "--warmup-duration", "0",
             "--no-sensors")
RULE = '[[gate]]\nmodel = "*"\nmetric = "p90_ms"\nmax = 5\n'


@dataclass
class Case:
    args: tuple
    code: int
    needles: tuple
    write: dict = field(default_factory=dict)  # file name -> str or bytes, written into {tmp} first
    env: dict = field(default_factory=dict)


def case(case_id: str, *args: str, code: int = USAGE, needles: tuple = (), write: Optional[dict] = None,
         env: Optional[dict] = None, marks=()):
    return pytest.param(Case(args, code, needles, write or {}, env or {}), id=case_id, marks=marks)


def report(**changes) -> str:
    """A minimal bench report as JSON; ``stats__p90_ms=nan`` sets report["stats"]["p90_ms"]."""
    document = {"schema": "edgebench.bench/1", "created": "2024-05-01T00:00:00Z", "model": {"name": "m.onnx"},
                "runtime": {"runtime": "onnxruntime", "requested": ["CPU"], "used": ["CPU"]},
                "stats": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0}, "labels": {"class": "ci"},
                "samples": {"latency_ns": [2_000_000] * 50}}
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = document
        for parent in parents:
            node = node[parent]
        node[last] = value
    return json.dumps(document)


def gate_case(case_id: str, rules, needles: tuple, reports: str = report(), code: int = USAGE):
    return case(case_id, "gate", "--rules", "{tmp}/g.toml", "--reports", "{tmp}/r.json", "--no-record",
                code=code, needles=needles, write={"g.toml": rules, "r.json": reports})


def config_case(case_id: str, text, needles: tuple, *command: str):
    return case(case_id, "--config", "{tmp}/c.toml", *(command or ("bench", "{lin}")), needles=needles,
                write={"c.toml": text})


ROOT_ONLY_PERMISSIONS = pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")

NUMERIC_FLAGS = [
    # (flag, bad value, what the message says)
    ("--threads", "abc", "not a positive integer"), ("--threads", "0", "not a positive integer"),
    ("--threads", "-2", "not a positive integer"), ("--threads", "1.5", "not a positive integer"),
    ("--threads", "99999", "the most accepted"), ("--threads", "nan", "not a positive integer"),
    ("--seed", "-1", "not an integer from 0"), ("--seed", "abc", "not an integer"),
    ("--seed", "1.5", "not an integer"), ("--seed", "4294967296", "not an integer from 0"),
    ("--min-runs", "0", "not a positive integer"), ("--min-runs", "inf", "not a positive integer"),
    ("--min-runs", "1e3", "not a positive integer"), ("--min-runs", "10000000000", "the most accepted"),
    ("--warmup-runs", "-1", "not an integer from 0"), ("--warmup-runs", "x", "not an integer"),
    ("--min-duration", "-1", "not a duration"), ("--min-duration", "nan", "not a duration"),
    ("--min-duration", "inf", "not a duration"), ("--min-duration", "99999999h", "longer than 720h"),
    ("--max-duration", "0", "not a positive duration"), ("--max-duration", "nan", "not a duration"),
    ("--warmup-duration", "1e400", "not a duration"),
    ("--timeout", "0", "not a positive duration"), ("--timeout", "-1", "not a duration"),
    ("--timeout", "9999999999", "longer than 720h"),
    ("--memory-limit", "0", "less than 1M"), ("--memory-limit", "512", "less than 1M"),
    ("--memory-limit", "nan", "not a size"), ("--memory-limit", "1X", "not a size"),
    ("--memory-limit", "99999999T", "more than 1024T"), ("--memory-limit", "9" * 400, "more than 1024T"),
    ("--memory-interval", "nan", "not a duration"), ("--memory-interval", "99999999999", "longer than 720h"),
    ("--sensor-rate", "nan", "not a number from 0.01"), ("--sensor-rate", "inf", "not a number from 0.01"),
    ("--sensor-rate", "0", "not a number from 0.01"), ("--sensor-rate", "-1", "not a number from 0.01"),
    ("--sensor-rate", "1e9", "not a number from 0.01"), ("--sensor-rate", "fast", "not a number"),
    ("--max-start-temp", "nan", "not a number from -50"), ("--max-start-temp", "inf", "not a number from -50"),
    ("--max-start-temp", "1e9", "not a number from -50"), ("--max-start-temp", "hot", "not a number"),
    ("--cooldown-timeout", "nan", "not a duration"), ("--idle-baseline", "999999h", "longer than 720h"),
    ("--sustained", "0", "not a positive duration"), ("--sustained", "nan", "not a duration"),
    ("--window", "0", "not a positive duration"),
    ("--sensors-root", "/nonexistent-root", "not a directory"), ("--progress", "loud", "invalid choice"),
]

CASES = [
    # ------------------------------------------------ bench: every numeric flag, as argparse sees it
    *(case(f"bench{flag}={value[:12]}", "bench", "{lin}", flag, value, needles=(flag, reason))
      for flag, value, reason in NUMERIC_FLAGS),
    case("bench-flag-without-value", "bench", "{lin}", "--min-runs", needles=("--min-runs", "expected one")),
    case("bench-unknown-flag", "bench", "{lin}", "--bogus", needles=("unrecognized arguments: --bogus",)),
    case("bench-no-model", "bench", needles=("model",)),
    case("bench-window-without-sustained", "bench", "{lin}", "--window", "5s", needles=("--window", "--sustained")),
    case("bench-window-longer-than-run", "bench", "{lin}", "--sustained", "2s", "--window", "5s",
         needles=("--window", "longer than --sustained")),
    case("bench-sensors-root-is-a-file", "bench", "{lin}", "--sensors-root", "{file}", needles=("not a directory",)),
    case("bench-label-without-value", "bench", "{lin}", "--label", "release", needles=("--label", "KEY=VALUE")),
    case("bench-delegate-option-without-value", "bench", "{lin}", "--delegate-option", "x",
         needles=("--delegate-option",)),
    # a runtime given what it has no use for: refused, not silently ignored (it would measure something else)
    case("bench-onnx-given-a-delegate", "bench", "{lin}", *FAST_ARGS, "--delegate", "gpu",
         needles=("onnxruntime takes execution providers", "--delegate gpu")),
    case("bench-onnx-unknown-provider", "bench", "{lin}", *FAST_ARGS, "--providers", "foo,CPU",
         needles=("unknown execution provider 'foo'", "cuda", "this build has: ")),
    case("bench-onnx-given-a-delegate-option", "bench", "{lin}", *FAST_ARGS, "--delegate-option", "k=v",
         needles=("onnxruntime takes execution providers", "--delegate-option")),
    case("bench-tflite-given-providers", "bench", "{sine}", *FAST_ARGS, "--providers", "CUDA",
         needles=("litert takes delegates", "--providers CUDA")),
    case("bench-tflite-unknown-delegate", "bench", "{sine}", *FAST_ARGS, "--delegate", "npu",
         needles=("unknown TFLite delegate 'npu'", "xnnpack")),
    case("bench-tflite-delegate-option-without-external", "bench", "{sine}", *FAST_ARGS, "--delegate-option",
         "k=v", needles=("--delegate-option is for external delegates", "xnnpack")),
    case("unknown-command", "benhc", needles=("invalid choice", "benhc")),
    # ------------------------------------------------ bench: model files that are not models
    case("model-fifo", "bench", "{fifo}", code=BAD_INPUT, needles=("fifo", "not a regular file", "FIFO")),
    case("model-char-device", "bench", "/dev/null", code=BAD_INPUT, needles=("/dev/null", "character device")),
    case("model-symlink-loop", "bench", "{loop}", code=BAD_INPUT, needles=("loop.onnx", "cannot be read")),
    case("model-name-too-long", "bench", "{tmp}/" + "m" * 300 + ".onnx", code=BAD_INPUT,
         needles=("cannot be read", "too long")),
    case("model-under-a-file", "bench", "{file}/model.onnx", code=BAD_INPUT, needles=("not found", "model.onnx")),
    case("model-unreadable", "bench", "{unreadable}", code=BAD_INPUT, needles=("cannot be read",),
         marks=ROOT_ONLY_PERMISSIONS),
    case("model-onnx-tag-then-garbage", "bench", "{tmp}/junk.onnx", code=BAD_INPUT,
         needles=("cannot load the model",), write={"junk.onnx": b"\x08" + bytes(range(256)) * 4}),
    case("model-truncated-tiny-onnx", "bench", "{half}", code=BAD_INPUT, needles=("cannot load the model",)),
    case("model-tflite-header-only", "bench", "{tmp}/head.tflite", code=BAD_INPUT,
         needles=("truncated TFLite",), write={"head.tflite": b"\xff\x00\x00\x00TFL3" + bytes(24)}),
    # ------------------------------------------------ bench: --shape and --input
    case("shape-without-equals", "bench", "{lin}", *FAST_ARGS, "--shape", "x", needles=("--shape", "NAME=VALUE")),
    case("shape-without-name", "bench", "{lin}", *FAST_ARGS, "--shape", "=1x8", needles=("--shape", "NAME=VALUE")),
    case("shape-without-dims", "bench", "{lin}", *FAST_ARGS, "--shape", "x=", needles=("--shape", "NAME=VALUE")),
    case("shape-trailing-x", "bench", "{lin}", *FAST_ARGS, "--shape", "x=1x8x", needles=("--shape", "integers")),
    case("shape-float-dim", "bench", "{lin}", *FAST_ARGS, "--shape", "x=1.5x8", needles=("--shape", "integers")),
    case("shape-negative-dim", "bench", "{lin}", *FAST_ARGS, "--shape", "x=-1x8", needles=("--shape", "negative")),
    case("shape-nan", "bench", "{lin}", *FAST_ARGS, "--shape", "x=nan", needles=("--shape", "integers")),
    case("shape-huge-bench", "bench", "{lin}", *FAST_ARGS, "--shape", "x=100000x100000",
         needles=("--shape x=100000x100000", "more than one input may hold")),
    case("shape-huge-dim", "bench", "{lin}", *FAST_ARGS, "--shape", "x=99999999999999999999x8",
         needles=("--shape", "more than one input may hold")),
    case("shape-huge-bytes-float32", "bench", "{lin}", *FAST_ARGS, "--shape", "x=100000000x8",
         needles=("--shape x=100000000x8", "float32", "more than one input may hold")),
    case("input-without-value", "bench", "{lin}", *FAST_ARGS, "--input", "x=", needles=("--input", "NAME=SOURCE")),
    case("input-without-name", "bench", "{lin}", *FAST_ARGS, "--input", "=5", needles=("--input", "NAME=SOURCE")),
    case("input-nan", "bench", "{lin}", *FAST_ARGS, "--input", "x=nan", needles=("--input", "finite")),
    case("input-inf", "bench", "{lin}", *FAST_ARGS, "--input", "x=-inf", needles=("--input", "finite")),
    case("input-overflow", "bench", "{lin}", *FAST_ARGS, "--input", "x=1e999", needles=("--input", "finite")),
    case("input-float32-overflow", "bench", "{lin}", *FAST_ARGS, "--input", "x=1e300", code=BAD_INPUT,
         needles=("--input", "too large", "float32")),
    case("input-int8-out-of-range", "bench", "{int8}", *FAST_ARGS, "--input", "x=300", code=BAD_INPUT,
         needles=("--input x=300", "int8", "-128 to 127")),
    case("input-int8-fraction", "bench", "{int8}", *FAST_ARGS, "--input", "x=0.5", code=BAD_INPUT,
         needles=("--input x=0.5", "int8")),
    case("input-npy-missing", "bench", "{lin}", *FAST_ARGS, "--input", "x={tmp}/none.npy", code=BAD_INPUT,
         needles=("none.npy", "not found")),
    case("input-npy-fifo", "bench", "{lin}", *FAST_ARGS, "--input", "x={fifo}", code=BAD_INPUT,
         needles=("fifo", "not a regular file")),
    case("input-npy-directory", "bench", "{lin}", *FAST_ARGS, "--input", "x={dir}", code=BAD_INPUT,
         needles=("not a regular file", "directory")),
    case("input-npy-empty", "bench", "{lin}", *FAST_ARGS, "--input", "x={tmp}/e.npy", code=BAD_INPUT,
         needles=("e.npy", "not a readable .npy"), write={"e.npy": b""}),
    case("input-npy-truncated", "bench", "{lin}", *FAST_ARGS, "--input", "x={cut_npy}", code=BAD_INPUT,
         needles=("cut.npy", "not a readable .npy")),
    case("input-npz-several-arrays", "bench", "{lin}", *FAST_ARGS, "--input", "x={npz}", code=BAD_INPUT,
         needles=("data.npz", "several arrays")),
    case("input-npy-object-array", "bench", "{lin}", *FAST_ARGS, "--input", "x={object_npy}", code=BAD_INPUT,
         needles=("objects.npy", "not a readable .npy")),
    # ------------------------------------------------ output files, checked before anything runs
    *(case(f"bench-json-{name}", "bench", "{lin}", *FAST_ARGS, "--json", path, needles=("--json", *needles))
      for name, path, needles in [
          ("missing-folder", "/nonexistent-folder/r.json", ("not an existing folder",)),
          ("directory", "{dir}", ("not a regular file",)), ("proc", "/proc/r.json", ("cannot write",)),
          ("sysfs", "/sys/r.json", ("cannot write",)), ("under-a-file", "{file}/r.json", ("not an existing folder",)),
          ("char-device", "/dev/null", ("not a regular file",)),
      ]),
    case("bench-json-checked-before-the-model", "bench", "{tmp}/missing.onnx", "--json", "/proc/r.json",
         needles=("--json /proc/r.json",)),
    # ------------------------------------------------ compare
    case("compare-samples-zero", "compare", "{lin}", "{lin}", "--samples", "0", needles=("--samples",)),
    case("compare-samples-nan", "compare", "{lin}", "{lin}", "--samples", "nan", needles=("--samples",)),
    case("compare-samples-huge", "compare", "{lin}", "{lin}", "--samples", "100001", needles=("--samples", "10,000")),
    case("compare-threads-zero", "compare", "{lin}", "{lin}", "--threads", "0", needles=("--threads",)),
    case("compare-seed-negative", "compare", "{lin}", "{lin}", "--seed", "-1", needles=("--seed",)),
    case("compare-timeout-zero", "compare", "{lin}", "{lin}", "--timeout", "0", needles=("--timeout",)),
    case("compare-timeout-nan", "compare", "{lin}", "{lin}", "--timeout", "nan", needles=("--timeout",)),
    case("compare-one-model", "compare", "{lin}", needles=("candidate",)),
    case("compare-reference-missing", "compare", "{tmp}/none.onnx", "{lin}", code=BAD_INPUT,
         needles=("none.onnx", "not found")),
    case("compare-candidate-fifo", "compare", "{lin}", "{fifo}", code=BAD_INPUT, needles=("not a regular file",)),
    case("compare-candidate-device", "compare", "{lin}", "/dev/zero", code=BAD_INPUT,
         needles=("/dev/zero", "character device")),
    case("compare-custom-op", "compare", "{custom}", "{lin}", code=BAD_INPUT, needles=("FancyOp",)),
    case("compare-models-take-different-inputs", "compare", "{sine}", "{lin}", code=BAD_INPUT,
         needles=("the candidate", "do not take the same inputs")),
    case("compare-shape-huge", "compare", "{lin}", "{lin}", "--shape", "x=100000x100000x100000",
         needles=("--shape x=100000x100000x100000", "more than one input may hold")),
    case("compare-shape-syntax", "compare", "{lin}", "{lin}", "--shape", "x=1xy", needles=("--shape", "integers")),
    case("compare-input-nan", "compare", "{lin}", "{lin}", "--input", "x=nan", needles=("--input", "finite")),
    case("compare-output-unknown", "compare", "{lin}", "{lin}", "--output", "nosuch", needles=("--output", "nosuch")),
    case("compare-eval-missing", "compare", "{lin}", "{lin}", "--eval", "{tmp}/none.npz", code=BAD_INPUT,
         needles=("--eval", "not found")),
    case("compare-eval-fifo", "compare", "{lin}", "{lin}", "--eval", "{fifo}", code=BAD_INPUT,
         needles=("--eval", "not a regular file")),
    case("compare-eval-junk", "compare", "{lin}", "{lin}", "--eval", "{tmp}/junk.npz", code=BAD_INPUT,
         needles=("--eval", "not a readable .npz"), write={"junk.npz": b"PK\x03\x04 truncated zip"}),
    case("compare-eval-npy-not-npz", "compare", "{lin}", "{lin}", "--eval", "{cut_npy_whole}", code=BAD_INPUT,
         needles=("--eval", "not a readable .npz")),
    case("compare-eval-float-labels", "compare", "{lin}", "{lin}", "--eval", "{eval_float_y}", code=BAD_INPUT,
         needles=("--eval", "'y'", "float64")),
    case("compare-eval-nan-samples", "compare", "{lin}", "{lin}", "--eval", "{eval_nan_x}", code=BAD_INPUT,
         needles=("--eval", "'x'", "finite")),
    case("compare-json-unwritable", "compare", "{lin}", "{lin}", "--json", "/proc/c.json",
         needles=("--json /proc/c.json", "cannot write")),
    # ------------------------------------------------ variants
    case("variants-custom-op", "variants", "{custom}", "--out-dir", "{tmp}/v", *FAST_ARGS[:-1], code=BAD_INPUT,
         needles=("loading the float model", "FancyOp")),
    case("variants-only-unknown", "variants", "{lin}", "--only", "int4", needles=("--only", "int4")),
    case("variants-out-dir-is-a-file", "variants", "{lin}", "--out-dir", "{file}", needles=("--out-dir",)),
    case("variants-out-dir-unwritable", "variants", "{lin}", "--out-dir", "/proc/v", needles=("--out-dir",)),
    case("variants-samples-zero", "variants", "{lin}", "--samples", "0", needles=("--samples",)),
    case("variants-calibration-samples-nan", "variants", "{lin}", "--calibration-samples", "nan",
         needles=("--calibration-samples",)),
    case("variants-calibration-samples-huge", "variants", "{lin}", "--calibration-samples", "20000",
         needles=("--calibration-samples", "10,000")),
    case("variants-threads-huge", "variants", "{lin}", "--threads", "2000", needles=("--threads",)),
    case("variants-seed-negative", "variants", "{lin}", "--seed", "-5", needles=("--seed",)),
    case("variants-durations-inconsistent", "variants", "{lin}", "--min-duration", "5", "--max-duration", "1",
         needles=("--max-duration",)),
    case("variants-shape-huge", "variants", "{lin}", "--out-dir", "{tmp}/v", "--shape", "x=100000x100000x100000",
         needles=("--shape", "more than one input may hold")),
    case("variants-calibration-missing", "variants", "{lin}", "--out-dir", "{tmp}/v", "--calibration",
         "{tmp}/none.npz", code=BAD_INPUT, needles=("--calibration", "not found")),
    case("variants-calibration-fifo", "variants", "{lin}", "--out-dir", "{tmp}/v", "--calibration", "{fifo}",
         code=BAD_INPUT, needles=("--calibration", "not a regular file")),
    case("variants-calibration-junk", "variants", "{lin}", "--out-dir", "{tmp}/v", "--calibration",
         "{tmp}/junk.npz", code=BAD_INPUT, needles=("--calibration", "not a readable .npz"),
         write={"junk.npz": b"junk"}),
    case("variants-calibration-nan", "variants", "{lin}", "--out-dir", "{tmp}/v", "--calibration", "{eval_nan_x}",
         code=BAD_INPUT, needles=("--calibration", "finite")),
    case("variants-calibration-wrong-input", "variants", "{lin}", "--out-dir", "{tmp}/v", "--calibration", "{npz}",
         code=BAD_INPUT, needles=("--calibration", "no array for input(s) x")),
    case("variants-json-unwritable", "variants", "{lin}", "--json", "/sys/v.json", needles=("--json /sys/v.json",)),
    # ------------------------------------------------ gate: the rules file
    case("gate-rules-missing", "gate", "--rules", "{tmp}/none.toml", "--reports", "{tmp}/r.json",
         needles=("gates file", "none.toml", "not found"), write={"r.json": report()}),
    case("gate-rules-directory", "gate", "--rules", "{dir}", "--reports", "{tmp}/r.json",
         needles=("gates file", "directory"), write={"r.json": report()}),
    case("gate-rules-fifo", "gate", "--rules", "{fifo}", "--reports", "{tmp}/r.json",
         needles=("gates file", "FIFO"), write={"r.json": report()}),
    gate_case("gate-rules-binary", "\x00\xff", ("g.toml", "not valid TOML")),
    gate_case("gate-rules-binary-bytes", b"\xff\xfe\x00binary", ("g.toml", "not UTF-8")),
    gate_case("gate-rules-empty", "", ("g.toml", "no [[gate]] tables")),
    gate_case("gate-rules-truncated", RULE[:-4], ("g.toml", "not valid TOML")),
    gate_case("gate-rules-not-an-array", "gate = 3\n", ("g.toml", "no [[gate]] tables")),
    gate_case("gate-max-string", RULE.replace("max = 5", 'max = "fast"'), ("gate #1", "max = 'fast'", "finite")),
    gate_case("gate-max-nan", RULE.replace("max = 5", "max = nan"), ("gate #1", "max = nan", "finite")),
    gate_case("gate-max-inf", RULE.replace("max = 5", "max = inf"), ("gate #1", "max = inf", "finite")),
    gate_case("gate-min-minus-inf", RULE.replace("max = 5", "min = -inf"), ("gate #1", "min = -inf", "finite")),
    gate_case("gate-max-boolean", RULE.replace("max = 5", "max = true"), ("gate #1", "max = True", "finite")),
    gate_case("gate-min-above-max", RULE + "min = 9\n", ("gate #1", "min = 9", "above max")),
    gate_case("gate-regression-string", RULE + 'baseline = "v1"\nmax_regression_pct = "5"\n',
              ("max_regression_pct = '5'", "finite")),
    gate_case("gate-regression-negative", RULE + 'baseline = "v1"\nmax_regression_pct = -1\n',
              ("max_regression_pct = -1", "negative")),
    gate_case("gate-regression-nan", RULE + 'baseline = "v1"\nmax_regression_pct = nan\n',
              ("max_regression_pct = nan",)),
    gate_case("gate-model-number", RULE.replace('model = "*"', "model = 3"), ("gate #1", "model")),
    gate_case("gate-metric-number", RULE.replace('metric = "p90_ms"', "metric = 5"), ("gate #1", "metric")),
    gate_case("gate-devices-number", RULE + "devices = 3\n", ("gate #1", "devices = 3", "not a string")),
    gate_case("gate-devices-table", RULE + 'devices = {class = "rpi5"}\n', ("devices = ", "not a string")),
    gate_case("gate-baseline-number", RULE + "baseline = 1.4\n", ("baseline = 1.4", "not a string")),
    gate_case("gate-name-number-names-the-index", RULE + "name = 7\n", ("gate #1", "name = 7")),
    gate_case("gate-min-samples-zero", RULE + "min_samples = 0\n", ("min_samples = 0",)),
    gate_case("gate-min-repeats-one", RULE + 'baseline = "v1"\nmin_repeats = 1\n', ("gate #1", "min_repeats = 1")),
    gate_case("gate-baseline-runs-string", RULE + 'baseline = "v1"\nbaseline_runs = "5"\n',
              ("gate #1", "baseline_runs = '5'", "not an integer")),
    gate_case("gate-duplicate-names", RULE + 'name = "x"\n' + RULE + 'name = "x"\n', ("g.toml", "named 'x'")),
    gate_case("gate-named-rule-is-named", RULE.replace("max = 5", 'max = "x"') + 'name = "pi5 p90"\n',
              ("gate #1 (pi5 p90)", "max = 'x'")),
    # ------------------------------------------------ gate: the reports
    gate_case("report-binary", RULE, ("r.json", "not a readable JSON report"), reports="\udcff"),
    gate_case("report-empty", RULE, ("r.json", "not a readable JSON report"), reports=""),
    gate_case("report-truncated", RULE, ("r.json", "not a readable JSON report"), reports=report()[:40]),
    gate_case("report-json-array", RULE, ("r.json", "a JSON list"), reports="[1, 2]"),
    gate_case("report-wrong-schema", RULE, ("r.json", "schema 'other/1'"), reports=report(schema="other/1")),
    gate_case("report-schema-number", RULE, ("r.json", "schema 5"), reports=report(schema=5)),
    gate_case("report-no-stats", RULE, ("r.json", "no 'stats' field"),
              reports=json.dumps({k: v for k, v in json.loads(report()).items() if k != "stats"})),
    gate_case("report-labels-list", RULE, ("r.json", "not a well-formed"), reports=report(labels=["a"])),
    gate_case("report-samples-strings", RULE, ("r.json", "latency_ns"), reports=report(samples__latency_ns=["1"])),
    gate_case("report-samples-nan", RULE, ("r.json", "latency_ns"), reports=report(samples__latency_ns=[math.nan])),
    gate_case("report-model-name-number", RULE, ("r.json", "model 3"), reports=report(model__name=3)),
    gate_case("report-interval-not-an-object", RULE, ("r.json", "stats.interval is not an object"),
              reports=report(stats__interval=[1, 2])),
    gate_case("report-interval-unknown-method", RULE, ("r.json", "stats.interval.method"),
              reports=report(stats__interval={"method": "guess", "units": 0})),
    gate_case("report-variants-without-rows", RULE, ("r.json", "no 'variants' field"),
              reports=json.dumps({"schema": "edgebench.variants/1"})),
    case("gate-reports-missing", "gate", "--rules", "{tmp}/g.toml", "--reports", "{tmp}/none.json",
         needles=("--reports", "none.json", "not found"), write={"g.toml": RULE}),
    case("gate-reports-fifo", "gate", "--rules", "{tmp}/g.toml", "--reports", "{fifo}",
         needles=("--reports", "FIFO"), write={"g.toml": RULE}),
    case("gate-reports-directory", "gate", "--rules", "{tmp}/g.toml", "--reports", "{dir}",
         needles=("--reports", "directory"), write={"g.toml": RULE}),
    # ------------------------------------------------ gate: flags
    case("gate-no-rules", "gate", "--reports", "x.json", needles=("--rules",)),
    case("gate-rules-given-as-config", "gate", "--config", "{tmp}/g.toml", "--reports", "{tmp}/r.json",
         needles=("holds [[gate]] rules", "--rules"), write={"g.toml": RULE, "r.json": report()}),
    case("gate-no-source", "gate", "--rules", "{tmp}/g.toml", needles=("--reports",), write={"g.toml": RULE}),
    case("gate-labels-malformed", "gate", "--rules", "{tmp}/g.toml", "--reports", "{tmp}/r.json", "--labels",
         "rpi5", needles=("rpi5", "key=value"), write={"g.toml": RULE, "r.json": report()}),
    *(case(f"gate-{flag[2:]}-{name}", "gate", "--rules", "{tmp}/g.toml", flag, url, needles=(flag, "URL"),
           write={"g.toml": RULE})
      for flag, name, url in [("--server", "no-scheme", "nonsense"), ("--server", "ftp", "ftp://x"),
                              ("--server", "bad-ipv6", "http://[bad"), ("--influx-url", "no-scheme", "nonsense")]),
    *(case(f"gate-{flag[2:]}-unwritable", "gate", "--rules", "{tmp}/g.toml", "--reports", "{tmp}/r.json", flag,
           path, needles=(flag, path), write={"g.toml": RULE, "r.json": report()})
      for flag, path in [("--junit", "/proc/j.xml"), ("--markdown", "/sys/m.md"), ("--json", "/nonexistent/g.json")]),
    # ------------------------------------------------ sensors
    case("sensors-root-missing", "sensors", "--root", "/nonexistent-root", needles=("--root", "not a directory")),
    case("sensors-root-is-a-file", "sensors", "--root", "{file}", needles=("--root", "not a directory")),
    case("sensors-adb-exe-missing", "sensors", "--adb", "serial1", "--adb-exe", "/nonexistent/adb",
         needles=("--adb-exe", "/nonexistent/adb")),
    case("sensors-unknown-flag", "sensors", "--bogus", needles=("edgebench sensors: error", "--bogus")),
    case("sensors-extra-argument", "sensors", "--json", "extra", needles=("unrecognized arguments: extra",)),
    case("adb-sensors-no-serial", "adb", "sensors", needles=("edgebench adb sensors: error", "--serial")),
    # ------------------------------------------------ the config file and the environment
    case("config-missing", "--config", "{tmp}/none.toml", "bench", "{lin}", needles=("config file", "not found")),
    case("config-directory", "--config", "{dir}", "bench", "{lin}", needles=("config file", "directory")),
    case("config-fifo", "--config", "{fifo}", "bench", "{lin}", needles=("config file", "FIFO")),
    config_case("config-binary", b"\x89PNG\r\n\x1a\n\x00\x00", ("c.toml", "not valid TOML")),
    config_case("config-nul-bytes", "[bench]\x00\n", ("c.toml", "not valid TOML")),
    config_case("config-truncated", "[bench]\nmin-runs = ", ("c.toml", "not valid TOML")),
    config_case("config-section-is-an-integer", "bench = 3\n", ("c.toml", "bench = '3'", "not a table")),
    config_case("config-section-is-a-string", 'bench = "fast"\n', ("c.toml", "bench = 'fast'", "not a table")),
    config_case("config-key-outside-a-table", "min-runs = 5\n", ("c.toml", "min-runs", "not a table")),
    config_case("config-other-section-not-a-table", "compare = [1]\n", ("c.toml", "compare", "not a table")),
    config_case("config-int-is-a-string", '[bench]\nmin-runs = "abc"\n',
                ("c.toml", "[bench] min-runs", "not a positive integer")),
    config_case("config-threads-float", "[bench]\nthreads = 2.5\n", ("[bench] threads", "not a positive integer")),
    config_case("config-seed-negative", "[bench]\nseed = -1\n", ("[bench] seed", "not an integer from 0")),
    config_case("config-sensor-rate-nan", "[bench]\nsensor-rate = nan\n", ("[bench] sensor-rate", "not a number")),
    config_case("config-duration-list", "[bench]\nmin-duration = [1, 2]\n", ("[bench] min-duration", "duration")),
    config_case("config-duration-table", "[bench]\nmin-duration = {a = 1}\n", ("[bench] min-duration",)),
    config_case("config-bool-string", '[bench]\nquiet = "maybe"\n', ("[bench] quiet", "not a boolean")),
    config_case("config-bool-number", "[bench]\nquiet = 3\n", ("[bench] quiet", "not a boolean")),
    config_case("config-choice", '[bench]\nprogress = "loud"\n', ("[bench] progress", "'loud'", "not one of")),
    config_case("config-memory-limit-zero", "[bench]\nmemory-limit = 0\n", ("[bench] memory-limit", "less than 1M")),
    config_case("config-unknown-key", "[bench]\nminruns = 3\n", ("[bench]", "'minruns'")),
    config_case("config-compare-samples", "[compare]\nsamples = 0\n", ("[compare] samples",),
                "compare", "{lin}", "{lin}"),
    config_case("config-variants-calibration-samples", "[variants]\ncalibration-samples = inf\n",
                ("[variants] calibration-samples",), "variants", "{lin}"),
    config_case("config-gate-no-record-not-boolean", "[gate]\nno-record = 3\n", ("[gate] no-record", "not a boolean"),
                "gate", "--rules", "x.toml", "--reports", "r.json"),
    config_case("config-label-table", "[bench]\nlabel = [{a = 1}]\n", ("[bench] label", "a table is not a value")),
    config_case("config-subcommand-option-in-parent", "[dashboards]\ntoken = \"t\"\n",
                ("[dashboards] has no option 'token'", "[dashboards.push]"), "dashboards", "push", "--grafana-url",
                "http://g:3000"),
    case("env-config-missing", "bench", "{lin}", env={"EDGEBENCH_CONFIG": "/nonexistent/edgebench.toml"},
         needles=("config file", "/nonexistent/edgebench.toml")),
    case("env-threads-not-a-number", "bench", "{lin}", env={"EDGEBENCH_BENCH_THREADS": "abc"},
         needles=("EDGEBENCH_BENCH_THREADS", "not a positive integer")),
    case("env-quiet-not-a-boolean", "bench", "{lin}", env={"EDGEBENCH_BENCH_QUIET": "maybe"},
         needles=("EDGEBENCH_BENCH_QUIET", "not a boolean")),
    case("env-seed-negative", "bench", "{lin}", env={"EDGEBENCH_BENCH_SEED": "-1"},
         needles=("EDGEBENCH_BENCH_SEED",)),
    case("env-compare-timeout-nan", "compare", "{lin}", "{lin}", env={"EDGEBENCH_COMPARE_TIMEOUT": "nan"},
         needles=("EDGEBENCH_COMPARE_TIMEOUT", "not a duration")),
]


def int8_model():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "int8_identity",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def custom_op_model():
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], "custom",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])


@pytest.fixture(scope="module")
def paths(models, tmp_path_factory) -> dict:
    """The shared files every case may name (built once; none is ever modified by a case)."""
    import onnx

    root = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    lin = save_onnx(linear_model(rng.normal(size=(8, 4)), rng.normal(size=4)), root / "lin.onnx")
    custom = root / "custom.onnx"
    onnx.save(custom_op_model(), str(custom))  # the checker would reject the unknown domain
    half = root / "half.onnx"
    half.write_bytes(lin.read_bytes()[: lin.stat().st_size // 2])
    fifo = root / "fifo"
    os.mkfifo(fifo)
    loop = root / "loop.onnx"
    loop.symlink_to(loop)
    unreadable = root / "unreadable.onnx"
    unreadable.write_bytes(lin.read_bytes())
    unreadable.chmod(0)
    (root / "dir").mkdir()
    (root / "file.txt").write_text("a regular file\n")
    np.save(root / "whole.npy", np.zeros((1, 8), np.float32))
    (root / "cut.npy").write_bytes((root / "whole.npy").read_bytes()[:100])
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(root / "data.npz", a=np.zeros(3), b=np.ones(3))
    np.savez(root / "eval_float_y.npz", x=np.zeros((4, 8), np.float32), y=np.array([0.5, 1, 2, 3]))
    np.savez(root / "eval_nan_x.npz", x=np.full((4, 8), np.nan, np.float32), y=np.arange(4))
    return {"lin": lin, "custom": custom, "half": half, "fifo": fifo, "loop": loop, "unreadable": unreadable,
            "dir": root / "dir", "file": root / "file.txt", "cut_npy": root / "cut.npy",
            "cut_npy_whole": root / "whole.npy", "object_npy": root / "objects.npy", "npz": root / "data.npz",
            "eval_float_y": root / "eval_float_y.npz", "eval_nan_x": root / "eval_nan_x.npz",
            "int8": save_onnx(int8_model(), root / "int8.onnx"), "sine": models["sine_float.tflite"]}


def assert_one_line_error(result, code: int, needles) -> None:
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result
    assert ONE_LINE.match(lines[0]), result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    for needle in needles:
        assert needle in lines[0], (needle, result)


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(cli, paths, tmp_path, bad: Case):
    for name, content in bad.write.items():
        target = tmp_path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, errors="surrogateescape")
    names = {key: str(value) for key, value in paths.items()} | {"tmp": str(tmp_path)}
    args = [arg.format(**names) for arg in bad.args]
    assert_one_line_error(cli(*args, timeout=120, env=bad.env), bad.code, bad.needles)


def test_the_matrix_is_broad():
    assert len(CASES) >= 100
    commands = {c.values[0].args[0] if c.values[0].args[0] != "--config" else "config" for c in CASES}
    assert {"bench", "compare", "variants", "gate", "sensors", "adb", "config"} <= commands


# ---------------------------------------------------------------- a NaN is never a pass

@pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (math.inf, "inf"), ("fast", "'fast'"),
                                              (True, "True")])
def test_gate_verdict_on_a_non_number_is_missing_not_pass(cli, tmp_path, value, shown):
    """A measured value that is not a finite number decides nothing: the rule is *missing* (exit 2), with the
    value named; never "PASS p90_ms nanms within limits"."""
    (tmp_path / "g.toml").write_text(RULE)
    (tmp_path / "r.json").write_text(report(stats__p90_ms=value))
    result = cli("gate", "--rules", tmp_path / "g.toml", "--reports", tmp_path / "r.json", "--no-record",
                 "--json", "-")
    assert result.code == MISSING and not result.err, result
    (verdict,) = result.json()["verdicts"]
    assert verdict["status"] == "missing" and verdict["value"] is None
    assert f"p90_ms is not a finite number ({shown})" in verdict["message"]


def test_gate_regression_on_a_nan_baseline_is_missing(cli, tmp_path):
    """Non-latency metrics regress on the values themselves: a NaN baseline cannot show a change."""
    rules = '[[gate]]\nmodel = "*"\nmetric = "peak_rss_mb"\nbaseline = "v1"\nmax_regression_pct = 5\n'
    (tmp_path / "g.toml").write_text(rules)
    (tmp_path / "old.json").write_text(report(labels={"class": "ci", "release": "v1"},
                                              memory={"peak_load_bytes": math.nan}))
    (tmp_path / "new.json").write_text(report(memory={"peak_load_bytes": 1e9}, created="2024-06-01T00:00:00Z"))
    result = cli("gate", "--rules", tmp_path / "g.toml", "--reports", tmp_path / "old.json", tmp_path / "new.json",
                 "--no-record")
    assert result.code == MISSING and "PASS" not in result.out and "not a number" in result.out, result
