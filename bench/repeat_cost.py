#!/usr/bin/env python3
"""What does a repeat cost? (``edgebench bench --repeats N``: each repeat a fresh process.)

A paired A/B, in alternating order within each pair, of:
  one    ``edgebench bench sine_float.tflite --repeats 1 --min-runs 10 --min-duration 0 --warmup-runs 0
         --warmup-duration 0 --no-sensors`` (wall time of the whole command);
  many   the same with ``--repeats N`` (default 10);
  bare   a script that imports LiteRT, loads the model and invokes it 10 times; it times its own load and
         invokes (``Interpreter()`` + ``allocate_tensors()`` + 10 ``invoke()``): the part of a repeat that is the
         runtime's own work, which no benchmark can avoid.
The per-repeat cost is (many - one) / (N - 1) per pair; beyond the model load it is that minus the bare script's
load and invokes. Goal: at most 0.15 s beyond the load (issue 12). Printed as medians over the pairs, in seconds
and as a ratio (per-repeat cost / bare load); docs/performance.md records a run.

With ``--native`` (and the harness built: ``make native``), the same one/many pair for ``--runtime native``, which
starts one process per repeat (exec, no zygote): its per-repeat cost is printed beside.

Usage: python bench/repeat_cost.py [--pairs 7] [--repeats 10] [--native] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

MODEL = "sine_float.tflite"
GOAL_S = 0.15
RUN_LENGTH = ["--min-runs", "10", "--min-duration", "0", "--warmup-runs", "0", "--warmup-duration", "0",
              "--no-sensors", "-q"]
BARE = """
import json, sys, time
t0 = time.perf_counter()
from ai_edge_litert.interpreter import Interpreter
t1 = time.perf_counter()
interpreter = Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
for _ in range(10):
    interpreter.invoke()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_and_invokes_s": t2 - t1}))
"""


def timed(argv: list) -> tuple[float, str]:
    """Wall time of a command (started and waited for here), and its stdout."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc.stdout


def bench_argv(model: Path, repeats: int, runtime: str = "") -> list:
    extra = ["--runtime", runtime] if runtime else []
    return [sys.executable, "-m", "edgebench.agent.cli", "bench", str(model), "--repeats", str(repeats), *RUN_LENGTH,
            *extra]


def measure(model: Path, pairs: int, repeats: int, native: bool) -> dict:
    columns: dict = {"one": [], "many": [], "bare_wall": [], "bare_load": [], "bare_import": []}
    if native:
        columns.update({"native_one": [], "native_many": []})

    def bare() -> None:
        wall, out = timed([sys.executable, "-c", BARE, str(model)])
        figures = json.loads(out)
        columns["bare_wall"].append(wall)
        columns["bare_load"].append(figures["load_and_invokes_s"])
        columns["bare_import"].append(figures["import_s"])

    steps = {
        "one": lambda: columns["one"].append(timed(bench_argv(model, 1))[0]),
        "many": lambda: columns["many"].append(timed(bench_argv(model, repeats))[0]),
        "bare": bare,
    }
    if native:
        steps["native_one"] = lambda: columns["native_one"].append(timed(bench_argv(model, 1, "native"))[0])
        steps["native_many"] = lambda: columns["native_many"].append(timed(bench_argv(model, repeats, "native"))[0])
    timed(bench_argv(model, 1))  # warm the page cache and the interpreter's bytecode cache first
    order = list(steps)
    for pair in range(pairs):  # alternate the order, so drift (other load, thermal) hits every column alike
        for key in (order if pair % 2 == 0 else order[::-1]):
            steps[key]()
    per_repeat = [(m - o) / (repeats - 1) for m, o in zip(columns["many"], columns["one"])]
    beyond = [p - b for p, b in zip(per_repeat, columns["bare_load"])]
    ratio = [p / b for p, b in zip(per_repeat, columns["bare_load"])]
    result = {
        "model": MODEL, "pairs": pairs, "repeats": repeats, "columns_s": columns,
        "median_s": {key: statistics.median(values) for key, values in columns.items()},
        "per_repeat_s": statistics.median(per_repeat), "bare_load_s": statistics.median(columns["bare_load"]),
        "beyond_load_s": statistics.median(beyond), "per_repeat_vs_bare_load": statistics.median(ratio),
    }
    result["meets_goal"] = result["beyond_load_s"] <= GOAL_S
    if native:
        native_per = [(m - o) / (repeats - 1) for m, o in zip(columns["native_many"], columns["native_one"])]
        result["native_per_repeat_s"] = statistics.median(native_per)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="paired rounds (at least 7)")
    parser.add_argument("--repeats", type=int, default=10, help="N of the many-repeats run (default 10)")
    parser.add_argument("--native", action="store_true", help="also the native harness (one exec per repeat)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if args.pairs < 7 or args.repeats < 2:
        parser.error("--pairs must be at least 7 and --repeats at least 2")
    if args.native:
        from edgebench.agent.engine.executors.native import find_binary

        if find_binary() is None:
            parser.error("--native: the harness is not built (make native)")
    model = fetch_models.fetch([MODEL])[MODEL]
    result = measure(Path(model), args.pairs, args.repeats, args.native)
    median = result["median_s"]
    n = args.repeats
    print(f"{MODEL}, {args.pairs} pairs, medians:")
    print(f"  bench --repeats 1        {median['one']:.3f} s")
    print(f"  bench --repeats {n:<8} {median['many']:.3f} s")
    print(f"  bare script              {median['bare_wall']:.3f} s wall (import {median['bare_import']:.3f} s, "
          f"load + 10 invokes {median['bare_load']:.4f} s)")
    print(f"per repeat: {result['per_repeat_s']:.4f} s = {result['per_repeat_vs_bare_load']:.2f} x the bare load "
          f"({result['bare_load_s']:.4f} s); beyond the load: {result['beyond_load_s']:.4f} s "
          f"-> {'meets' if result['meets_goal'] else 'MISSES'} the <= {GOAL_S} s goal")
    if args.native:
        print(f"native harness (one exec per repeat): {result['native_per_repeat_s']:.4f} s per repeat "
              f"(--repeats 1: {median['native_one']:.3f} s, --repeats {n}: {median['native_many']:.3f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
