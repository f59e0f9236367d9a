"""``edgebench compare REFERENCE CANDIDATE``: output drift between two models (edgebench.agent.optimize.compare)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args
from edgebench.agent.cli import report as cli_report


def register(commands) -> None:
    compare = commands.add_parser("compare", help="output drift between two models on the same inputs",
                                  description="Run a reference and a candidate model (e.g. float32 vs int8) "
                                  "on the same inputs and report drift; with --eval, accuracy of both.")
    compare.add_argument("reference")
    compare.add_argument("candidate")
    compare.add_argument("--samples", type=cli_args.count_up_to(cli_args.MAX_SAMPLES), default=16,
                         help="generated input sets (default 16)")
    cli_args.add_eval_options(compare, "the accuracy (top-1, top-5) of both models")
    compare.add_argument("--output", metavar="NAME", help="the output to compare (default: the first)")
    compare.add_argument("--reference-runtime", help="runtime for the reference (default: from the file)")
    compare.add_argument("--candidate-runtime", help="runtime for the candidate (default: from the file)")
    cli_args.add_input_options(compare)
    compare.add_argument("--threads", type=cli_args.count_up_to(cli_args.MAX_THREADS))
    compare.add_argument("--timeout", type=cli_args.positive_duration, metavar="SECONDS",
                         help="kill a model's process after this long (default 600s)")
    cli_args.add_run_options(compare, per_repeat=True)
    compare.add_argument("--repeats", type=cli_args.count_up_to(cli_args.MAX_REPEATS), default=0, metavar="N",
                         help="also benchmark both models, N repeats each interleaved (A B A B ...), and print the "
                         "candidate's speed-up with its interval (default 0: drift only)")
    compare.add_argument("--json", metavar="FILE", help="write the drift report as JSON; - for stdout")
    cli_report.add_html_option(compare)  # the drift table, and with --repeats each side's latency and the speed-up
    compare.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.engine.report import emit_json
    from edgebench.agent.optimize import compare

    cli_args.check_outputs(args, "json", "html")
    document = compare.run(compare.CompareSettings(
        reference=args.reference, candidate=args.candidate, reference_runtime=args.reference_runtime,
        candidate_runtime=args.candidate_runtime, samples=args.samples, eval_data=args.eval, labels=args.labels,
        output=args.output, shape=args.shape, input=args.input, image_mean=args.image_mean, image_std=args.image_std,
        seed=args.seed, threads=args.threads, timeout_s=args.timeout,
        repeats=args.repeats, run=cli_args.run_settings(args, max(args.repeats, 1)) if args.repeats else None))
    emit_json(document, args.json)
    if args.html:
        cli_report.write_outputs(document, args)
    if args.json != "-":
        print(compare.render(document))
    return 0
