"""``edgebench bench MODEL``: one model on this machine, through the engine (edgebench.agent.engine.bench)."""

from __future__ import annotations

import argparse
from typing import Optional

from edgebench.agent.cli import args as cli_args
from edgebench.agent.cli import report as cli_report
from edgebench.agent.errors import UsageError


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmark one model on this machine",
                                description="Benchmark one model: load time, first inference, latency "
                                "percentiles with a confidence interval, memory; repeated in fresh processes "
                                "(--repeats), so the spread between repeats says how far the numbers hold up.")
    bench.add_argument("model", help="a model file: .tflite, .onnx, .pte, TorchScript, or a GGUF language model")
    cli_args.add_runtime_options(bench, thread_sweep=True)
    cli_args.add_input_options(bench)
    cli_args.add_generation_options(bench)
    cli_args.add_run_options(bench, per_repeat=True)
    cli_args.add_repeat_options(bench)
    cli_args.add_placement_options(bench)
    cli_args.add_isolation_options(bench)
    cli_args.add_cpus_option(bench, "the report records the cores it ran on (noise)")
    cli_args.add_physics_options(bench)
    bench.add_argument("--json", metavar="FILE", help="write the full report (every sample) as JSON; - for stdout")
    cli_report.add_html_option(bench)
    bench.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                       help="tag the report, e.g. release=v1.4.0 or class=rpi5 (release gates select on labels)")
    bench.add_argument("--history", metavar="DIR|off",
                       help="this machine's history of each configuration's last runs, which widens the rerun "
                       "interval by how much runs differ beyond their repeats (default: "
                       "~/.cache/edgebench/history; off: none)")
    bench.add_argument("--baseline-model", metavar="MODEL",
                       help="also benchmark this model (the baseline release's build of it), its repeats "
                       "interleaved with MODEL's (A B A B ...): drift hits both alike, and the release gate pairs "
                       "them (docs/gates.md); the table adds the ratio to it")
    bench.add_argument("--baseline-label", action="append", default=[], metavar="KEY=VALUE",
                       help="tag the baseline's report, e.g. release=v1.4.0 (with --baseline-model)")
    bench.add_argument("--baseline-json", metavar="FILE",
                       help="write the baseline's full report as JSON (with --baseline-model); - for stdout")
    cli_args.add_progress_options(bench, "while the model is measured")
    bench.set_defaults(handler=run)


def thread_counts(args: argparse.Namespace) -> list[Optional[int]]:
    """--threads: its one count or a sweep's several (args.threads_or_sweep), [None] for the runtime's default."""
    return args.threads if isinstance(args.threads, list) else [args.threads]


def request(args: argparse.Namespace):
    """The engine's BenchRequest for these arguments (with the first of --threads; ``requests`` makes the others)."""
    from edgebench.agent.engine import bench, history
    from edgebench.agent.engine.physics import sustained_plan

    physics = cli_args.physics_settings(args)
    plan = sustained_plan(args.sustained, args.window, sensors=physics is not None)
    repeats = cli_args.repeat_count(args, sustained=plan.window_s is not None)
    settings = cli_args.run_settings(args, repeats)
    for key, value in plan.settings.items():  # a sustained run: one measured phase of exactly its duration
        setattr(settings, key, value)
    window = plan.window_s
    return bench.BenchRequest(
        model=args.model, runtime=args.runtime, options=cli_args.runtime_options(args, thread_counts(args)[0]),
        settings=settings,
        shape_args=args.shape, input_args=args.input, image_mean=args.image_mean, image_std=args.image_std,
        seed=args.seed, limits=cli_args.child_limits(args, settings.max_duration_s * (2 if settings.profile_runs else 1)
                                     + settings.warmup_duration_s),
        physics=physics, sustained_window_s=window, repeats=repeats, repeat_gap_s=args.repeat_gap, cpus=args.cpus,
        history_dir=args.history or str(history.default_directory()),
    )


def requests(args: argparse.Namespace) -> list:
    """The run's BenchRequests: one, or one per (thread count, prompt length) of a language model's sweep
    (--threads A,B and --prompt-tokens C,D: their product, thread counts outermost, the rows' order)."""
    from dataclasses import replace

    base = request(args)
    lengths = cli_args.generation_settings(args) or [None]
    return [replace(base, options=replace(base.options, threads=threads), generation=settings)
            for threads in thread_counts(args) for settings in lengths]


