"""``edgebench variants MODEL.onnx``: float16 / int8 variants, benchmarked (edgebench.agent.optimize.variants)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args


def register(commands) -> None:
    variants = commands.add_parser("variants", help="make float16 / int8 variants of an ONNX model and "
                                   "benchmark them against the float model",
                                   description="Produce float16, dynamic int8 and static int8 (QDQ) variants "
                                   "with onnxruntime.quantization, benchmark each, and print size, latency "
                                   "and drift against the float model.")
    variants.add_argument("model", help="a float32 .onnx model")
    variants.add_argument("--out-dir", metavar="DIR", help="where the variants are written, and nothing else "
                          "(default: next to the model, in MODEL.variants/)")
    variants.add_argument("--only", type=cli_args.comma_list, metavar="LIST",
                          help="subset of: fp16,dynamic-int8,static-int8")
    variants.add_argument("--calibration", metavar="DATA.npz",
                          help="calibration inputs for static int8 (default: generated inputs)")
    variants.add_argument("--calibration-samples", type=cli_args.count_up_to(cli_args.MAX_SAMPLES), default=16)
    variants.add_argument("--samples", type=cli_args.count_up_to(cli_args.MAX_SAMPLES), default=16,
                          help="input sets for drift (default 16)")
    cli_args.add_input_options(variants)
    cli_args.add_run_options(variants, per_repeat=True)
    cli_args.add_repeat_options(variants, gap=False, interleaved=True)
    cli_args.add_isolation_options(variants)
    variants.add_argument("--threads", type=cli_args.count_up_to(cli_args.MAX_THREADS))
    variants.add_argument("--providers", type=cli_args.comma_list, default=[], metavar="CHAIN")
    variants.add_argument("--json", metavar="FILE", help="write the table and every report as JSON; - for stdout")
    variants.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.optimize import variants

    cli_args.check_outputs(args, "json")
    repeats = cli_args.repeat_count(args)
    settings = cli_args.run_settings(args, repeats)
    document, table = variants.run(variants.VariantsSettings(
        model=args.model, out_dir=args.out_dir, only=args.only, calibration=args.calibration,
        calibration_samples=args.calibration_samples, samples=args.samples, shape=args.shape, input=args.input,
        seed=args.seed, threads=args.threads, providers=args.providers, run=settings, repeats=repeats,
        bench_limits=cli_args.child_limits(args, settings.max_duration_s + settings.warmup_duration_s),
        timeout_s=args.timeout))
    emit_json(document, args.json)
    if args.json != "-":
        print(table)
    return 0
