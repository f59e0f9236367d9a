#!/usr/bin/env python3
"""What do float16 and int8 buy on this machine? Every variant the quantizers make, benchmarked against its float
model in one run (`edgebench variants`: repeats interleaved, paired intervals), for real ONNX and TFLite models.

Printed per model and variant: size against float, p90 speed-up against float with its 95% interval, drift, and the
recommendation line. The figures go to docs/performance.md ("What int8 and fp16 buy here").

Usage: python bench/variants_payoff.py [--repeats 7] [--runs 200] [--json out.json]
Needs `pip install 'edgebench[variants,variants-tflite]'` (the dev install has both).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent.engine.measure import RunSettings  # noqa: E402
from edgebench.agent.optimize import variants  # noqa: E402

CASES = [  # (model, shape args)
    ("ppocr_cls.onnx", ["x=1x3x48x192"]),
    ("ppocr_rec.onnx", ["x=1x3x48x320"]),
    ("star_trek_keywords_f32.tflite", []),
    ("face_landmark_f32.tflite", []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    models = fetch_models.fetch([name for name, _ in CASES])
    summary = []
    for name, shapes in CASES:
        with tempfile.TemporaryDirectory() as out:
            settings = variants.VariantsSettings(
                model=str(models[name]), out_dir=out, shape=shapes, samples=16, calibration_samples=16,
                run=RunSettings(min_runs=args.runs, min_duration_s=0.5), repeats=args.repeats)
            document, table = variants.run(settings)
        print(table, end="\n\n")
        base = document["variants"][0]
        for row in document["variants"][1:]:
            ratio = row.get("speedup_p90") or {}
            summary.append({"model": name, "variant": row["name"], "error": row["error"],
                            "size_ratio": row["size_bytes"] / base["size_bytes"] if row["size_bytes"] else None,
                            "p90_speedup": ratio.get("estimate"), "p90_speedup_ci": ratio.get("ci"),
                            "cosine": (row["drift"] or {}).get("cosine_mean"),
                            "top1_agreement": (row["drift"] or {}).get("top1_agreement")})
        summary.append({"model": name, "recommendation": document["recommendation"]["line"]})
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
