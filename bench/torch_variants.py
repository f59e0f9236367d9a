#!/usr/bin/env python3
"""What do PT2E int8 variants buy a PyTorch transformer on this machine? MiniLM-L6 (torch.export, .pt2) made into
ExecuTorch programs by `edgebench variants` (float32 lowered to XNNPACK, dynamic int8, static int8 calibrated on real
sentences), benchmarked with repeats interleaved, and compared with the float32 program on the same real sentences.

Printed per variant: size against float32, p50 and p90 speed-ups with their 95% intervals, cosine similarity of the
sentence embeddings against float32 (mean and worst sentence), and the recommendation line. The figures go to
docs/variants.md ("PyTorch models").

Usage: python bench/torch_variants.py [--repeats 5] [--runs 100] [--only dynamic-int8,static-int8] [--json out.json]
Needs `pip install 'edgebench[torch-export]'` (torch, executorch, torchao).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent.engine.measure import RunSettings  # noqa: E402
from edgebench.agent.optimize import variants  # noqa: E402

MODEL, SENTENCES = "minilm_l6.pt2", "minilm_l6_sentences.npz"


def interval(ratio: dict | None) -> str:
    if not ratio:
        return "-"
    ci = ratio.get("ci") or [float("nan")] * 2
    return f"{ratio['estimate']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--only", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    models = fetch_models.fetch([MODEL, SENTENCES])
    with tempfile.TemporaryDirectory() as out:
        settings = variants.VariantsSettings(
            model=str(models[MODEL]), out_dir=out, only=args.only.split(",") if args.only else None,
            calibration=str(models[SENTENCES]), drift_data=str(models[SENTENCES]),
            run=RunSettings(min_runs=args.runs, min_duration_s=0.5), repeats=args.repeats)
        started = time.monotonic()
        document, table = variants.run(settings)
        elapsed = time.monotonic() - started
    print(table, end="\n\n")
    rows = document["variants"]
    base = rows[0]
    summary = []
    print(f"{'variant':14} {'size':>10} {'of fp32':>8} {'p50 ms':>8} {'p50 speed-up [95%]':>22} "
          f"{'p90 speed-up [95%]':>22} {'cosine mean':>12} {'cosine min':>11}")
    for row in rows:
        stats = (row.get("report") or {}).get("stats") or {}
        drift = row.get("drift") or {}
        share = row["size_bytes"] / base["size_bytes"] if row["size_bytes"] else None
        print(f"{row['name']:14} {row['size_bytes'] or 0:>10} {share or 0:>8.0%} {stats.get('p50_ms', 0):>8.2f} "
              f"{interval(row.get('speedup')) if row is not base else '1.00x':>22} "
              f"{interval(row.get('speedup_p90')) if row is not base else '1.00x':>22} "
              f"{drift.get('cosine_mean', 1.0 if row is base else float('nan')):>12.5f} "
              f"{drift.get('cosine_min', 1.0 if row is base else float('nan')):>11.5f}"
              + (f"  {row['error']}" if row["error"] else ""))
        summary.append({"variant": row["name"], "error": row["error"], "size_bytes": row["size_bytes"],
                        "size_ratio": share, "p50_ms": stats.get("p50_ms"), "p90_ms": stats.get("p90_ms"),
                        "p50_speedup": row.get("speedup"), "p90_speedup": row.get("speedup_p90"),
                        "cosine_mean": drift.get("cosine_mean"), "cosine_min": drift.get("cosine_min")})
    print(f"\n{document['recommendation']['line']}\n(whole run {elapsed:.0f} s: lowering, quantizing, benchmarking, "
          "drift)")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": MODEL, "variants": summary, "elapsed_s": elapsed,
                                               "recommendation": document["recommendation"]["line"]}, indent=1)
                                   + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