def run(args: argparse.Namespace) -> int:
    from edgebench.agent.cli.progress import ProgressLine
    from edgebench.agent.engine.report import emit_json, render

    cli_args.check_outputs(args, "json", "baseline_json", "ops_csv", "html")
    coverage = cli_args.required_coverage(args)
    if args.ops_csv and not args.profile_ops:
        raise UsageError("--ops-csv needs --profile-ops")
    baseline_only = [flag for flag in ("baseline_label", "baseline_json") if getattr(args, flag)]
    if baseline_only and not args.baseline_model:
        raise UsageError(f"--{baseline_only[0].replace('_', '-')} needs --baseline-model")
    if args.json == "-" and args.baseline_json == "-":
        raise UsageError("--json - and --baseline-json - cannot both write to stdout")
    bench_requests = requests(args)
    if len(bench_requests) > 1:
        return run_sweep(args, bench_requests)
    bench_request = bench_requests[0]
    labels = cli_args.key_values(args.label, "--label")
    baseline_labels = cli_args.key_values(args.baseline_label, "--baseline-label")  # refused before any work
    mode = cli_args.progress_mode(args)
    progress = ProgressLine(args.model, bench_request.settings.min_duration_s, mode=mode)
    try:
        if args.baseline_model:
            baseline, report = _interleaved_with_baseline(args, bench_request, progress)
        else:
            from edgebench.agent.engine import bench

            baseline, report = None, bench.run(bench_request, progress)
    finally:
        progress.close()
    report["labels"] = labels
    emit_json(report, args.json)
    if args.html:
        cli_report.write_outputs(report, args)
    if args.ops_csv and (report.get("ops") or {}).get("nodes") is not None:
        from edgebench.agent.engine.ops import write_csv

        write_csv(report["ops"], args.ops_csv)
    if baseline:
        baseline["labels"] = baseline_labels
        emit_json(baseline, args.baseline_json)
    if "-" not in (args.json, args.baseline_json) and not args.quiet:
        print(render(report))
        if baseline:
            print(against_baseline(baseline, report, args.baseline_model))
    if coverage is not None:
        check_coverage(report, coverage)
    return 0


def check_sweep(args: argparse.Namespace, sweep: list) -> None:
    """Refuse, before any work, what a sweep cannot be: a single configuration's flags, and thread counts for a
    model that is not a language model (its rows would be another table: bench one --threads at a time)."""
    from edgebench.agent.engine import bench

    for flag in ("baseline_model", "sustained", "profile_ops", "html"):
        if getattr(args, flag, None):
            raise UsageError(f"--{flag.replace('_', '-')} is not for a sweep (several --prompt-tokens or --threads): "
                             "give one of each")
    if len(thread_counts(args)) > 1 and not bench.is_language_model(sweep[0]):
        raise UsageError(f"--threads {','.join(map(str, args.threads))}: a sweep of thread counts is for language "
                         "models (GGUF); give this model one --threads N per run")


def run_sweep(args: argparse.Namespace, sweep: list) -> int:
    """A language model at several prompt lengths and thread counts: their repeats interleaved
    (bench.run_interleaved: drift hits every row alike), one table; --json writes ``{"schema": SWEEP_SCHEMA,
    "reports": [...]}``, each report's ``runtime.threads`` and ``generation.prompt_tokens`` naming its row."""
    from edgebench.agent.cli.progress import ProgressLine
    from edgebench.agent.engine import bench
    from edgebench.agent.engine.report import SWEEP_SCHEMA, emit_json, sweep_table

    check_sweep(args, sweep)
    labels = cli_args.key_values(args.label, "--label")
    progress = ProgressLine(args.model, 0.0, mode=cli_args.progress_mode(args))
    try:
        runs = bench.run_interleaved(sweep, progress, seed=args.seed)
    finally:
        progress.close()
    for run in runs:
        if run.error is not None:
            raise run.error
    reports = [run.report for run in runs]
    for report in reports:
        report["labels"] = labels
    emit_json({"schema": SWEEP_SCHEMA, "reports": reports}, args.json)
    if args.json != "-" and not args.quiet:
        print(sweep_table(reports))
    return 0


def check_coverage(report: dict, required: float) -> None:
    """--require-delegate: raise PlacementError unless the chain's first choice took ``required`` of the nodes."""
    from edgebench.agent.engine.report import placement_line
    from edgebench.agent.errors import PlacementError

    placement = report.get("placement")
    if not placement or placement["coverage"] is None:
        raise PlacementError(f"--require-delegate: {report['runtime']['runtime']} cannot say where the model's nodes "
                             "ran, so the requirement cannot be checked")
    if placement["coverage"] < required:
        raise PlacementError(f"--require-delegate: {placement['first_choice']} took {placement['coverage']:.1%} of "
                             f"the nodes, {required:.1%} required ({placement_line(placement)})")


def _interleaved_with_baseline(args: argparse.Namespace, candidate, progress) -> tuple[dict, dict]:
    """The baseline and the candidate, repeats interleaved (bench.run_interleaved): (baseline report, candidate
    report). Either one failing fails the command: a comparison with one side is no comparison."""
    from dataclasses import replace

    from edgebench.agent.engine import bench

    runs = bench.run_interleaved([replace(candidate, model=args.baseline_model), candidate], progress,
                                 seed=args.seed)
    for run in runs:
        if run.error is not None:
            raise run.error
    return runs[0].report, runs[1].report


def against_baseline(baseline: dict, report: dict, baseline_model: str) -> str:
    """One line: the candidate's p90 against the baseline's, paired by repeat (they ran interleaved)."""
    from edgebench.agent.engine import stats

    base, cand = baseline["stats"]["interval"]["p90_ms"], report["stats"]["interval"]["p90_ms"]
    ratio = stats.ratio_interval(base["per_unit"], cand["per_unit"], paired=True)
    if ratio is None:
        return f"p90 vs {baseline_model}: {cand['estimate'] / base['estimate']:.3f}x (too few repeats for an interval)"
    low, high = ratio["ci"]
    return (f"p90 vs {baseline_model}: {ratio['ratio']:.3f}x [{low:.3f}, {high:.3f}] "
            f"({ratio['n_baseline']} repeats each, interleaved, paired)")
