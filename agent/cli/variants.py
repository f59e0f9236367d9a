"""``edgebench variants MODEL``: float16 / int8 variants of an ONNX, TFLite or PyTorch model, benchmarked, and the one
to ship (edgebench.agent.optimize.variants)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args
from edgebench.agent.cli import report as cli_report
from edgebench.agent.cli.budgets import add_budget_options, budgets


def register(commands) -> None:
    variants = commands.add_parser("variants", help="make float16 / int8 variants of an ONNX, TFLite or PyTorch model, "
                                   "benchmark them against the float model, and say which to ship",
                                   description="Produce float16 and int8 variants (ONNX: onnxruntime.quantization; "
                                   "TFLite: ai-edge-quantizer; PyTorch: PT2E int8 lowered to ExecuTorch with "
                                   "XNNPACK), benchmark each with repeats interleaved, print size, latency and drift "
                                   "against the float model, and end with the variant to ship within the accuracy "
                                   "budgets.")
    variants.add_argument("model", help="a float32 .onnx, .tflite or torch.export .pt2 model, a GGUF language model "
                          "(its llama.cpp quantization types), or a PyTorch module as "
                          "package.module:factory (a callable returning the nn.Module; its example inputs given as "
                          "--shape NAME=DIMS, float32, or --input NAME=file.npy, NAME a positional parameter of "
                          "forward)")
    variants.add_argument("--out-dir", metavar="DIR", help="where the variants are written, and nothing else "
                          "(default: next to the model, in MODEL.variants/)")
    variants.add_argument("--only", type=cli_args.comma_list, metavar="LIST",
                          help="subset of the format's kinds: ONNX fp16,dynamic-int8,static-int8; TFLite "
                          "fp16,dynamic-int8,weight-only-int8,static-int8; PyTorch dynamic-int8,static-int8; GGUF "
                          "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K")
    variants.add_argument("--calibration", metavar="DATA.npz|DIR",
                          help="calibration inputs for static int8: an .npz (one array per input, first axis = "
                          "samples) or a folder of images for a single-image-input model (default: generated inputs)")
    variants.add_argument("--calibration-samples", type=cli_args.count_up_to(cli_args.MAX_SAMPLES), default=16,
                          help="generated calibration sets, or at most this many images of --calibration DIR "
                          "(default 16)")
    variants.add_argument("--samples", type=cli_args.count_up_to(cli_args.MAX_SAMPLES), default=16,
                          help="generated input sets for drift, without --eval (default 16)")
    cli_args.add_eval_options(variants, "drift and each variant's accuracy (top-1, top-5), the float model's too")
    variants.add_argument("--drift-data", metavar="DATA.npz|DIR",
                          help="real inputs without labels that drift is measured on, every sample of them: an .npz "
                          "(one array per input, first axis = samples) or a folder of images (default: --samples "
                          "generated sets; --eval measures it on its labelled set instead)")
    add_budget_options(variants)
    variants.add_argument("--prune", type=cli_args.number_in(0.01, 0.99, ""), metavar="F",
                          help="also make a magnitude-pruned variant: F of each conv/matmul weight tensor set to zero "
                          "(its compressed size is shown beside the others': on dense kernels that, not speed, is "
                          "what pruning buys; docs/pruning.md)")
    cli_args.add_input_options(variants)
    cli_args.add_generation_options(variants, local=False)  # a GGUF model's: one prompt length
    cli_args.add_run_options(variants, per_repeat=True)
    cli_args.add_repeat_options(variants, gap=False, interleaved=True)
    cli_args.add_isolation_options(variants)
    variants.add_argument("--threads", type=cli_args.count_up_to(cli_args.MAX_THREADS))
    variants.add_argument("--providers", type=cli_args.comma_list, default=[], metavar="CHAIN",
                          help="ONNX models: the execution providers every variant runs on")
    variants.add_argument("--delegate", dest="delegates", type=cli_args.comma_list, default=[], metavar="CHAIN",
                          help="TFLite models: the delegate chain every variant runs on (default xnnpack)")
    variants.add_argument("--json", metavar="FILE", help="write the table and every report as JSON; - for stdout")
    cli_report.add_html_option(variants)  # latency against size coloured by drift, the recommendation ringed
    variants.add_argument("--markdown", metavar="FILE",
                          help="write the table and the recommendation as Markdown, for a pull-request comment")
    cli_args.add_progress_options(variants, "while variants are made, benchmarked and compared")
    variants.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.cli.progress import ProgressLine
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.optimize import variants

    cli_args.check_outputs(args, "json", "markdown", "html")
    repeats = cli_args.repeat_count(args)
    settings = cli_args.run_settings(args, repeats)
    progress = ProgressLine(f"variants of {args.model}", mode=cli_args.progress_mode(args))
    try:
        document, table = variants.run(variants.VariantsSettings(
            model=args.model, out_dir=args.out_dir, only=args.only, calibration=args.calibration,
            calibration_samples=args.calibration_samples, samples=args.samples, eval_data=args.eval,
            drift_data=args.drift_data,
            labels=args.labels, shape=args.shape, input=args.input, image_mean=args.image_mean,
            image_std=args.image_std, seed=args.seed, threads=args.threads, providers=args.providers,
            delegates=args.delegates,
            budgets=budgets(args), prune=args.prune,
            run=settings, repeats=repeats,
            bench_limits=cli_args.child_limits(args, settings.max_duration_s + settings.warmup_duration_s),
            timeout_s=args.timeout, generation=next(iter(cli_args.generation_settings(args)), None)), progress)
    finally:
        progress.close()
    emit_json(document, args.json)
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).write_text(variants.markdown(document))
    if args.html:
        cli_report.write_outputs(document, args)
    if args.json != "-" and not args.quiet:
        print(table)
    return 0
