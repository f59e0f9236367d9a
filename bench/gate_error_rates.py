"""How often the release gate is right, on real runs of this machine: identical pairs, and real regressions.

    .venv/bin/python bench/gate_error_rates.py [--pairs 10] [--repeats DEFAULT] [--json FILE]

Each pair is two separate `edgebench bench` runs at default settings (repeats included) of PP-OCR's recognition
model, one thread, no sensors: a baseline at width 320 and a candidate at width 320 (identical), 352 (more work:
about +10%) or 400 (about +25%); the order of the two runs alternates from pair to pair. The gate's decision
(stats.regression_verdict on the repeats' p90s, allowance 5%, the same call `edgebench gate` makes) is taken for
each pair. Printed:
  - identical pairs: false-fail rate (goal <= 5%) and pass rate (goal >= 70%);
  - +10%: how often passed (goal <= 10%); +25%: how often failed (goal >= 90%);
  - coverage: how often an identical run's p90 estimate falls inside the other run's reported rerun interval
    (goal 85-99%; nominal 95%);
  - the measured size of the "regressions" (median ratio of the candidates' estimates to the baselines').
docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent.engine import stats  # noqa: E402

ALLOWANCE_PCT = 5.0
WIDTHS = {"identical": 320, "plus10": 352, "plus25": 400}
BASE_WIDTH = 320


def run(model: Path, width: int, out: Path, repeats: int | None) -> dict:
    argv = [sys.executable, "-m", "edgebench.agent.cli", "bench", str(model), "--shape", f"x=1x3x48x{width}",
            "--threads", "1", "--no-sensors", "--progress", "off", "--json", str(out)]
    if repeats:
        argv += ["--repeats", str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"edgebench bench failed: {done.stderr.strip()}")
    return json.loads(out.read_text())


def p90(report: dict) -> dict:
    return report["stats"]["interval"]["p90_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10, help="pairs per scenario (default 10)")
    parser.add_argument("--repeats", type=int, help="--repeats of each run (default: edgebench's default)")
    parser.add_argument("--json", type=Path, help="write every pair's figures here")
    args = parser.parse_args()
    model = fetch_models.fetch(["ppocr_rec.onnx"])["ppocr_rec.onnx"]
    verdicts: dict[str, list[str]] = {name: [] for name in WIDTHS}
    ratios: dict[str, list[float]] = {name: [] for name in WIDTHS}
    covered, pairs_log = [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.pairs):
            for name, width in WIDTHS.items():
                order = [("base", BASE_WIDTH), ("cand", width)]
                if index % 2:
                    order.reverse()  # drift must not favour one side
                reports = {side: run(model, w, Path(tmp, f"{side}.json"), args.repeats) for side, w in order}
                base, cand = p90(reports["base"]), p90(reports["cand"])
                verdict = stats.regression_verdict(base["per_unit"], cand["per_unit"], ALLOWANCE_PCT)
                verdicts[name].append(verdict["verdict"])
                ratios[name].append(cand["estimate"] / base["estimate"])
                if name == "identical":
                    for one, other in ((base, cand), (cand, base)):
                        covered.append(one["rerun"][0] <= other["estimate"] <= one["rerun"][1])
                pairs_log.append({"scenario": name, "pair": index, "verdict": verdict, "base": base, "cand": cand})
                print(f"{name:9s} pair {index + 1:2d}: {verdict['verdict']:12s} {verdict['reason']}", flush=True)

    def rate(name: str, outcome: str) -> float:
        return verdicts[name].count(outcome) / len(verdicts[name])

    figures = {
        "identical_false_fail": rate("identical", stats.FAIL), "identical_pass": rate("identical", stats.PASS),
        "plus10_passed": rate("plus10", stats.PASS), "plus25_failed": rate("plus25", stats.FAIL),
        "plus10_detected": 1 - rate("plus10", stats.PASS), "plus25_detected": 1 - rate("plus25", stats.PASS),
        "coverage": sum(covered) / len(covered),
        "median_ratio": {name: statistics.median(values) for name, values in ratios.items()},
        "pairs": args.pairs, "minutes": round((time.monotonic() - started) / 60, 1),
    }
    print()
    print(f"identical pairs : false fails {figures['identical_false_fail']:.0%} (goal <= 5%), "
          f"passes {figures['identical_pass']:.0%} (goal >= 70%)")
    print(f"+10% (x{figures['median_ratio']['plus10']:.3f}): passed {figures['plus10_passed']:.0%} (goal <= 10%), "
          f"detected (fail or inconclusive) {figures['plus10_detected']:.0%}")
    print(f"+25% (x{figures['median_ratio']['plus25']:.3f}): failed {figures['plus25_failed']:.0%} (goal >= 90%)")
    print(f"coverage of the rerun intervals: {figures['coverage']:.0%} (goal 85-99%, nominal 95%) over "
          f"{len(covered)} identical runs; {args.pairs} pairs per scenario, {figures['minutes']} min")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "pairs": pairs_log}, indent=1))
    met = (figures["identical_false_fail"] <= 0.05 and figures["identical_pass"] >= 0.70
           and figures["plus10_passed"] <= 0.10 and figures["plus25_failed"] >= 0.90
           and 0.85 <= figures["coverage"] <= 0.99)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
