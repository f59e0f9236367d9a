#!/usr/bin/env python3
"""What does --profile-ops cost, and does it leave the measured numbers alone?

For each real model and runtime, in one run of this script, rounds alternate between:
  plain     `bench` without --profile-ops;
  profiled  `bench --profile-ops`: the same measured phase, then the runtime's per-op profiler runs.
Printed per case, as ratios measured in this run:
  cost       the profiled inferences' p50 against the same process's measured p50 (what profiling adds to an
             inference: the report's ``ops.overhead``), median over rounds;
  untouched  the profiled run's measured p50 against the plain run's (should be 1: the profiler must never touch
             the measured phase), median over rounds;
  accounted  the ops' sum against the profiled inferences' mean time (issue 14: within 10%, or the report says why).

Usage: python bench/profile_cost.py [--rounds 3] [--runs 200] [--profile-runs 50] [--json out.json]
The native cases need the harness built (`make native`); without it they are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent.engine import bench  # noqa: E402
from edgebench.agent.engine.executors.native import find_binary  # noqa: E402
from edgebench.agent.engine.measure import RunSettings  # noqa: E402
from edgebench.agent.runtimes.base import RuntimeOptions  # noqa: E402

CASES = [  # (model, runtime or None for the format's default, shape args)
    ("ppocr_cls.onnx", None, ["x=1x3x48x192"]),
    ("efficientnet_lite0_int8.tflite", "native", []),
    ("ppocr_cls.onnx", "native", ["x=1x3x48x192"]),
    ("deeplabv3.tflite", "native", []),
]


def one_run(path: Path, runtime, shapes, runs: int, profile_runs: int) -> dict:
    settings = RunSettings(min_runs=runs, min_duration_s=0.5, warmup_runs=10, profile_runs=profile_runs)
    request = bench.BenchRequest(model=str(path), runtime=runtime, options=RuntimeOptions(), settings=settings,
                                 shape_args=shapes, repeats=1)
    return bench.run(request)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--profile-runs", type=int, default=50)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    models = fetch_models.fetch()
    results = []
    for name, runtime, shapes in CASES:
        if runtime == "native" and find_binary() is None:
            print(f"{name} [native]: skipped (the harness is not built: make native)")
            continue
        cost, untouched, accounted = [], [], []
        for _ in range(args.rounds):
            plain = one_run(models[name], runtime, shapes, args.runs, 0)
            profiled = one_run(models[name], runtime, shapes, args.runs, args.profile_runs)
            profile = profiled.get("ops") or {"unavailable": "the runtime returned no per-op profile"}
            if profile.get("unavailable"):
                print(f"{name} [{runtime or 'default'}]: no per-op times: {profile['unavailable']}")
                break
            cost.append(profile["overhead"])
            accounted.append(profile["accounted"])
            untouched.append(profiled["stats"]["p50_ms"] / plain["stats"]["p50_ms"])
        if not cost:
            continue
        row = {"model": name, "runtime": runtime or "default", "rounds": len(cost),
               "cost": statistics.median(cost), "untouched": statistics.median(untouched),
               "accounted": statistics.median(accounted)}
        results.append(row)
        print(f"{name} [{row['runtime']}]: profiled p50 {row['cost']:.2f}x the measured p50; measured p50 with "
              f"--profile-ops {row['untouched']:.3f}x without; the ops account for {row['accounted']:.0%} of the "
              f"profiled time ({row['rounds']} rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
