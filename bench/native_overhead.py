#!/usr/bin/env python3
"""How much does the native harness add to what it measures, and how does the Python engine compare?

For each real model, in one run of this script, rounds alternate between:
  bare    edgebench-native-bare: the plainest invoke loop on the runtime's C API (native/src/bare_loop.cpp),
          the same delegate defaults and clock as the harness, nothing else;
  native  `edgebench bench --runtime native` (bench.run: the harness in its child process, RSS sampling on);
  python  the same through the Python engine and its default runtime (litert / onnxruntime).
Every column measures at least --min-duration seconds. p50s come from agent/engine/stats.py for all three.
Goals (issue 6): native p50 within 1% of bare; the Python engine's p50 against native is reported as a ratio.

Usage: python bench/native_overhead.py [--rounds 3] [--runs 400] [--min-duration 1] [--json out.json]
Needs the harness built (`make native`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent.engine import bench, stats  # noqa: E402
from edgebench.agent.engine.executors.native import find_binary  # noqa: E402
from edgebench.agent.engine.isolation import ChildLimits  # noqa: E402
from edgebench.agent.engine.measure import RunSettings  # noqa: E402

CASES = [  # (model, shape args, what it shows)
    ("efficientnet_lite0_int8.tflite", [], "ms-scale TFLite int8 CNN (XNNPACK)"),
    ("ppocr_cls.onnx", ["x=1x3x48x192"], "sub-ms ONNX CNN"),
    ("sine_float.tflite", [], "sub-µs TFLite: the clock's own cost dominates"),
]
GOAL = 0.01  # native p50 within 1% of bare


def p50_ms(latency_ns: list) -> float:
    return stats.summarize(latency_ns)["p50_ms"]


def bare(binary: Path, model: Path, shapes: list, runs: int, min_duration: float, threads: int) -> float:
    argv = [str(binary), str(model), "--runs", str(runs), "--min-duration", repr(min_duration),
            "--warmup", "5", "--warmup-duration", "0.5", "--threads", str(threads)]
    for shape in shapes:
        argv += ["--shape", shape]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    return p50_ms(json.loads(proc.stdout.splitlines()[-1])["latency_ns"])


def engine(model: Path, runtime: str, shapes: list, runs: int, min_duration: float, threads: int) -> float:
    from edgebench.agent.runtimes.base import RuntimeOptions

    settings = RunSettings(min_runs=runs, min_duration_s=min_duration, max_duration_s=max(60.0, 4 * min_duration),
                           warmup_runs=5, warmup_duration_s=0.5)
    request = bench.BenchRequest(str(model), runtime=runtime, options=RuntimeOptions(threads=threads),
                                 settings=settings, shape_args=shapes, limits=ChildLimits(timeout_s=600))
    return bench.run(request)["stats"]["p50_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--min-duration", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every column (default 1)")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    native = find_binary()
    if native is None:
        raise SystemExit("the native harness is not built: run `make native`")
    bare_bin = native.parent / "edgebench-native-bare"
    cases = [c for c in CASES if not args.only or c[0] in args.only.split(",")]
    paths = fetch_models.fetch([name for name, _, _ in cases])
    figures = []
    print(f"{'model':32s} {'bare p50':>12s} {'native p50':>12s} {'python p50':>12s} {'native/bare':>12s} "
          f"{'python/native':>14s}")
    for name, shapes, what in cases:
        model = paths[name]
        default = "litert" if name.endswith(".tflite") else "onnxruntime"
        rounds = []
        for _ in range(args.rounds):  # alternate, so drift (heat, other load) hits every column alike
            row = {
                "bare": bare(bare_bin, model, shapes, args.runs, args.min_duration, args.threads),
                "native": engine(model, "native", shapes, args.runs, args.min_duration, args.threads),
                "python": engine(model, default, shapes, args.runs, args.min_duration, args.threads),
            }
            rounds.append(row)
        median = {key: statistics.median(r[key] for r in rounds) for key in ("bare", "native", "python")}
        native_vs_bare = statistics.median(r["native"] / r["bare"] for r in rounds)
        python_vs_native = statistics.median(r["python"] / r["native"] for r in rounds)
        verdict = "ok" if abs(native_vs_bare - 1) <= GOAL else "MISS"
        unit, scale = ("µs", 1e3) if median["bare"] < 0.1 else ("ms", 1.0)
        print(f"{name:32s} {median['bare'] * scale:9.4f} {unit} {median['native'] * scale:9.4f} {unit} "
              f"{median['python'] * scale:9.4f} {unit} {native_vs_bare:8.4f} {verdict:3s} {python_vs_native:14.3f}"
              f"   ({what})")
        figures.append({"model": name, "what": what, "rounds": rounds, "median_p50_ms": median,
                        "native_vs_bare": native_vs_bare, "python_vs_native": python_vs_native,
                        "within_goal": verdict == "ok"})
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "min_duration_s": args.min_duration,
                                         "runs": args.runs, "goal": GOAL, "cases": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
