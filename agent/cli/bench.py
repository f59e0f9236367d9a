"""``edgebench bench MODEL``: one model on this machine, through the engine (edgebench.agent.engine.bench)."""

from __future__ import annotations

import argparse

from edgebench.agent.cli import args as cli_args


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmark one model on this machine",
                                description="Benchmark one model: load time, first inference, latency "
                                "percentiles with a confidence interval, memory; repeated in fresh processes "
                                "(--repeats), so the spread between repeats says how far the numbers hold up.")
    bench.add_argument("model", help="a .tflite or .onnx model file")
    cli_args.add_runtime_options(bench)
    cli_args.add_input_options(bench)
    cli_args.add_run_options(bench, per_repeat=True)
    cli_args.add_repeat_options(bench)
    cli_args.add_isolation_options(bench)
    cli_args.add_cpus_option(bench, "the report records the cores it ran on (noise)")
    cli_args.add_physics_options(bench)
    bench.add_argument("--json", metavar="FILE", help="write the full report (every sample) as JSON; - for stdout")
    bench.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                       help="tag the report, e.g. release=v1.4.0 or class=rpi5 (release gates select on labels)")
    bench.add_argument("-q", "--quiet", action="store_true", help="no table, no progress line")
    bench.add_argument("--progress", choices=("auto", "line", "json", "off"),
                       help="progress on stderr: auto (a line on a terminal; default, off with -q), line, json "
                       "(one JSON object per update, for programs) or off")
    bench.set_defaults(handler=run)


def request(args: argparse.Namespace):
    """The engine's BenchRequest for these arguments."""
    from edgebench.agent.engine import bench
    from edgebench.agent.engine.physics import sustained_plan

    physics = cli_args.physics_settings(args)
    plan = sustained_plan(args.sustained, args.window, sensors=physics is not None)
    repeats = cli_args.repeat_count(args, sustained=plan.window_s is not None)
    settings = cli_args.run_settings(args, repeats)
    for key, value in plan.settings.items():  # a sustained run: one measured phase of exactly its duration
        setattr(settings, key, value)
    window = plan.window_s
    return bench.BenchRequest(
        model=args.model, runtime=args.runtime, options=cli_args.runtime_options(args), settings=settings,
        shape_args=args.shape, input_args=args.input, seed=args.seed,
        limits=cli_args.child_limits(args, settings.max_duration_s + settings.warmup_duration_s),
        physics=physics, sustained_window_s=window, repeats=repeats, repeat_gap_s=args.repeat_gap, cpus=args.cpus,
    )


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.cli.progress import ProgressLine
    from edgebench.agent.engine import bench
    from edgebench.agent.engine.report import emit_json, render

    cli_args.check_outputs(args, "json")
    bench_request = request(args)
    labels = cli_args.key_values(args.label, "--label")
    mode = args.progress or ("off" if args.quiet else "auto")
    progress = ProgressLine(args.model, bench_request.settings.min_duration_s, mode=mode)
    try:
        report = bench.run(bench_request, progress)
    finally:
        progress.close()
    report["labels"] = labels
    emit_json(report, args.json)
    if args.json != "-" and not args.quiet:
        print(render(report))
    return 0
