#!/usr/bin/env python3
"""`make demo`: benchmark the real demo models on this machine and print the comparison.

Each model goes through the same engine as `edgebench bench` (child process, same statistics); then
`edgebench variants` shows the float32 / float16 / int8 trade-off on a real ONNX classifier.
Reports are written to out/demo/ (one JSON per model).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402

from edgebench.agent import bench, cli  # noqa: E402
from edgebench.agent.progress import ProgressLine  # noqa: E402
from edgebench.agent.report import fmt_latency, human_bytes, table, write_json  # noqa: E402

DEMO = [  # model, --shape, --input, what it is
    ("efficientnet_lite0_int8.tflite", [], [], "image classifier, int8, LiteRT"),
    ("deeplabv3.tflite", [], [], "segmentation, float32, LiteRT"),
    ("ppocr_det.onnx", ["x=1x3x320x320"], [], "text detection, float32, ONNX Runtime"),
    ("ppocr_rec.onnx", ["x=1x3x48x320"], [], "text recognition, float32, ONNX Runtime"),
    ("silero_vad.onnx", ["input=1x512", "state=2x1x128"], ["sr=16000"], "voice activity, stateful, ONNX Runtime"),
]


def main() -> int:
    out = ROOT / "out" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    paths = fetch_models.fetch([name for name, *_ in DEMO] + ["ppocr_cls.onnx"])
    rows = []
    for name, shapes, inputs, what in DEMO:
        request = bench.BenchRequest(str(paths[name]), shape_args=shapes, input_args=inputs)
        progress = ProgressLine(name, request.settings.min_duration_s)
        try:
            report = bench.run(request, progress)
        finally:
            progress.close()
        write_json(report, str(out / f"{Path(name).stem}.json"))
        stats, runtime = report["stats"], report["runtime"]
        rows.append([name, what, f"{runtime['runtime']}/{','.join(runtime['used'])}",
                     fmt_latency(stats["p50_ms"], 1), fmt_latency(stats["p90_ms"], 1), fmt_latency(stats["p99_ms"], 1),
                     f"{stats['throughput_ips']:.0f}", human_bytes(report["memory"]["peak_steady_bytes"]),
                     "yes" if report["validity"]["valid"] else "no"])
    device = report["device"]
    print(f"edgebench demo on {device['cpu']} ({device['cores']} cores, {device['os']}); reports in {out}")
    headers = ["model", "what", "runtime/ran on", "p50 ms", "p90 ms", "p99 ms", "inf/s", "peak RSS", "valid"]
    print("\n".join(table(headers, rows, align_left=3)))
    print()
    return cli.main(["variants", str(paths["ppocr_cls.onnx"]), "--shape", "x=1x3x48x192",
                     "--out-dir", str(out / "ppocr_cls.variants"), "--json", str(out / "ppocr_cls.variants.json")])


if __name__ == "__main__":
    sys.exit(main())
